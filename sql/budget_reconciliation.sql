-- Budget against actual. Definitions: docs/metrics/budget_reconciliation.md.
-- Every ledger entry is converted at its service month's rate and rounded half-even to cents
-- before summing; entries that cannot be mapped are in reconciliation_exceptions instead.
WITH latest_plan AS (
  SELECT month, program_id, cost_center, currency, planned_amount, version FROM budget_plan_current
),
plan AS (
  SELECT lp.month, lp.program_id, lp.cost_center,
         sum(round_half_even(lp.planned_amount * f.rate_to_reporting)) AS planned,
         max(lp.version)                                                AS plan_version
  FROM latest_plan lp
  JOIN programs p ON p.program_id = lp.program_id
  JOIN fx_rates f ON f.month = lp.month AND f.currency = lp.currency
  GROUP BY lp.month, lp.program_id, lp.cost_center
),
mapped AS (
  SELECT l.service_month AS month, l.program_id, l.cost_center, l.entry_type,
         round_half_even(l.amount * f.rate_to_reporting) AS converted
  FROM spend_ledger l
  JOIN programs p ON p.program_id = l.program_id
  JOIN fx_rates f ON f.month = l.service_month AND f.currency = l.currency
  JOIN (SELECT DISTINCT month, program_id, cost_center, currency FROM latest_plan) k
    ON k.month = l.service_month AND k.program_id = l.program_id
   AND k.cost_center = l.cost_center AND k.currency = l.currency
  WHERE l.service_month ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'
),
actual AS (
  SELECT month, program_id, cost_center,
         sum(converted)                                                  AS actual,
         sum(CASE WHEN entry_type = 'accrual' THEN 1 ELSE 0 END)         AS accrual_entries,
         sum(CASE WHEN entry_type = 'invoice' THEN 1 ELSE 0 END)         AS invoice_entries,
         sum(CASE WHEN entry_type = 'reversal' THEN 1 ELSE 0 END)        AS reversal_entries,
         sum(CASE WHEN entry_type = 'credit_note' THEN 1 ELSE 0 END)     AS credit_note_entries
  FROM mapped
  GROUP BY month, program_id, cost_center
),
roi AS (
  SELECT program_id, month, spend AS program_spend, incremental_revenue, roi
  FROM program_roi
),
cells AS (
  SELECT month, program_id, cost_center FROM plan
  UNION SELECT month, program_id, cost_center FROM actual
),
joined AS (
  SELECT c.month, c.program_id, pr.name AS program_name, c.cost_center,
         CAST(coalesce(p.planned, 0) AS DECIMAL(18,2))  AS planned,
         CAST(coalesce(a.actual, 0) AS DECIMAL(18,2))   AS actual,
         p.plan_version,
         coalesce(a.accrual_entries, 0)     AS accrual_entries,
         coalesce(a.invoice_entries, 0)     AS invoice_entries,
         coalesce(a.reversal_entries, 0)    AS reversal_entries,
         coalesce(a.credit_note_entries, 0) AS credit_note_entries
  FROM cells c
  LEFT JOIN plan p     ON p.month = c.month AND p.program_id = c.program_id AND p.cost_center = c.cost_center
  LEFT JOIN actual a   ON a.month = c.month AND a.program_id = c.program_id AND a.cost_center = c.cost_center
  LEFT JOIN programs pr ON pr.program_id = c.program_id
)
SELECT
  j.month,
  j.program_id,
  j.program_name,
  j.cost_center,
  $reporting_currency                                              AS reporting_currency,
  j.planned,
  j.actual,
  CAST(j.actual - j.planned AS DECIMAL(18,2))                      AS variance,
  round(CAST(j.actual - j.planned AS DOUBLE) / NULLIF(CAST(j.planned AS DOUBLE), 0) * 100, 2) AS variance_pct,
  CASE
    WHEN abs(j.actual - j.planned) * 100 <= j.planned * $tolerance_pct THEN 'on_plan'
    WHEN j.actual > j.planned THEN 'over'
    ELSE 'under'
  END                                                              AS status,
  j.plan_version,
  j.accrual_entries,
  j.invoice_entries,
  j.reversal_entries,
  j.credit_note_entries,
  r.program_spend,
  r.incremental_revenue                                            AS program_incremental_revenue,
  r.roi                                                            AS program_roi
FROM joined j
LEFT JOIN roi r ON r.program_id = j.program_id AND r.month = j.month
