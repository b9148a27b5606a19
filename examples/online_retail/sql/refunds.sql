-- One refund per C invoice of a known customer. The data does not say which invoice a
-- cancellation reverses: it is linked to the customer's latest order at or before it (NULL when
-- the customer has none in the data).
WITH cancellation AS (
  SELECT invoice_no, customer_id, min(invoice_ts) AS refund_ts, -sum(amount) AS amount_exact, count(*) AS lines
  FROM retail_lines
  WHERE line_kind = 'refund' AND customer_id IS NOT NULL
  GROUP BY invoice_no, customer_id
),
linked AS (
  SELECT c.invoice_no, last_value(o.order_id ORDER BY o.order_ts, o.order_id) AS order_id
  FROM cancellation c
  JOIN orders o ON o.customer_id = c.customer_id AND o.order_ts <= c.refund_ts
  GROUP BY c.invoice_no
)
SELECT
  CAST(substr(c.invoice_no, 2) AS BIGINT)   AS refund_id,
  l.order_id,
  c.customer_id,
  c.refund_ts,
  CAST(c.amount_exact AS DECIMAL(18,2))     AS amount,
  c.amount_exact,
  c.lines,
  'cancellation'                            AS reason,
  to_char(c.refund_ts, '%Y-%m-%d')          AS dt
FROM cancellation c
LEFT JOIN linked l ON l.invoice_no = c.invoice_no
