-- Customer journey funnel per session month x traffic source. Definitions: docs/metrics/journey_funnel.md.
-- Each step is a subset of the previous one; each rate is the step over the previous step.
WITH completed AS (
  SELECT order_id,
         order_ts,
         delivered_ts,
         is_late,
         is_lost,
         is_refunded,
         is_returned,
         has_support_contact,
         min_rating,
         -- the customer's next completed order (ties on order_ts broken by order_id)
         lead(order_ts) OVER (PARTITION BY customer_id ORDER BY order_ts, order_id) AS next_order_ts
  FROM order_experience
  WHERE status = 'completed'
),
order_steps AS (
  -- one row per completed order: the cumulative funnel flags
  SELECT order_id,
         on_time,
         on_time AND clean                                AS clean,
         on_time AND clean AND reviewed                   AS reviewed,
         on_time AND clean AND reviewed AND repurchased   AS repurchased
  FROM (
    SELECT order_id,
           delivered_ts IS NOT NULL AND NOT is_lost AND NOT is_late                AS on_time,
           NOT is_refunded AND NOT is_returned AND NOT has_support_contact         AS clean,
           coalesce(min_rating >= 4, false)                                        AS reviewed,
           coalesce(
             CAST((extract(epoch FROM CAST(CAST(next_order_ts AS DATE) AS TIMESTAMP))
                   - extract(epoch FROM CAST(CAST(order_ts AS DATE) AS TIMESTAMP))) / 86400 AS BIGINT)
               <= $repurchase_window_days,
             false)                                                                AS repurchased
    FROM completed
  ) f
),
session_steps AS (
  SELECT to_char(s.session_ts, '%Y-%m')          AS session_month,
         s.traffic_source,
         o.order_id IS NOT NULL                  AS with_order,
         coalesce(o.on_time, false)              AS on_time,
         coalesce(o.clean, false)                AS clean,
         coalesce(o.reviewed, false)             AS reviewed,
         coalesce(o.repurchased, false)          AS repurchased
  FROM sessions s
  LEFT JOIN order_steps o ON o.order_id = s.converted_order_id
),
counts AS (
  SELECT session_month,
         traffic_source,
         count(*)                                          AS sessions,
         sum(CASE WHEN with_order  THEN 1 ELSE 0 END)      AS sessions_with_order,
         sum(CASE WHEN on_time     THEN 1 ELSE 0 END)      AS delivered_on_time,
         sum(CASE WHEN clean       THEN 1 ELSE 0 END)      AS no_refund_return_contact,
         sum(CASE WHEN reviewed    THEN 1 ELSE 0 END)      AS reviewed_4_plus,
         sum(CASE WHEN repurchased THEN 1 ELSE 0 END)      AS repurchased_90d
  FROM session_steps
  GROUP BY session_month, traffic_source
)
SELECT
  session_month,
  traffic_source,
  sessions,
  sessions_with_order,
  round(CAST(sessions_with_order AS DOUBLE) / NULLIF(sessions, 0), 4)                 AS order_rate,
  delivered_on_time,
  round(CAST(delivered_on_time AS DOUBLE) / NULLIF(sessions_with_order, 0), 4)        AS on_time_rate,
  no_refund_return_contact,
  round(CAST(no_refund_return_contact AS DOUBLE) / NULLIF(delivered_on_time, 0), 4)   AS clean_rate,
  reviewed_4_plus,
  round(CAST(reviewed_4_plus AS DOUBLE) / NULLIF(no_refund_return_contact, 0), 4)     AS review_rate,
  repurchased_90d,
  round(CAST(repurchased_90d AS DOUBLE) / NULLIF(reviewed_4_plus, 0), 4)              AS repurchase_rate
FROM counts
