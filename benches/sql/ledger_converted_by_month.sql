-- The finance control total: every ledger entry converted at its service month's rate, rounded
-- half-even to cents, summed per service month and currency (DuckDB: round_even, as a macro).
SELECT l.service_month, l.currency, count(*) AS entries,
       sum(round_half_even(l.amount * f.rate_to_reporting)) AS converted
FROM spend_ledger l
LEFT JOIN fx_rates f ON f.month = l.service_month AND f.currency = l.currency
GROUP BY l.service_month, l.currency
ORDER BY l.service_month, l.currency
