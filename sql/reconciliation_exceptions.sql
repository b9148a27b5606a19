-- Entries and plan lines the reconciliation cannot use. Definitions: docs/metrics/budget_reconciliation.md.
-- Ledger entries come from budget_reconciliation_entries (reason priority there); plan lines are
-- checked here.
WITH latest_plan AS (
  SELECT month, program_id, cost_center, currency, planned_amount, version FROM budget_plan_current
),
plan_lines AS (
  SELECT lp.month, lp.program_id, lp.cost_center, lp.currency, lp.planned_amount, lp.version,
         lp.month ~ '^[0-9]{4}-(0[1-9]|1[0-2])$' AS valid_month,
         p.program_id IS NOT NULL                AS known_program,
         f.rate_to_reporting
  FROM latest_plan lp
  LEFT JOIN programs p ON p.program_id = lp.program_id
  LEFT JOIN fx_rates f ON f.month = lp.month AND f.currency = lp.currency
)
SELECT 'ledger'                      AS source,
       entry_id,
       service_month                 AS month,
       program_id,
       cost_center,
       vendor,
       invoice_id,
       entry_type,
       posted_date,
       currency,
       amount,
       amount_reporting,
       mapping                       AS reason
FROM budget_reconciliation_entries
WHERE mapping <> 'mapped'
UNION ALL
SELECT 'plan', CAST(NULL AS BIGINT), month, program_id, cost_center, CAST(NULL AS VARCHAR),
       CAST(NULL AS VARCHAR), 'plan_v' || CAST(version AS VARCHAR), CAST(NULL AS DATE), currency,
       planned_amount,
       CAST(round_half_even(planned_amount * rate_to_reporting) AS DECIMAL(18,2)),
       CASE WHEN NOT valid_month           THEN 'invalid_month'
            WHEN NOT known_program         THEN 'plan_for_unknown_program'
            ELSE 'plan_missing_fx_rate' END
FROM plan_lines
WHERE NOT (valid_month AND known_program AND rate_to_reporting IS NOT NULL)
