-- Calibration and holdout: BG/NBD fitted on each customer's purchase days up to the calibration
-- end, then its predicted repeat purchase days in the holdout against the actual ones, by
-- calibration frequency. Definitions: docs/metrics/clv.md. Days are whole UTC days since 1970.
WITH unit AS (
  SELECT CASE $time_unit WHEN 'day' THEN 1.0 WHEN 'week' THEN 7.0 END AS days
),
bounds AS (
  SELECT CAST(extract(epoch FROM CAST(CAST($as_of AS DATE) AS TIMESTAMP)) / 86400 AS BIGINT) AS holdout_end,
         CAST(extract(epoch FROM CAST(CAST($as_of AS DATE) AS TIMESTAMP)) / 86400 AS BIGINT)
           - CAST($holdout_days AS BIGINT)                                                AS calibration_end
),
purchase_days AS (
  SELECT customer_id, CAST(extract(epoch FROM CAST(order_date AS TIMESTAMP)) / 86400 AS BIGINT) AS day
  FROM order_experience
  WHERE status = 'completed'
  GROUP BY customer_id, order_date
),
-- Customers whose first purchase is in the calibration period, with (x, t_x, T) at its end.
calibration AS (
  SELECT p.customer_id,
         count(*) - 1                         AS x,
         max(p.day) - min(p.day)              AS recency_days,
         min(b.calibration_end) - min(p.day)  AS t_days
  FROM purchase_days p
  CROSS JOIN bounds b
  WHERE p.day <= b.calibration_end
  GROUP BY p.customer_id
),
holdout AS (
  SELECT p.customer_id, count(*) AS actual
  FROM purchase_days p
  CROSS JOIN bounds b
  WHERE p.day > b.calibration_end AND p.day <= b.holdout_end
  GROUP BY p.customer_id
),
fit AS (
  SELECT bgnbd_fit(CAST(c.x AS DOUBLE), c.recency_days / u.days, c.t_days / u.days) AS bg
  FROM calibration c
  CROSS JOIN unit u
),
scored AS (
  SELECT CASE WHEN c.x >= 7 THEN '7+' ELSE CAST(c.x AS VARCHAR) END AS calibration_frequency,
         CAST(coalesce(h.actual, 0) AS DOUBLE)                        AS actual,
         bgnbd_expected_purchases(f.bg['r'], f.bg['alpha'], f.bg['a'], f.bg['b'],
                                  CAST(c.x AS DOUBLE), c.recency_days / u.days, c.t_days / u.days,
                                  CAST($holdout_days AS DOUBLE) / u.days)  AS predicted,
         f.bg['converged']                                            AS converged
  FROM calibration c
  LEFT JOIN holdout h ON h.customer_id = c.customer_id
  CROSS JOIN fit f
  CROSS JOIN unit u
)
SELECT
  coalesce(calibration_frequency, 'all')                       AS calibration_frequency,
  count(*)                                                     AS customers,
  round(sum(actual), 4)                                        AS actual_purchases,
  round(sum(predicted), 4)                                     AS predicted_purchases,
  round(avg(actual), 4)                                        AS mean_actual,
  round(avg(predicted), 4)                                     AS mean_predicted,
  round(avg(abs(actual - predicted)), 4)                       AS mean_absolute_error,
  bool_and(converged)                                          AS converged,
  CAST($as_of AS DATE)                                         AS as_of,
  CAST($holdout_days AS BIGINT)                                AS holdout_days,
  CAST($time_unit AS VARCHAR)                                  AS time_unit
FROM scored
GROUP BY GROUPING SETS ((calibration_frequency), ())
