-- Monthly churn per acquisition channel x region, every month from the first month with a
-- completed order through the month of as_of. Definitions: docs/metrics/customer_churn.md.
--   churn event: a completed order day not followed by another completed order within
--     churn_days days; dated order day + churn_days; counted only when on or before as_of.
--   customers_at_start(M): latest completed order strictly before the 1st of M is at most
--     churn_days days before the 1st of M.
--   churned_customers(M): distinct customers with a churn event dated in M.
--   new_customers(M): distinct customers whose first completed order is in M.
-- Days are day numbers (days since 1970-01-01) and months are month numbers
-- (year * 12 + month - 1), so every window is integer arithmetic.
WITH params AS (
  -- $as_of: the run's as-of day, a DATE the engine binds (`latest` is resolved before the job).
  SELECT CAST($as_of AS DATE) AS as_of_date
),
bounds AS (
  SELECT as_of_date,
         CAST($churn_days AS BIGINT)   AS churn_days,
         CAST(extract(epoch FROM CAST(as_of_date AS TIMESTAMP)) / 86400 AS BIGINT) AS as_of_day,
         CAST(date_part('year', as_of_date) AS BIGINT) * 12
           + CAST(date_part('month', as_of_date) AS BIGINT) - 1                   AS as_of_month
  FROM params
),
-- One row per customer and day with a completed order on or before as_of (several orders on
-- one day are one purchase day), with the customer's segment. The as-of cut is a constant
-- predicate on the bound parameter: no join, so the large side is scanned once. The other as-of cuts are applied after
-- aggregating, where they are cheap. A join hashes its first table: the customers (5.4M rows at 10M
-- orders), not the purchase days (10M), which DataFusion cannot size (5.6 s to 5.2 s).
order_day AS MATERIALIZED (
  SELECT d.customer_id,
         c.acquisition_channel,
         c.region,
         CAST(extract(epoch FROM CAST(d.order_date AS TIMESTAMP)) / 86400 AS BIGINT) AS day_num,
         CAST(date_part('year', d.order_date) AS BIGINT) * 12
           + CAST(date_part('month', d.order_date) AS BIGINT) - 1                   AS month_num
  FROM customers c
  RIGHT JOIN (
    SELECT customer_id, order_date
    FROM order_experience
    WHERE status = 'completed'
      AND order_date <= CAST($as_of AS DATE)
    GROUP BY customer_id, order_date
  ) d ON c.customer_id = d.customer_id
),
-- Each purchase day with the customer's next purchase day.
spell AS MATERIALIZED (
  SELECT customer_id,
         acquisition_channel,
         region,
         day_num,
         month_num,
         lead(day_num) OVER (PARTITION BY customer_id ORDER BY day_num) AS next_day_num
  FROM order_day
),
-- Churn events: day_num + churn_days is the churn day. One customer's events are more than
-- churn_days apart, so at most one falls in a month: counting events per day and summing per
-- month counts distinct customers. Events after as_of are dropped after aggregating.
churn_by_day AS (
  SELECT day_num + CAST($churn_days AS BIGINT) AS churn_day,
         acquisition_channel,
         region,
         count(*) AS n
  FROM spell
  WHERE next_day_num IS NULL OR next_day_num - day_num > CAST($churn_days AS BIGINT)
  GROUP BY 1, 2, 3
),
churned_agg AS (
  SELECT CAST(date_part('year', CAST(CAST(d.churn_day AS INT) AS DATE)) AS BIGINT) * 12
           + CAST(date_part('month', CAST(CAST(d.churn_day AS INT) AS DATE)) AS BIGINT) - 1 AS month_num,
         d.acquisition_channel,
         d.region,
         sum(d.n) AS n
  FROM bounds b
  CROSS JOIN churn_by_day d
  WHERE d.churn_day <= b.as_of_day
  GROUP BY 1, 2, 3
),
-- A purchase day L with next purchase day N puts its customer "at start" of every month whose
-- 1st day d0 has L < d0 <= min(N, L + churn_days): L is then the latest purchase before d0 and
-- at most churn_days before it. Those months are month(L) + 1 .. month(min(N, L + churn_days)).
-- The ranges of one customer's purchase days never overlap, so rows per month are distinct
-- customers; months after the month of as_of are dropped after aggregating.
coverage_months AS (
  SELECT customer_id,
         acquisition_channel,
         region,
         month_num + 1 AS first_month,
         CAST(date_part('year', end_date) AS BIGINT) * 12
           + CAST(date_part('month', end_date) AS BIGINT) - 1 AS last_month
  FROM (
    SELECT *,
           CAST(CAST(least(coalesce(next_day_num, day_num + CAST($churn_days AS BIGINT)),
                           day_num + CAST($churn_days AS BIGINT)) AS INT) AS DATE) AS end_date
    FROM spell
  ) s
),
at_start AS (
  SELECT acquisition_channel,
         region,
         unnest(generate_series(first_month, last_month)) AS month_num
  FROM coverage_months
  WHERE first_month <= last_month
),
at_start_agg AS (
  SELECT a.month_num, a.acquisition_channel, a.region, count(*) AS n
  FROM at_start a
  GROUP BY 1, 2, 3
),
-- A customer's first purchase month.
new_agg AS (
  SELECT month_num, acquisition_channel, region, count(*) AS n
  FROM (
    SELECT customer_id, acquisition_channel, region, min(month_num) AS month_num
    FROM order_day
    GROUP BY 1, 2, 3
  ) first_purchase
  GROUP BY 1, 2, 3
),
-- Every month from the first month with a completed order through the month of as_of, for
-- every (channel, region) that has a buyer.
month_spine AS (
  SELECT unnest(generate_series(m.first_month, b.as_of_month)) AS month_num
  FROM (SELECT min(month_num) AS first_month FROM order_day) m
  CROSS JOIN bounds b
  WHERE m.first_month IS NOT NULL
),
segment AS (
  SELECT DISTINCT acquisition_channel, region FROM order_day
),
counted AS (
  SELECT g.month_num,
         g.acquisition_channel,
         g.region,
         coalesce(a.n, 0) AS customers_at_start,
         coalesce(h.n, 0) AS churned_customers,
         coalesce(n.n, 0) AS new_customers
  FROM (SELECT m.month_num, s.acquisition_channel, s.region
        FROM month_spine m CROSS JOIN segment s) g
  LEFT JOIN at_start_agg a ON a.month_num = g.month_num
        AND (a.acquisition_channel IS NOT DISTINCT FROM g.acquisition_channel)
        AND (a.region IS NOT DISTINCT FROM g.region)
  LEFT JOIN churned_agg h ON h.month_num = g.month_num
        AND (h.acquisition_channel IS NOT DISTINCT FROM g.acquisition_channel)
        AND (h.region IS NOT DISTINCT FROM g.region)
  LEFT JOIN new_agg n ON n.month_num = g.month_num
        AND (n.acquisition_channel IS NOT DISTINCT FROM g.acquisition_channel)
        AND (n.region IS NOT DISTINCT FROM g.region)
)
SELECT
  to_char(make_date(CAST(c.month_num / 12 AS INT), CAST(c.month_num % 12 + 1 AS INT), 1), '%Y-%m')
                                       AS month,
  c.acquisition_channel,
  c.region,
  c.customers_at_start,
  c.churned_customers,
  round(CAST(c.churned_customers AS DOUBLE) / NULLIF(c.customers_at_start, 0), 4) AS churn_rate,
  c.new_customers,
  b.churn_days,
  b.as_of_date
FROM bounds b
CROSS JOIN counted c
