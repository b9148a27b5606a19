-- The close-candidate report: for every month up to the as-of date, whether it is closed, and if
-- not, whether it is ready to close (the month is over and it has no exceptions).
-- Definitions: docs/metrics/budget_reconciliation.md.
WITH as_of AS (
  -- $as_of: the run's as-of day, a DATE the engine binds (this job's is `today`, the clock's day).
  SELECT CAST($as_of AS DATE) AS day
),
close_log AS (
  SELECT month, action, snapshot, at, actor,
         row_number() OVER (PARTITION BY month ORDER BY at DESC, snapshot DESC) AS n
  FROM _month_close
),
latest_close AS (
  SELECT month, action, snapshot, at, actor FROM close_log WHERE n = 1
),
reconciliation AS (
  SELECT month, sum(planned) AS planned, sum(actual) AS actual,
         sum(prior_period_adjustments) AS prior_period_adjustments
  FROM budget_reconciliation GROUP BY month
),
entries AS (
  SELECT service_month AS month, count(*) AS ledger_entries, max(posted_date) AS last_posted_date,
         sum(CASE WHEN prior_period THEN 1 ELSE 0 END) AS late_entries,
         sum(CASE WHEN prior_period THEN amount_reporting END) AS late_amount
  FROM budget_reconciliation_entries GROUP BY service_month
),
exceptions AS (
  SELECT month, count(*) AS open_items FROM reconciliation_exceptions GROUP BY month
),
months AS (
  SELECT month FROM reconciliation
  UNION SELECT month FROM entries WHERE month ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'
),
report AS (
  SELECT m.month,
         CASE WHEN c.action = 'close' THEN 'closed' ELSE 'open' END                AS status,
         CASE WHEN c.action = 'close' THEN c.snapshot END                          AS snapshot,
         c.at                                                                      AS last_action_at,
         c.actor                                                                   AS last_action_by,
         CAST(m.month || '-01' AS DATE) + INTERVAL '1 month' <= a.day              AS month_ended,
         CAST(coalesce(r.planned, 0) AS DECIMAL(18,2))                             AS planned,
         CAST(coalesce(r.actual, 0) AS DECIMAL(18,2))                              AS actual,
         CAST(coalesce(r.actual, 0) - coalesce(r.planned, 0) AS DECIMAL(18,2))     AS variance,
         coalesce(e.ledger_entries, 0)                                             AS ledger_entries,
         e.last_posted_date,
         coalesce(x.open_items, 0)                                                 AS open_items,
         coalesce(e.late_entries, 0)                                               AS late_entries,
         CAST(coalesce(e.late_amount, 0) AS DECIMAL(18,2))                         AS late_amount
  FROM as_of a
  CROSS JOIN months m
  LEFT JOIN latest_close c ON c.month = m.month
  LEFT JOIN reconciliation r ON r.month = m.month
  LEFT JOIN entries e ON e.month = m.month
  LEFT JOIN exceptions x ON x.month = m.month
  WHERE CAST(m.month || '-01' AS DATE) <= a.day
)
SELECT *,
       status = 'open' AND month_ended AND open_items = 0 AS ready_to_close,
       CASE WHEN status = 'closed'   THEN 'closed'
            WHEN NOT month_ended     THEN 'month not over'
            WHEN open_items = 1      THEN 'resolve 1 exception first'
            WHEN open_items > 1      THEN 'resolve ' || CAST(open_items AS VARCHAR) || ' exceptions first'
            ELSE 'ready to close' END                      AS next_step
FROM report
