-- One row per customer with at least one completed order on or before as_of.
-- Definitions: docs/metrics/customer_summary.md.
-- $as_of: the run's as-of day, a DATE the engine binds (`latest` = the latest order day in the
-- data, any status, resolved once per run before the job).
WITH params AS (
  SELECT CAST($as_of AS DATE) AS as_of_date
),
completed AS MATERIALIZED (
  SELECT oe.customer_id, oe.order_id, oe.order_ts, oe.order_date,
         oe.gmv, oe.refund_amount, oe.net_revenue, oe.bad_experience, oe.primary_issue
  FROM params p
  CROSS JOIN order_experience oe
  WHERE oe.status = 'completed'
    AND oe.order_date <= p.as_of_date
),
-- Each customer's completed orders in order (order_ts, then order_id): the window only sorts them
-- (a row_number by customer runs run by run, engine/window.rs), so the aggregate below streams,
-- one customer at a time, and its first_value(... ORDER BY ...) finds its input already ordered.
sequenced AS (
  SELECT c.*, row_number() OVER (PARTITION BY c.customer_id ORDER BY c.order_ts, c.order_id) AS order_seq
  FROM completed c
),
-- One row per customer (keyed aggregate before any join).
per_customer AS MATERIALIZED (
  SELECT customer_id,
         min(order_ts)                                                       AS first_order_ts,
         max(order_ts)                                                       AS last_order_ts,
         min(order_date)                                                     AS first_order_date,
         max(order_date)                                                     AS last_order_date,
         count(*)                                                            AS orders,
         count(DISTINCT order_date)                                          AS order_days,
         sum(gmv)                                                            AS gmv,
         sum(refund_amount)                                                  AS refund_amount,
         sum(net_revenue)                                                    AS net_revenue,
         count(*) FILTER (WHERE bad_experience)                              AS bad_experiences,
         first_value(primary_issue ORDER BY order_ts, order_id) FILTER (WHERE bad_experience)
                                                                             AS first_bad_experience_type,
         max(primary_issue) FILTER (WHERE order_seq = 1)                     AS first_order_primary_issue
  FROM sequenced
  GROUP BY customer_id
),
-- Net revenue of each customer's first purchase day, to leave it out of the mean repeat value.
-- A join hashes its first table (DataFusion estimates both CTEs at the orders' size, so it keeps
-- the order written): one row per customer, not per order (at 10M orders 190 MB, not 545 MB).
first_day AS (
  SELECT c.customer_id, sum(c.net_revenue) AS first_day_revenue
  FROM per_customer pc
  JOIN completed c ON pc.customer_id = c.customer_id AND c.order_date = pc.first_order_date
  GROUP BY c.customer_id
),
measured AS (
  SELECT pc.*,
         p.as_of_date,
         CAST((extract(epoch FROM CAST(p.as_of_date AS TIMESTAMP))
               - extract(epoch FROM CAST(pc.last_order_date AS TIMESTAMP))) / 86400 AS BIGINT)  AS recency_days,
         CAST((extract(epoch FROM CAST(p.as_of_date AS TIMESTAMP))
               - extract(epoch FROM CAST(pc.first_order_date AS TIMESTAMP))) / 86400 AS BIGINT) AS tenure_days,
         CAST((extract(epoch FROM CAST(pc.last_order_date AS TIMESTAMP))
               - extract(epoch FROM CAST(pc.first_order_date AS TIMESTAMP))) / 86400 AS BIGINT) AS bgnbd_recency
  FROM params p
  CROSS JOIN per_customer pc
),
-- RFM quintiles over all customers in the output. NTILE(5) gives bucket 1 to the first rows of
-- the ordering; ties are broken by customer_id (lower id first, i.e. lower score) so reruns
-- give the same scores. r: most days since last order first, so the most recent get 5.
-- Computed exactly as NTILE(5) from row numbers (DataFusion's ntile is quadratic over a global
-- ordering; checked equal to ntile for 1 to 39 rows): with n rows, q = n / 5 and r = n % 5 (integer division), the first r buckets hold q + 1 rows and the
-- rest q; row i (0-based) is in bucket i / (q + 1) when i < r (q + 1), else r + (i - r (q + 1)) / q.
-- n is counted from per_customer (one row per customer, as measured), not with count(*) OVER (),
-- which holds every row in one batch outside the memory pool (docs/jobs.md#memory).
ranked AS (
  SELECT m.*,
         CAST(row_number() OVER (ORDER BY recency_days DESC, customer_id) AS BIGINT) - 1 AS r_row,
         CAST(row_number() OVER (ORDER BY orders ASC, customer_id) AS BIGINT) - 1        AS f_row,
         CAST(row_number() OVER (ORDER BY net_revenue ASC, customer_id) AS BIGINT) - 1   AS m_row,
         n.n_customers
  FROM measured m
  CROSS JOIN (SELECT CAST(count(*) AS BIGINT) AS n_customers FROM per_customer) n
),
buckets AS (
  SELECT ranked.*, n_customers / 5 AS q, n_customers % 5 AS r FROM ranked
),
scored AS (
  SELECT buckets.*,
         CAST(1 + CASE WHEN r_row < r * (q + 1) THEN r_row / (q + 1) ELSE r + (r_row - r * (q + 1)) / NULLIF(q, 0) END AS INT) AS r_score,
         CAST(1 + CASE WHEN f_row < r * (q + 1) THEN f_row / (q + 1) ELSE r + (f_row - r * (q + 1)) / NULLIF(q, 0) END AS INT) AS f_score,
         CAST(1 + CASE WHEN m_row < r * (q + 1) THEN m_row / (q + 1) ELSE r + (m_row - r * (q + 1)) / NULLIF(q, 0) END AS INT) AS m_score
  FROM buckets
)
SELECT
  s.customer_id,
  c.acquisition_channel,
  c.region,
  c.signup_ts,
  s.first_order_ts,
  to_char(s.first_order_ts, '%Y-%m')                                         AS cohort_month,
  s.last_order_ts,
  s.orders,
  s.order_days,
  s.gmv,
  s.refund_amount,
  s.net_revenue,
  CAST(s.net_revenue / NULLIF(s.orders, 0) AS DECIMAL(18,2))                 AS average_order_value,
  s.as_of_date,
  s.recency_days,
  s.tenure_days,
  s.order_days - 1                                                           AS frequency,
  s.bgnbd_recency                                                            AS recency,
  s.tenure_days                                                              AS t,
  s.r_score,
  s.f_score,
  s.m_score,
  CAST(s.r_score AS VARCHAR) || CAST(s.f_score AS VARCHAR) || CAST(s.m_score AS VARCHAR) AS rfm_score,
  -- Segment rules, first match wins (docs/metrics/customer_summary.md#segment).
  CASE
    WHEN s.order_days = 1 AND s.r_score >= 4 THEN 'new'
    WHEN s.r_score >= 4 AND s.f_score >= 4   THEN 'champions'
    WHEN s.r_score >= 3 AND s.f_score >= 3   THEN 'loyal'
    WHEN s.r_score <= 2 AND s.f_score >= 3   THEN 'at_risk'
    WHEN s.r_score <= 2                      THEN 'hibernating'
    ELSE 'needs_attention'
  END                                                                        AS segment,
  s.bad_experiences,
  s.first_bad_experience_type,
  s.first_order_primary_issue,
  s.net_revenue                                                              AS historical_ltv,
  -- Gamma-Gamma's monetary value: mean net revenue of the repeat purchase days.
  CAST((s.net_revenue - fd.first_day_revenue) / NULLIF(s.order_days - 1, 0) AS DECIMAL(18,2))
                                                                             AS repeat_monetary_value
-- Every scored customer, with their customer row and first day (scored LEFT JOIN customers LEFT
-- JOIN first_day), written as right joins: a join hashes its first table, and DataFusion has no
-- size for `scored` (windows over a cross join) to choose by. So the narrow customers and
-- first_day are hashed (388 and 328 MB at 10M orders) and the wide scored rows stream past them,
-- instead of hashing the scored rows twice (831 and 1,027 MB); 21 s to 17 s (docs/BENCHMARKS.md).
FROM first_day fd
RIGHT JOIN (customers c RIGHT JOIN scored s ON c.customer_id = s.customer_id)
  ON fd.customer_id = s.customer_id
