-- One row per order with its experience. Definitions: docs/metrics.md#order_experience.
-- Primary issue priority: lost_parcel > returned > refunded > late_delivery > support_contact > low_rating.
-- Incremental: the orders placed on days $start <= day < $end (DATEs the engine binds). Events
-- never land in a partition before their order's day, so `dt >= $start` prunes every event table.
WITH shipment AS (
  SELECT order_id,
         min(carrier)                 AS carrier,
         min(promised_ts)             AS promised_ts,
         max(delivered_ts)            AS delivered_ts,
         bool_or(status = 'lost')     AS is_lost
  FROM shipments
  WHERE CAST(dt AS DATE) >= $start
  GROUP BY order_id
),
refund AS (
  SELECT order_id, sum(amount) AS refund_amount, min(refund_ts) AS first_refund_ts
  FROM refunds
  WHERE CAST(dt AS DATE) >= $start
  GROUP BY order_id
),
return_request AS (
  SELECT order_id, min(requested_ts) AS return_requested_ts
  FROM returns
  WHERE CAST(dt AS DATE) >= $start
  GROUP BY order_id
),
review AS (
  SELECT order_id,
         min(rating) AS min_rating,
         min(CASE WHEN rating <= $low_rating_max THEN review_ts END) AS low_rating_ts
  FROM reviews
  WHERE CAST(dt AS DATE) >= $start
  GROUP BY order_id
),
-- Each order's first support ticket opened at or after the order. The contact window's end is
-- the same for all of an order's tickets, so the order has a support contact exactly when this
-- first ticket falls inside it (checked in `flagged`): no second pass over `base`.
first_ticket AS (
  SELECT t.order_id, min(t.created_ts) AS first_ticket_ts
  FROM cs_tickets t
  JOIN orders o ON o.order_id = t.order_id
  WHERE CAST(t.dt AS DATE) >= $start
    AND CAST(o.dt AS DATE) >= $start
    AND t.created_ts >= o.order_ts
  GROUP BY t.order_id
),
base AS (
  SELECT o.order_id, o.customer_id, o.order_ts, o.region, o.category,
         o.gmv, o.discount, o.voucher_id, o.status,
         o.status = 'cancelled'                                  AS is_cancelled,
         s.carrier, s.promised_ts, s.delivered_ts,
         s.order_id IS NOT NULL                                  AS is_shipped,
         coalesce(s.is_lost, false)                              AS is_lost,
         coalesce(s.delivered_ts > s.promised_ts, false)         AS is_late,
         coalesce(r.refund_amount, CAST(0 AS DECIMAL(18,2)))     AS refund_amount,
         r.first_refund_ts,
         rr.return_requested_ts,
         rv.min_rating,
         rv.low_rating_ts,
         ft.first_ticket_ts
  FROM orders o
  LEFT JOIN shipment s        ON s.order_id = o.order_id
  LEFT JOIN refund r          ON r.order_id = o.order_id
  LEFT JOIN return_request rr ON rr.order_id = o.order_id
  LEFT JOIN review rv         ON rv.order_id = o.order_id
  LEFT JOIN first_ticket ft   ON ft.order_id = o.order_id
  WHERE CAST(o.dt AS DATE) >= $start
    AND CAST(o.order_ts AS DATE) >= $start AND CAST(o.order_ts AS DATE) < $end
),
contacted AS (
  SELECT b.*,
         CASE
           WHEN extract(epoch FROM b.first_ticket_ts)
                <= extract(epoch FROM coalesce(b.delivered_ts, b.promised_ts, b.order_ts)) + $contact_window_days * 86400
           THEN b.first_ticket_ts
         END                                    AS first_contact_ts
  FROM base b
),
flagged AS (
  SELECT c.*,
         c.first_refund_ts IS NOT NULL          AS is_refunded,
         c.return_requested_ts IS NOT NULL      AS is_returned,
         c.first_contact_ts IS NOT NULL         AS has_support_contact,
         c.low_rating_ts IS NOT NULL            AS is_low_rating
  FROM contacted c
)
SELECT
  order_id,
  customer_id,
  order_ts,
  CAST(order_ts AS DATE)                                   AS order_date,
  to_char(order_ts, '%Y-%m')                               AS order_month,
  region,
  category,
  status,
  is_cancelled,
  gmv,
  discount,
  voucher_id,
  refund_amount,
  gmv - refund_amount                                      AS net_revenue,
  carrier,
  promised_ts,
  delivered_ts,
  is_late,
  CASE WHEN is_late THEN CAST(ceil((extract(epoch FROM delivered_ts) - extract(epoch FROM promised_ts)) / 86400.0) AS INT) END
                                                           AS days_late,
  is_lost,
  is_refunded,
  is_returned,
  has_support_contact,
  min_rating,
  is_low_rating,
  NOT is_cancelled AND (is_lost OR is_late OR is_refunded OR is_returned OR has_support_contact OR is_low_rating)
                                                           AS bad_experience,
  CASE
    WHEN is_cancelled        THEN 'cancelled'
    WHEN is_lost             THEN 'lost_parcel'
    WHEN is_returned         THEN 'returned'
    WHEN is_refunded         THEN 'refunded'
    WHEN is_late             THEN 'late_delivery'
    WHEN has_support_contact THEN 'support_contact'
    WHEN is_low_rating       THEN 'low_rating'
    ELSE 'none'
  END                                                      AS primary_issue,
  CASE
    WHEN is_cancelled        THEN NULL
    WHEN is_lost             THEN promised_ts
    WHEN is_returned         THEN return_requested_ts
    WHEN is_refunded         THEN first_refund_ts
    WHEN is_late             THEN promised_ts
    WHEN has_support_contact THEN first_contact_ts
    WHEN is_low_rating       THEN low_rating_ts
  END                                                      AS issue_ts,
  NOT is_cancelled AND delivered_ts IS NOT NULL AND NOT is_late AND NOT is_refunded
    AND NOT is_returned AND NOT has_support_contact AND NOT is_low_rating
                                                           AS perfect_order
FROM flagged
