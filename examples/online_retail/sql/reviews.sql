SELECT CAST(NULL AS BIGINT) AS order_id, CAST(NULL AS BIGINT) AS customer_id,
       arrow_cast(NULL, 'Timestamp(Microsecond, Some("UTC"))') AS review_ts,
       CAST(NULL AS INT) AS rating,
       CAST(NULL AS VARCHAR) AS dt
WHERE false
