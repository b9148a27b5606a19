-- Who to compensate: the recovery experiment per issue type and pre-issue value tier, turned into
-- money with the CLV model. Definitions and assumptions: docs/metrics/recovery_policy.md.
WITH model AS (
  SELECT max(r) AS r, max(alpha) AS alpha, max(a) AS a, max(b) AS b,
         max(p) AS p, max(q) AS q, max(gamma) AS gamma,
         max(CASE time_unit WHEN 'day' THEN 1.0 WHEN 'week' THEN 7.0 END) AS days
  FROM clv_model
),
-- Cases whose whole repurchase window is observed.
cases AS (
  SELECT order_id, customer_id, issue_type, issue_ts, compensated, voucher_cost, redeemed_value,
         coalesce(repurchase_days <= $window_days, false) AS repurchased
  FROM recovery_cases
  WHERE observed_days >= $window_days
),
-- The customer's purchase days up to the moment the issue became known (before any voucher).
history_days AS (
  SELECT c.order_id, o.order_date, sum(o.net_revenue) AS day_revenue
  FROM cases c
  JOIN order_experience o
    ON o.customer_id = c.customer_id AND NOT o.is_cancelled AND o.order_ts <= c.issue_ts
  GROUP BY c.order_id, o.order_date
),
history AS (
  SELECT order_id,
         count(*) - 1                                                   AS x,
         min(order_date)                                                AS first_day,
         max(order_date)                                                AS last_day,
         (sum(day_revenue) - first_value(day_revenue ORDER BY order_date))
           / NULLIF(count(*) - 1, 0)                                    AS repeat_value
  FROM history_days
  GROUP BY order_id
),
-- Predicted 12-month CLV at the issue, from the pre-issue history (BG/NBD inputs as in
-- customer_summary, with the issue's day as the as-of day). Materialized: ranked counts it once
-- and ranks it once (count(*) OVER () would hold every row in one batch outside the memory pool;
-- docs/jobs.md#memory).
pre_issue AS MATERIALIZED (
  SELECT c.*,
         clv(m.r, m.alpha, m.a, m.b, m.p, m.q, m.gamma,
             CAST(h.x AS DOUBLE),
             (extract(epoch FROM CAST(h.last_day AS TIMESTAMP))
              - extract(epoch FROM CAST(h.first_day AS TIMESTAMP))) / 86400 / m.days,
             (extract(epoch FROM CAST(CAST(c.issue_ts AS DATE) AS TIMESTAMP))
              - extract(epoch FROM CAST(h.first_day AS TIMESTAMP))) / 86400 / m.days,
             greatest(CAST(coalesce(h.repeat_value, 0) AS DOUBLE), 0.0), 12,
             $margin, $monthly_discount_rate, 30.4375 / m.days)            AS pre_issue_clv_12m
  FROM cases c
  JOIN history h ON h.order_id = c.order_id
  CROSS JOIN model m
),
-- Tiers by rank of the pre-issue CLV among the cases, with customer_ltv's shares: the top 10%,
-- the next 20%, the next 30%, the rest (ties by order_id).
ranked AS (
  SELECT p.*,
         row_number() OVER (ORDER BY p.pre_issue_clv_12m DESC, p.order_id) AS n,
         c.cases
  FROM pre_issue p
  CROSS JOIN (SELECT count(*) AS cases FROM pre_issue) c
),
tiered AS (
  SELECT r.*, l.predicted_clv_12m AS clv_12m_now,
         CASE WHEN n <= 0.1 * cases THEN 'top'
              WHEN n <= 0.3 * cases THEN 'high'
              WHEN n <= 0.6 * cases THEN 'medium'
              ELSE 'low' END                                             AS value_tier
  FROM ranked r
  LEFT JOIN customer_ltv l ON l.customer_id = r.customer_id
),
cells AS (
  SELECT issue_type, value_tier,
         sum(CASE WHEN compensated THEN 1 ELSE 0 END)                               AS compensated_cases,
         sum(CASE WHEN compensated AND repurchased THEN 1 ELSE 0 END)               AS compensated_repurchased,
         sum(CASE WHEN NOT compensated THEN 1 ELSE 0 END)                           AS uncompensated_cases,
         sum(CASE WHEN NOT compensated AND repurchased THEN 1 ELSE 0 END)           AS uncompensated_repurchased,
         avg(CASE WHEN repurchased THEN clv_12m_now END)                            AS recovered_clv_12m,
         avg(CASE WHEN NOT repurchased THEN clv_12m_now END)                        AS unrecovered_clv_12m,
         sum(CASE WHEN compensated THEN voucher_cost END)                           AS voucher_face_value,
         sum(CASE WHEN compensated THEN redeemed_value END)                         AS voucher_redeemed_value
  FROM tiered
  GROUP BY issue_type, value_tier
),
-- Wilson score bounds of each arm's rate (z = 1.96).
wilson AS (
  SELECT *,
         CAST(compensated_repurchased AS DOUBLE) / NULLIF(compensated_cases, 0)     AS p1,
         CAST(uncompensated_repurchased AS DOUBLE) / NULLIF(uncompensated_cases, 0) AS p0,
         CAST(compensated_cases AS DOUBLE)                                          AS n1,
         CAST(uncompensated_cases AS DOUBLE)                                        AS n0
  FROM cells
),
bounds AS (
  SELECT *,
         (p1 + 1.9208 / n1 - 1.96 * sqrt(p1 * (1 - p1) / n1 + 0.9604 / (n1 * n1))) / (1 + 3.8416 / n1) AS l1,
         (p1 + 1.9208 / n1 + 1.96 * sqrt(p1 * (1 - p1) / n1 + 0.9604 / (n1 * n1))) / (1 + 3.8416 / n1) AS u1,
         (p0 + 1.9208 / n0 - 1.96 * sqrt(p0 * (1 - p0) / n0 + 0.9604 / (n0 * n0))) / (1 + 3.8416 / n0) AS l0,
         (p0 + 1.9208 / n0 + 1.96 * sqrt(p0 * (1 - p0) / n0 + 0.9604 / (n0 * n0))) / (1 + 3.8416 / n0) AS u0
  FROM wilson
),
-- Newcombe's hybrid score interval of the difference p1 - p0.
effect AS (
  SELECT *,
         p1 - p0                                                                    AS lift,
         p1 - p0 - sqrt((p1 - l1) * (p1 - l1) + (u0 - p0) * (u0 - p0))              AS lift_low,
         p1 - p0 + sqrt((u1 - p1) * (u1 - p1) + (p0 - l0) * (p0 - l0))              AS lift_high,
         CAST(recovered_clv_12m - unrecovered_clv_12m AS DECIMAL(18,2))             AS value_of_recovery,
         CAST(voucher_face_value / NULLIF(compensated_cases, 0) AS DECIMAL(18,2))   AS voucher_face_value_per_case,
         CAST(voucher_redeemed_value / NULLIF(compensated_cases, 0) AS DECIMAL(18,2)) AS voucher_cost_per_case
  FROM bounds
),
valued AS (
  SELECT *,
         -- money stays decimal: a rate (6 places) times the decimal value of a recovery
         CAST(CAST(lift AS DECIMAL(10,6)) * value_of_recovery AS DECIMAL(18,2))      AS incremental_clv,
         CAST(least(CAST(lift_low AS DECIMAL(10,6)) * value_of_recovery,
                    CAST(lift_high AS DECIMAL(10,6)) * value_of_recovery) AS DECIMAL(18,2))    AS incremental_clv_low,
         CAST(greatest(CAST(lift_low AS DECIMAL(10,6)) * value_of_recovery,
                       CAST(lift_high AS DECIMAL(10,6)) * value_of_recovery) AS DECIMAL(18,2)) AS incremental_clv_high
  FROM effect
)
SELECT
  issue_type,
  value_tier,
  compensated_cases,
  compensated_repurchased,
  round(p1, 4)                                                     AS compensated_repurchase_rate,
  uncompensated_cases,
  uncompensated_repurchased,
  round(p0, 4)                                                     AS uncompensated_repurchase_rate,
  round(lift, 4)                                                   AS incremental_repurchase_rate,
  round(lift_low, 4)                                               AS incremental_repurchase_rate_low,
  round(lift_high, 4)                                              AS incremental_repurchase_rate_high,
  CAST(recovered_clv_12m AS DECIMAL(18,2))                         AS recovered_clv_12m,
  CAST(unrecovered_clv_12m AS DECIMAL(18,2))                       AS unrecovered_clv_12m,
  value_of_recovery,
  incremental_clv                                                  AS expected_incremental_clv,
  voucher_face_value_per_case,
  voucher_cost_per_case,
  CAST(incremental_clv - voucher_cost_per_case AS DECIMAL(18,2))   AS net_value_per_case,
  CAST(incremental_clv_low - voucher_cost_per_case AS DECIMAL(18,2))  AS net_value_per_case_low,
  CAST(incremental_clv_high - voucher_cost_per_case AS DECIMAL(18,2)) AS net_value_per_case_high,
  CASE WHEN lift_low IS NULL OR value_of_recovery IS NULL OR value_of_recovery <= 0
         OR (lift_low <= 0 AND lift_high >= 0)                      THEN 'inconclusive'
       WHEN incremental_clv_low - voucher_cost_per_case > 0        THEN 'compensate'
       WHEN incremental_clv_high - voucher_cost_per_case < 0       THEN 'don''t'
       ELSE 'inconclusive' END                                      AS recommendation,
  CAST($as_of AS DATE)                                             AS as_of
FROM valued
