-- Every raw line, kept: kind, exact amount (quantity x unit_price at 3 decimals) and UTC time.
-- invoice_ts is UK local time without a zone: converted from Europe/London to UTC.
SELECT
  invoice_no,
  stock_code,
  description,
  quantity,
  unit_price,
  CAST(quantity AS DECIMAL(10,0)) * unit_price                        AS amount,
  arrow_cast(arrow_cast(invoice_ts, 'Timestamp(Microsecond, Some("Europe/London"))'),
             'Timestamp(Microsecond, Some("UTC"))')                   AS invoice_ts,
  customer_id,
  country,
  CASE WHEN invoice_no LIKE 'C%' THEN 'refund'
       WHEN invoice_no LIKE 'A%' THEN 'adjustment'
       ELSE 'order' END                                               AS line_kind
FROM invoice_lines
