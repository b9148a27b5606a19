-- Every ledger entry with its mapping, its amount in the reporting currency and the month it is
-- reconciled in. Definitions: docs/metrics/budget_reconciliation.md.
-- Mapping priority: invalid_month > unknown_program > missing_fx_rate > currency_not_in_plan.
-- An entry for a closed month that is not in that month's snapshot arrived after the close: it
-- is a prior-period adjustment, reconciled in the first open month after its service month.
WITH plan_keys AS (
  SELECT DISTINCT month, program_id, cost_center, currency FROM budget_plan_current
),
-- Months closed with this table frozen (a month closed before it had [close] counts as open).
closed AS (
  SELECT month, snapshot FROM _closed_months
  WHERE array_has(string_to_array(frozen_tables, ','), 'budget_reconciliation_entries')
),
frozen AS (
  SELECT e.record_id AS entry_id, e.closed_month
  FROM _closed_entries e
  JOIN closed c ON c.month = e.closed_month AND c.snapshot = e.snapshot
  WHERE e.table_name = 'budget_reconciliation_entries'
),
-- The month after each closed month, where it is open: every first open month is one of these.
open_after_close AS (
  SELECT to_char(CAST(c.month || '-01' AS DATE) + INTERVAL '1 month', '%Y-%m') AS month
  FROM closed c
  EXCEPT SELECT month FROM closed
),
first_open AS (
  SELECT c.month AS closed_month, min(o.month) AS first_open_month
  FROM closed c JOIN open_after_close o ON o.month > c.month
  GROUP BY c.month
),
placed AS (
  SELECT l.*,
         CASE WHEN fr.entry_id IS NOT NULL THEN fr.closed_month
              WHEN fo.closed_month IS NOT NULL THEN fo.first_open_month
              ELSE l.service_month END AS reconciled_month
  FROM spend_ledger l
  LEFT JOIN frozen fr ON fr.entry_id = l.entry_id
  LEFT JOIN first_open fo ON fo.closed_month = l.service_month
)
SELECT l.entry_id,
       l.posted_date,
       l.service_month,
       l.reconciled_month,
       l.reconciled_month <> l.service_month              AS prior_period,
       l.program_id,
       l.cost_center,
       l.vendor,
       l.invoice_id,
       l.entry_type,
       l.currency,
       l.amount,
       f.rate_to_reporting,
       CAST(round_half_even(l.amount * f.rate_to_reporting) AS DECIMAL(18,2)) AS amount_reporting,
       CASE WHEN NOT l.service_month ~ '^[0-9]{4}-(0[1-9]|1[0-2])$' THEN 'invalid_month'
            WHEN p.program_id IS NULL                              THEN 'unknown_program'
            WHEN f.rate_to_reporting IS NULL                       THEN 'missing_fx_rate'
            WHEN k.month IS NULL                                   THEN 'currency_not_in_plan'
            ELSE 'mapped' END                              AS mapping
FROM placed l
LEFT JOIN programs p ON p.program_id = l.program_id
LEFT JOIN fx_rates f ON f.month = l.service_month AND f.currency = l.currency
LEFT JOIN plan_keys k
  ON k.month = l.service_month AND k.program_id = l.program_id
 AND k.cost_center = l.cost_center AND k.currency = l.currency
