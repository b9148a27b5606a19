-- Acquisition cohorts and their retention / LTV curve. Definitions: docs/metrics/cohort_retention.md.
-- Grain: cohort_month x acquisition_channel x first_order_bad_experience x months_since_first, with a
-- row for every month index from 0 to the last month in the data (zeros when nobody was active).
-- Months are handled as integers idx = year * 12 + (month - 1) (UTC), so idx / 12 is the year and
-- idx % 12 + 1 the month.
WITH completed AS MATERIALIZED (
  SELECT order_id,
         customer_id,
         order_ts,
         net_revenue,
         bad_experience,
         CAST(extract(year FROM order_ts) AS BIGINT) * 12 + CAST(extract(month FROM order_ts) AS BIGINT) - 1
                                                            AS month_idx
  FROM order_experience
  WHERE status = 'completed'
),
-- The customer's first completed order; ties on order_ts go to the smallest order_id.
first_order AS (
  SELECT customer_id, month_idx AS cohort_idx, bad_experience AS first_order_bad_experience
  FROM (
    SELECT customer_id, month_idx, bad_experience,
           row_number() OVER (PARTITION BY customer_id ORDER BY order_ts, order_id) AS rn
    FROM completed
  ) ranked
  WHERE rn = 1
),
customer_channel AS (
  SELECT customer_id, min(acquisition_channel) AS acquisition_channel
  FROM customers
  GROUP BY customer_id
),
-- One row per cohort member; customers missing from `customers` get channel 'unknown'.
member AS MATERIALIZED (
  SELECT f.customer_id,
         f.cohort_idx,
         coalesce(c.acquisition_channel, 'unknown')         AS acquisition_channel,
         f.first_order_bad_experience
  FROM first_order f
  LEFT JOIN customer_channel c ON c.customer_id = f.customer_id
),
cohort AS (
  SELECT cohort_idx, acquisition_channel, first_order_bad_experience, count(*) AS cohort_size
  FROM member
  GROUP BY cohort_idx, acquisition_channel, first_order_bad_experience
),
-- The last month present in the data: the month of the latest order_ts, whatever its status.
last_month AS (
  SELECT CAST(extract(year FROM max_ts) AS BIGINT) * 12 + CAST(extract(month FROM max_ts) AS BIGINT) - 1
           AS last_idx
  FROM (SELECT max(order_ts) AS max_ts FROM order_experience) latest
),
-- Every cohort x every month index 0 .. last month, so curves have no holes.
grid AS (
  SELECT c.cohort_idx,
         c.acquisition_channel,
         c.first_order_bad_experience,
         c.cohort_size,
         unnest(range(0, l.last_idx - c.cohort_idx + 1))    AS months_since_first
  FROM cohort c
  CROSS JOIN last_month l
),
-- Each customer's completed orders per month: one row per active customer-month, so counting rows
-- below counts distinct customers without a count(DISTINCT) holding every group's customer set.
customer_month AS (
  SELECT customer_id, month_idx, count(*) AS orders, sum(net_revenue) AS net_revenue
  FROM completed
  GROUP BY customer_id, month_idx
),
activity AS (
  SELECT m.cohort_idx,
         m.acquisition_channel,
         m.first_order_bad_experience,
         o.month_idx - m.cohort_idx                         AS months_since_first,
         count(*)                                           AS active_customers,
         sum(o.orders)                                      AS orders,
         sum(o.net_revenue)                                 AS net_revenue
  FROM customer_month o
  JOIN member m ON m.customer_id = o.customer_id
  GROUP BY m.cohort_idx, m.acquisition_channel, m.first_order_bad_experience, o.month_idx - m.cohort_idx
),
curve AS (
  SELECT g.cohort_idx,
         g.acquisition_channel,
         g.first_order_bad_experience,
         g.months_since_first,
         g.cohort_size,
         coalesce(a.active_customers, 0)                                    AS active_customers,
         coalesce(a.orders, 0)                                              AS orders,
         CAST(coalesce(a.net_revenue, CAST(0 AS DECIMAL(18,2))) AS DECIMAL(18,2)) AS net_revenue
  FROM grid g
  LEFT JOIN activity a
    ON  a.cohort_idx = g.cohort_idx
    AND a.acquisition_channel = g.acquisition_channel
    AND a.first_order_bad_experience = g.first_order_bad_experience
    AND a.months_since_first = g.months_since_first
),
cumulative AS (
  SELECT cu.*,
         CAST(sum(net_revenue) OVER (
                PARTITION BY cohort_idx, acquisition_channel, first_order_bad_experience
                ORDER BY months_since_first
                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS DECIMAL(18,2))
                                                                            AS cumulative_net_revenue
  FROM curve cu
)
SELECT
  concat(CAST(cohort_idx / 12 AS VARCHAR), '-', lpad(CAST(cohort_idx % 12 + 1 AS VARCHAR), 2, '0'))
                                                                            AS cohort_month,
  acquisition_channel,
  first_order_bad_experience,
  months_since_first,
  concat(CAST((cohort_idx + months_since_first) / 12 AS VARCHAR), '-',
         lpad(CAST((cohort_idx + months_since_first) % 12 + 1 AS VARCHAR), 2, '0'))
                                                                            AS activity_month,
  cohort_size,
  active_customers,
  round(CAST(active_customers AS DOUBLE) / NULLIF(cohort_size, 0), 4)      AS retention_rate,
  orders,
  net_revenue,
  cumulative_net_revenue,
  CAST(cumulative_net_revenue / NULLIF(cohort_size, 0) AS DECIMAL(18,2))   AS cumulative_net_revenue_per_customer
FROM cumulative
