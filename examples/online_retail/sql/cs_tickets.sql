SELECT CAST(NULL AS BIGINT) AS ticket_id, CAST(NULL AS BIGINT) AS customer_id, CAST(NULL AS BIGINT) AS order_id,
       arrow_cast(NULL, 'Timestamp(Microsecond, Some("UTC"))') AS created_ts,
       arrow_cast(NULL, 'Timestamp(Microsecond, Some("UTC"))') AS resolved_ts,
       CAST(NULL AS VARCHAR) AS category, CAST(NULL AS INT) AS csat,
       CAST(NULL AS VARCHAR) AS dt
WHERE false
