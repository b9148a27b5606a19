-- One row per bad-experience case: compensated or not, what it cost, and when the customer came
-- back. Definitions: docs/metrics/experience_recovery.md.
WITH as_of AS (
  -- $as_of: the run's as-of day, a DATE the engine binds; the window ends at its midnight.
  SELECT extract(epoch FROM CAST(CAST($as_of AS DATE) AS TIMESTAMP)) + 86400 AS as_of_end
),
cases AS MATERIALIZED (
  SELECT order_id, customer_id, primary_issue AS issue_type, issue_ts,
         extract(epoch FROM issue_ts) AS issue_epoch
  FROM order_experience
  WHERE bad_experience AND issue_ts IS NOT NULL
),
recovery_vouchers AS (
  SELECT v.customer_id, extract(epoch FROM v.issued_ts) AS issued_epoch, v.face_value,
         v.redeemed_order_id IS NOT NULL AS redeemed
  FROM vouchers v
  JOIN programs p ON p.program_id = v.program_id AND p.kind = 'recovery'
),
compensation AS (
  SELECT c.order_id,
         sum(v.face_value)                                                   AS voucher_cost,
         sum(CASE WHEN v.redeemed THEN v.face_value ELSE CAST(0 AS DECIMAL(18,2)) END) AS redeemed_value
  FROM cases c
  JOIN recovery_vouchers v
    ON v.customer_id = c.customer_id
   AND v.issued_epoch >= c.issue_epoch
   AND v.issued_epoch <= c.issue_epoch + $compensation_window_days * 86400
  GROUP BY c.order_id
),
next_order AS (
  SELECT c.order_id, min(extract(epoch FROM o.order_ts)) AS next_epoch
  FROM cases c
  JOIN order_experience o
    ON o.customer_id = c.customer_id AND NOT o.is_cancelled AND o.order_ts > c.issue_ts
  GROUP BY c.order_id
)
SELECT c.order_id, c.customer_id, c.issue_type, c.issue_ts,
       to_char(c.issue_ts, '%Y-%m')                                        AS issue_month,
       m.order_id IS NOT NULL                                              AS compensated,
       CAST(coalesce(m.voucher_cost, 0) AS DECIMAL(18,2))                  AS voucher_cost,
       CAST(coalesce(m.redeemed_value, 0) AS DECIMAL(18,2))                AS redeemed_value,
       (a.as_of_end - c.issue_epoch) / 86400.0                             AS observed_days,
       (n.next_epoch - c.issue_epoch) / 86400.0                            AS repurchase_days
FROM as_of a
CROSS JOIN cases c
LEFT JOIN compensation m ON m.order_id = c.order_id
LEFT JOIN next_order n   ON n.order_id = c.order_id
WHERE c.issue_epoch < a.as_of_end
