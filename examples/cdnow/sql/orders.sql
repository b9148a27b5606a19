-- One completed order per purchase line, at midnight UTC of its day (the data has no time).
-- Same-day purchases stay separate orders; the marts count purchase days, so they merge there.
SELECT
  CAST(row_number() OVER (ORDER BY customer_id, purchase_date, dollar_value, cds) AS BIGINT) AS order_id,
  customer_id,
  arrow_cast(to_timestamp(purchase_date, '%Y%m%d'), 'Timestamp(Microsecond, Some("UTC"))') AS order_ts,
  'us'                                              AS region,
  'music'                                           AS category,
  CAST(dollar_value AS DECIMAL(18,2))               AS gmv,
  CAST(0 AS DECIMAL(18,2))                          AS discount,
  CAST(0 AS DECIMAL(18,2))                          AS shipping_fee,
  CAST(NULL AS BIGINT)                              AS voucher_id,
  'completed'                                       AS status,
  cds,
  concat(substr(purchase_date, 1, 4), '-', substr(purchase_date, 5, 2), '-', substr(purchase_date, 7, 2)) AS dt
FROM cdnow_purchases
