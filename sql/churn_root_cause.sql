-- Churn by first-order experience. Definitions: docs/metrics/churn_root_cause.md.
WITH as_of AS (
  -- $as_of: the run's as-of day, a DATE the engine binds (`latest` is resolved before the job).
  SELECT CAST($as_of AS DATE) AS as_of_date
),
-- The as-of cut is a constant predicate on the bound parameter: no join with the one-row as_of,
-- so the orders are scanned once without a nested loop.
completed AS (
  SELECT e.customer_id, e.order_id, e.order_ts, CAST(e.order_ts AS DATE) AS order_date,
         CASE WHEN e.perfect_order THEN 'perfect'
              WHEN e.primary_issue = 'none' THEN 'not_delivered'
              ELSE e.primary_issue END                                      AS experience
  FROM order_experience e
  WHERE NOT e.is_cancelled
    AND CAST(e.order_ts AS DATE) <= CAST($as_of AS DATE)
),
-- Each customer's orders in time order (a sort that spills); the aggregate below then streams one
-- customer at a time (docs/jobs.md#memory). Order dates never decrease along a customer's orders,
-- so the repeat day (same-day orders are one purchase: the first order on a later day) is the
-- first date that differs from the order before it.
sequenced AS (
  SELECT customer_id, order_date, experience,
         row_number() OVER by_time                                           AS order_seq,
         lag(order_date) OVER by_time                                        AS previous_date
  FROM completed
  WINDOW by_time AS (PARTITION BY customer_id ORDER BY order_ts, order_id)
),
per_customer AS (
  SELECT customer_id,
         max(experience) FILTER (WHERE order_seq = 1)                        AS first_order_experience,
         min(order_date)                                                     AS first_date,
         max(order_date)                                                     AS last_date,
         min(order_date) FILTER (WHERE order_date > previous_date)           AS repeat_date
  FROM sequenced
  GROUP BY customer_id
),
flags AS (
  SELECT d.first_order_experience,
         (extract(epoch FROM CAST(a.as_of_date AS TIMESTAMP)) - extract(epoch FROM CAST(d.first_date AS TIMESTAMP))) / 86400
           >= $repeat_window_days                                             AS observed,
         coalesce((extract(epoch FROM CAST(d.repeat_date AS TIMESTAMP)) - extract(epoch FROM CAST(d.first_date AS TIMESTAMP))) / 86400
           <= $repeat_window_days, false)                                     AS repeated,
         (extract(epoch FROM CAST(a.as_of_date AS TIMESTAMP)) - extract(epoch FROM CAST(d.last_date AS TIMESTAMP))) / 86400
           >= $churn_days                                                     AS churned
  FROM as_of a
  CROSS JOIN per_customer d
),
counts AS (
  SELECT first_order_experience,
         count(*)                                                      AS customers,
         sum(CASE WHEN observed THEN 1 ELSE 0 END)                     AS customers_observed,
         sum(CASE WHEN observed AND repeated THEN 1 ELSE 0 END)        AS repeat_customers,
         sum(CASE WHEN churned THEN 1 ELSE 0 END)                      AS churned_customers
  FROM flags
  GROUP BY first_order_experience
),
rates AS (
  SELECT *,
         CAST(repeat_customers AS DOUBLE) / NULLIF(customers_observed, 0) AS p_repeat,
         CAST(customers_observed AS DOUBLE)                               AS n_repeat,
         -- No observed customer yet (all first orders younger than the repeat window): nothing is
         -- known about the group's churn, so NULL rather than 0.0.
         CASE WHEN customers_observed > 0
              THEN CAST(churned_customers AS DOUBLE) / NULLIF(customers, 0) END AS p_churn,
         CAST(customers AS DOUBLE)                                        AS n_churn
  FROM counts
),
wilson AS (
  -- Wilson score interval, z = 1.96 (95%).
  SELECT *,
         (p_repeat + 1.9208 / n_repeat - 1.96 * sqrt(p_repeat * (1 - p_repeat) / n_repeat + 0.9604 / (n_repeat * n_repeat)))
           / (1 + 3.8416 / n_repeat)                                       AS repeat_low,
         (p_repeat + 1.9208 / n_repeat + 1.96 * sqrt(p_repeat * (1 - p_repeat) / n_repeat + 0.9604 / (n_repeat * n_repeat)))
           / (1 + 3.8416 / n_repeat)                                       AS repeat_high,
         (p_churn + 1.9208 / n_churn - 1.96 * sqrt(p_churn * (1 - p_churn) / n_churn + 0.9604 / (n_churn * n_churn)))
           / (1 + 3.8416 / n_churn)                                        AS churn_low,
         (p_churn + 1.9208 / n_churn + 1.96 * sqrt(p_churn * (1 - p_churn) / n_churn + 0.9604 / (n_churn * n_churn)))
           / (1 + 3.8416 / n_churn)                                        AS churn_high
  FROM rates
),
baseline AS (
  SELECT *,
         max(CASE WHEN first_order_experience = 'perfect' THEN p_repeat END) OVER ()    AS perfect_p,
         max(CASE WHEN first_order_experience = 'perfect' THEN repeat_low END) OVER ()  AS perfect_low,
         max(CASE WHEN first_order_experience = 'perfect' THEN repeat_high END) OVER () AS perfect_high
  FROM wilson
)
SELECT
  first_order_experience,
  customers,
  customers_observed,
  repeat_customers                                   AS repeat_customers_90d,
  round(p_repeat, 4)                                 AS repeat_rate_90d,
  round(repeat_low, 4)                               AS repeat_rate_90d_low,
  round(repeat_high, 4)                              AS repeat_rate_90d_high,
  churned_customers,
  round(p_churn, 4)                                  AS churn_rate,
  round(churn_low, 4)                                AS churn_rate_low,
  round(churn_high, 4)                               AS churn_rate_high,
  round(perfect_p, 4)                                AS perfect_repeat_rate_90d,
  round(p_repeat / NULLIF(perfect_p, 0), 4)          AS lift_vs_perfect,
  round(repeat_low / NULLIF(perfect_high, 0), 4)     AS lift_low,
  round(repeat_high / NULLIF(perfect_low, 0), 4)     AS lift_high,
  $repeat_window_days                                AS repeat_window_days,
  $churn_days                                        AS churn_days
FROM baseline
