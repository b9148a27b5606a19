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
  -- 'latest' -> the latest order day in the data (any order status). Written as an aggregate
  -- over order_experience rather than CASE ... ELSE CAST($as_of AS DATE) (the constant folder
  -- casts 'latest' to a date and fails) or a scalar subquery (its plan root reports no row
  -- count, so the run ledger would record rows_written = 0).
  SELECT coalesce(CAST(CASE WHEN $as_of = 'latest' THEN NULL ELSE $as_of END AS DATE),
                  max(order_date))     AS as_of_date,
         CAST($churn_days AS BIGINT)   AS churn_days
  FROM order_experience
),
bounds AS (
  SELECT as_of_date,
         churn_days,
         CAST(extract(epoch FROM CAST(as_of_date AS TIMESTAMP)) / 86400 AS BIGINT) AS as_of_day,
         CAST(date_part('year', as_of_date) AS BIGINT) * 12
           + CAST(date_part('month', as_of_date) AS BIGINT) - 1                   AS as_of_month
  FROM params
),
-- One row per customer and day with a completed order on or before as_of (several orders on
-- one day are one purchase day), with the customer's segment.
order_day AS (
  SELECT d.customer_id,
         c.acquisition_channel,
         c.region,
         CAST(extract(epoch FROM CAST(d.order_date AS TIMESTAMP)) / 86400 AS BIGINT) AS day_num,
         CAST(date_part('year', d.order_date) AS BIGINT) * 12
           + CAST(date_part('month', d.order_date) AS BIGINT) - 1                   AS month_num
  FROM (
    SELECT oe.customer_id, oe.order_date
    FROM bounds b
    CROSS JOIN order_experience oe
    WHERE oe.status = 'completed'
      AND oe.order_date <= b.as_of_date
    GROUP BY oe.customer_id, oe.order_date
  ) d
  LEFT JOIN customers c ON c.customer_id = d.customer_id
),
-- Each purchase day with the customer's previous and next purchase day.
spell AS (
  SELECT customer_id,
         acquisition_channel,
         region,
         day_num,
         month_num,
         lag(day_num)  OVER (PARTITION BY customer_id ORDER BY day_num) AS prev_day_num,
         lead(day_num) OVER (PARTITION BY customer_id ORDER BY day_num) AS next_day_num
  FROM order_day
),
-- Churn events observed by as_of: day_num + churn_days is the churn day.
churn_event AS (
  SELECT s.customer_id,
         s.acquisition_channel,
         s.region,
         CAST(CAST(s.day_num + b.churn_days AS INT) AS DATE) AS churn_date
  FROM bounds b
  CROSS JOIN spell s
  WHERE (s.next_day_num IS NULL OR s.next_day_num - s.day_num > b.churn_days)
    AND s.day_num + b.churn_days <= b.as_of_day
),
churned_agg AS (
  SELECT CAST(date_part('year', churn_date) AS BIGINT) * 12
           + CAST(date_part('month', churn_date) AS BIGINT) - 1 AS month_num,
         acquisition_channel,
         region,
         count(DISTINCT customer_id) AS n
  FROM churn_event
  GROUP BY 1, 2, 3
),
-- A purchase day L with next purchase day N puts its customer "at start" of every month whose
-- 1st day d0 has L < d0 <= min(N, L + churn_days): L is then the latest purchase before d0 and
-- at most churn_days before it. Those months are month(L) + 1 .. month(min(N, L + churn_days)),
-- capped at the month of as_of. The ranges of one customer's purchase days never overlap.
coverage AS (
  SELECT s.customer_id,
         s.acquisition_channel,
         s.region,
         s.month_num + 1 AS first_month,
         CAST(CAST(least(coalesce(s.next_day_num, s.day_num + b.churn_days),
                         s.day_num + b.churn_days) AS INT) AS DATE) AS end_date,
         b.as_of_month
  FROM bounds b
  CROSS JOIN spell s
),
coverage_months AS (
  SELECT customer_id,
         acquisition_channel,
         region,
         first_month,
         least(CAST(date_part('year', end_date) AS BIGINT) * 12
                 + CAST(date_part('month', end_date) AS BIGINT) - 1,
               as_of_month) AS last_month
  FROM coverage
),
at_start AS (
  SELECT customer_id,
         acquisition_channel,
         region,
         unnest(generate_series(first_month, last_month)) AS month_num
  FROM coverage_months
  WHERE first_month <= last_month
),
at_start_agg AS (
  SELECT month_num, acquisition_channel, region, count(DISTINCT customer_id) AS n
  FROM at_start
  GROUP BY 1, 2, 3
),
-- A customer's first purchase day is the one with no previous purchase day.
new_agg AS (
  SELECT month_num, acquisition_channel, region, count(DISTINCT customer_id) AS n
  FROM spell
  WHERE prev_day_num IS NULL
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
