-- Recovery of bad experiences. Definitions: docs/metrics/experience_recovery.md.
WITH per_case AS (
  SELECT issue_month, issue_type, customer_id, compensated, voucher_cost, redeemed_value,
         observed_days, repurchase_days
  FROM recovery_cases
),
cells AS (
  SELECT issue_month, issue_type, compensated,
         count(*)                                                                            AS cases,
         count(DISTINCT customer_id)                                                         AS customers,
         sum(CASE WHEN observed_days >= 30 THEN 1 ELSE 0 END)                      AS cases_observed_30d,
         sum(CASE WHEN observed_days >= 30 AND repurchase_days <= 30 THEN 1 ELSE 0 END) AS repurchased_30d,
         sum(CASE WHEN observed_days >= 60 THEN 1 ELSE 0 END)                      AS cases_observed_60d,
         sum(CASE WHEN observed_days >= 60 AND repurchase_days <= 60 THEN 1 ELSE 0 END) AS repurchased_60d,
         sum(CASE WHEN observed_days >= 90 THEN 1 ELSE 0 END)                      AS cases_observed_90d,
         sum(CASE WHEN observed_days >= 90 AND repurchase_days <= 90 THEN 1 ELSE 0 END) AS repurchased_90d,
         sum(voucher_cost)                                                                   AS voucher_cost,
         sum(redeemed_value)                                                                 AS redeemed_value,
         sum(CASE WHEN observed_days >= 90 THEN voucher_cost ELSE CAST(0 AS DECIMAL(18,2)) END) AS voucher_cost_observed_90d
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
