SELECT CAST(NULL AS BIGINT) AS refund_id, CAST(NULL AS BIGINT) AS order_id,
       CAST(NULL AS BIGINT) AS customer_id,
       arrow_cast(NULL, 'Timestamp(Microsecond, Some("UTC"))') AS refund_ts,
       CAST(NULL AS DECIMAL(18,2)) AS amount, CAST(NULL AS VARCHAR) AS reason,
       CAST(NULL AS VARCHAR) AS dt
WHERE false
