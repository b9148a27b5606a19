SELECT CAST(NULL AS BIGINT) AS return_id, CAST(NULL AS BIGINT) AS order_id,
       arrow_cast(NULL, 'Timestamp(Microsecond, Some("UTC"))') AS requested_ts,
       arrow_cast(NULL, 'Timestamp(Microsecond, Some("UTC"))') AS received_ts,
       CAST(NULL AS VARCHAR) AS reason, CAST(NULL AS VARCHAR) AS status,
       CAST(NULL AS VARCHAR) AS dt
WHERE false
