-- Recovery of bad experiences. Definitions: docs/metrics/experience_recovery.md.
WITH as_of AS (
  -- $as_of: the run's as-of day, a DATE the engine binds; the window ends at its midnight.
  SELECT extract(epoch FROM CAST(CAST($as_of AS DATE) AS TIMESTAMP)) + 86400 AS as_of_end
),
cases AS (
  SELECT order_id, customer_id, primary_issue AS issue_type, issue_ts,
         to_char(issue_ts, '%Y-%m')   AS issue_month,
         extract(epoch FROM issue_ts) AS issue_epoch
  FROM order_experience
  WHERE bad_experience AND issue_ts IS NOT NULL
),
recovery_vouchers AS (
  SELECT v.voucher_id, v.customer_id, extract(epoch FROM v.issued_ts) AS issued_epoch, v.face_value,
         v.redeemed_order_id IS NOT NULL AS redeemed
  FROM vouchers v
  JOIN programs p ON p.program_id = v.program_id AND p.kind = 'recovery'
),
compensation AS (
  SELECT c.order_id,
         sum(v.face_value)                                                   AS voucher_cost,
         sum(CASE WHEN v.redeemed THEN v.face_value ELSE CAST(0 AS DECIMAL(18,2)) END) AS redeemed_value
  FROM cases c
  JOIN recovery_vouchers v
    ON v.customer_id = c.customer_id
   AND v.issued_epoch >= c.issue_epoch
   AND v.issued_epoch <= c.issue_epoch + $compensation_window_days * 86400
  GROUP BY c.order_id
),
next_order AS (
  SELECT c.order_id, min(extract(epoch FROM o.order_ts)) AS next_epoch
  FROM cases c
  JOIN order_experience o
    ON o.customer_id = c.customer_id AND NOT o.is_cancelled AND o.order_ts > c.issue_ts
  GROUP BY c.order_id
),
per_case AS (
  SELECT c.issue_month, c.issue_type, c.customer_id,
         m.order_id IS NOT NULL                                        AS compensated,
         coalesce(m.voucher_cost, CAST(0 AS DECIMAL(18,2)))            AS voucher_cost,
         coalesce(m.redeemed_value, CAST(0 AS DECIMAL(18,2)))          AS redeemed_value,
         a.as_of_end - c.issue_epoch                                   AS observed_seconds,
         n.next_epoch - c.issue_epoch                                  AS repurchase_seconds
  FROM as_of a
  CROSS JOIN cases c
  LEFT JOIN compensation m ON m.order_id = c.order_id
  LEFT JOIN next_order n   ON n.order_id = c.order_id
  WHERE c.issue_epoch < a.as_of_end
),
cells AS (
  SELECT issue_month, issue_type, compensated,
         count(*)                                                                            AS cases,
         count(DISTINCT customer_id)                                                         AS customers,
         sum(CASE WHEN observed_seconds >= 30 * 86400 THEN 1 ELSE 0 END)                      AS cases_observed_30d,
         sum(CASE WHEN observed_seconds >= 30 * 86400 AND repurchase_seconds <= 30 * 86400 THEN 1 ELSE 0 END) AS repurchased_30d,
         sum(CASE WHEN observed_seconds >= 60 * 86400 THEN 1 ELSE 0 END)                      AS cases_observed_60d,
         sum(CASE WHEN observed_seconds >= 60 * 86400 AND repurchase_seconds <= 60 * 86400 THEN 1 ELSE 0 END) AS repurchased_60d,
         sum(CASE WHEN observed_seconds >= 90 * 86400 THEN 1 ELSE 0 END)                      AS cases_observed_90d,
         sum(CASE WHEN observed_seconds >= 90 * 86400 AND repurchase_seconds <= 90 * 86400 THEN 1 ELSE 0 END) AS repurchased_90d,
         sum(voucher_cost)                                                                   AS voucher_cost,
         sum(redeemed_value)                                                                 AS redeemed_value,
         sum(CASE WHEN observed_seconds >= 90 * 86400 THEN voucher_cost ELSE CAST(0 AS DECIMAL(18,2)) END) AS voucher_cost_observed_90d
  FROM per_case
  GROUP BY issue_month, issue_type, compensated
),
rated AS (
  SELECT *,
         CAST(repurchased_90d AS DOUBLE) / NULLIF(cases_observed_90d, 0) AS recovery_p
  FROM cells
),
compared AS (
  SELECT r.*,
         u.recovery_p AS uncompensated_p
  FROM rated r
  LEFT JOIN rated u
    ON u.issue_month = r.issue_month AND u.issue_type = r.issue_type AND NOT u.compensated
)
SELECT
  issue_month,
  issue_type,
  compensated,
  cases,
  customers,
  cases_observed_30d,
  repurchased_30d,
  round(CAST(repurchased_30d AS DOUBLE) / NULLIF(cases_observed_30d, 0), 4)   AS repurchase_rate_30d,
  cases_observed_60d,
  repurchased_60d,
  round(CAST(repurchased_60d AS DOUBLE) / NULLIF(cases_observed_60d, 0), 4)   AS repurchase_rate_60d,
  cases_observed_90d,
  repurchased_90d,
  round(recovery_p, 4)                                                        AS recovery_rate,
  CAST(voucher_cost AS DECIMAL(18,2))                                         AS voucher_cost,
  CAST(redeemed_value AS DECIMAL(18,2))                                       AS redeemed_value,
  round(uncompensated_p, 4)                                                   AS uncompensated_recovery_rate,
  CASE WHEN compensated THEN round(recovery_p - uncompensated_p, 4) END       AS incremental_recovery_rate,
  CASE WHEN compensated THEN round((recovery_p - uncompensated_p) * cases_observed_90d, 2) END
                                                                              AS incremental_recovered_customers,
  CASE WHEN compensated AND recovery_p > uncompensated_p
       -- money stays decimal: voucher cost over the (estimated) count of recovered customers
       THEN CAST(voucher_cost_observed_90d
                 / CAST((recovery_p - uncompensated_p) * cases_observed_90d AS DECIMAL(18,4)) AS DECIMAL(18,2))
  END                                                                         AS cost_per_incremental_recovery
FROM compared
