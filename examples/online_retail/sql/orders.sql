-- One order per non-cancellation invoice of a known customer.
-- gmv_exact keeps the 3-decimal sum for control totals; gmv is rounded to cents.
SELECT
  CAST(invoice_no AS BIGINT)                        AS order_id,
  customer_id,
  min(invoice_ts)                                   AS order_ts,
  min(country)                                      AS region,
  'retail'                                          AS category,
  CAST(sum(amount) AS DECIMAL(18,2))                AS gmv,
  sum(amount)                                       AS gmv_exact,
  CAST(0 AS DECIMAL(18,2))                          AS discount,
  CAST(0 AS DECIMAL(18,2))                          AS shipping_fee,
  CAST(NULL AS BIGINT)                              AS voucher_id,
  'completed'                                       AS status,
  count(*)                                          AS lines,
  to_char(min(invoice_ts), '%Y-%m-%d')              AS dt
FROM retail_lines
WHERE line_kind = 'order' AND customer_id IS NOT NULL
GROUP BY invoice_no, customer_id
