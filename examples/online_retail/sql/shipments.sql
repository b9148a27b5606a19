SELECT CAST(NULL AS BIGINT) AS order_id, CAST(NULL AS VARCHAR) AS carrier,
       arrow_cast(NULL, 'Timestamp(Microsecond, Some("UTC"))') AS shipped_ts,
       arrow_cast(NULL, 'Timestamp(Microsecond, Some("UTC"))') AS promised_ts,
       arrow_cast(NULL, 'Timestamp(Microsecond, Some("UTC"))') AS delivered_ts,
       CAST(NULL AS VARCHAR) AS status,
       CAST(NULL AS VARCHAR) AS dt
WHERE false
