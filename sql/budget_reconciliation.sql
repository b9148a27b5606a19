-- Budget against actual. Definitions: docs/metrics/budget_reconciliation.md.
-- Actuals are the mapped entries of budget_reconciliation_entries (each converted at its service
-- month's rate and rounded half-even to cents, then summed); entries that cannot be mapped are in
-- reconciliation_exceptions instead. Entries that arrived after their month was closed are
-- prior-period adjustments of the month they are reconciled in, apart from its own actual.
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
actual AS (
  SELECT reconciled_month AS month, program_id, cost_center,
         sum(CASE WHEN NOT prior_period THEN amount_reporting END)                       AS actual,
         sum(CASE WHEN NOT prior_period AND entry_type = 'accrual' THEN 1 ELSE 0 END)     AS accrual_entries,
         sum(CASE WHEN NOT prior_period AND entry_type = 'invoice' THEN 1 ELSE 0 END)     AS invoice_entries,
         sum(CASE WHEN NOT prior_period AND entry_type = 'reversal' THEN 1 ELSE 0 END)    AS reversal_entries,
         sum(CASE WHEN NOT prior_period AND entry_type = 'credit_note' THEN 1 ELSE 0 END) AS credit_note_entries,
         sum(CASE WHEN prior_period THEN amount_reporting END)                           AS prior_period_adjustments,
         sum(CASE WHEN prior_period THEN 1 ELSE 0 END)                                   AS prior_period_entries,
         array_to_string(array_sort(array_distinct(
           array_agg(service_month) FILTER (WHERE prior_period))), ',')                  AS adjusted_closed_months
  FROM budget_reconciliation_entries
  WHERE mapping = 'mapped'
  GROUP BY reconciled_month, program_id, cost_center
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
         coalesce(a.credit_note_entries, 0) AS credit_note_entries,
         CAST(coalesce(a.prior_period_adjustments, 0) AS DECIMAL(18,2)) AS prior_period_adjustments,
         coalesce(a.prior_period_entries, 0) AS prior_period_entries,
         nullif(a.adjusted_closed_months, '') AS adjusted_closed_months
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
  CAST(round_half_even((j.actual - j.planned) * 100 / NULLIF(j.planned, 0)) AS DECIMAL(18,2)) AS variance_pct,
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
  j.prior_period_adjustments,
  j.prior_period_entries,
  j.adjusted_closed_months,
  r.program_spend,
  r.incremental_revenue                                            AS program_incremental_revenue,
  r.roi                                                            AS program_roi
FROM joined j
LEFT JOIN roi r ON r.program_id = j.program_id AND r.month = j.month
