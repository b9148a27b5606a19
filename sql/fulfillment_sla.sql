-- Fulfillment SLA per order month x region x carrier. Definitions: docs/metrics/fulfillment_sla.md.
-- Grain: shipped (has a shipment row), completed orders, grouped by the month the order was placed.
-- Orders without a shipment, and cancelled orders, are not in this table.
-- Percentiles: percentile_cont (exact, linear interpolation between the two nearest values, as
-- PostgreSQL's percentile_cont), rounded to 2 decimals; NULL when the group has no value.
-- percentile_cont keeps every value of a group: the shipped orders reach it in group order, so
-- it holds one group's values at a time (docs/jobs.md#memory).
-- Incremental: the order months $start <= month < $end (DATEs on the 1st, bound by the engine).
WITH shipped AS MATERIALIZED (
  SELECT order_id,
         order_month,
         region,
         carrier,
         NOT is_lost AND delivered_ts IS NOT NULL AND delivered_ts <= promised_ts  AS is_on_time,
         NOT is_lost AND is_late                                                   AS is_late,
         is_lost,
         -- days from order to delivery, delivered (not lost) orders only
         CASE WHEN delivered_ts IS NOT NULL AND NOT is_lost
              THEN (extract(epoch FROM delivered_ts) - extract(epoch FROM order_ts)) / 86400.0
         END                                                                       AS delivery_days,
         -- refunds are timed from delivery, or from the promised date when not delivered
         coalesce(delivered_ts, promised_ts)                                       AS refund_anchor_ts
  FROM order_experience
  WHERE carrier IS NOT NULL          -- shipped: order_experience has a carrier only with a shipment
    AND status = 'completed'
    AND order_date >= $start AND order_date < $end
),
in_groups AS (
  -- sorted by group (the sort spills), so the aggregate below streams one group at a time
  SELECT order_month, region, carrier, is_on_time, is_late, is_lost, delivery_days,
         row_number() OVER (PARTITION BY order_month, region, carrier)        AS group_seq
  FROM shipped
),
delivery AS (
  SELECT order_month, region, carrier,
         count(group_seq)                                                   AS shipped_orders,
         sum(CASE WHEN is_on_time THEN 1 ELSE 0 END)                        AS on_time_orders,
         sum(CASE WHEN is_late THEN 1 ELSE 0 END)                           AS late_orders,
         sum(CASE WHEN is_lost THEN 1 ELSE 0 END)                           AS lost_orders,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY delivery_days)         AS delivery_days_p50,
         percentile_cont(0.9) WITHIN GROUP (ORDER BY delivery_days)         AS delivery_days_p90
  FROM in_groups
  GROUP BY order_month, region, carrier
),
refund_stats AS (
  -- one row per refund, joined to its (one-row-per-order) shipped order
  SELECT s.order_month, s.region, s.carrier,
         count(*)                                                           AS refunds,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY
           (extract(epoch FROM r.refund_ts) - extract(epoch FROM s.refund_anchor_ts)) / 86400.0)
                                                                            AS refund_processing_days_p50,
         percentile_cont(0.9) WITHIN GROUP (ORDER BY
           (extract(epoch FROM r.refund_ts) - extract(epoch FROM s.refund_anchor_ts)) / 86400.0)
                                                                            AS refund_processing_days_p90
  FROM refunds r
  JOIN shipped s ON s.order_id = r.order_id
  WHERE CAST(r.dt AS DATE) >= $start   -- never before the order: prunes older partitions
  GROUP BY s.order_month, s.region, s.carrier
),
ticket_stats AS (
  -- one row per support ticket linked to a shipped order (tickets without an order_id never match)
  SELECT s.order_month, s.region, s.carrier,
         count(*)                                                           AS tickets,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY
           (extract(epoch FROM t.resolved_ts) - extract(epoch FROM t.created_ts)) / 3600.0)
                                                                            AS resolution_hours_p50,
         percentile_cont(0.9) WITHIN GROUP (ORDER BY
           (extract(epoch FROM t.resolved_ts) - extract(epoch FROM t.created_ts)) / 3600.0)
                                                                            AS resolution_hours_p90,
         count(t.csat)                                                      AS csat_responses,
         avg(CAST(t.csat AS DOUBLE))                                        AS mean_csat
  FROM cs_tickets t
  JOIN shipped s ON s.order_id = t.order_id
  WHERE CAST(t.dt AS DATE) >= $start
  GROUP BY s.order_month, s.region, s.carrier
)
SELECT
  d.order_month,
  d.region,
  d.carrier,
  d.shipped_orders,
  d.on_time_orders,
  d.late_orders,
  d.lost_orders,
  round(CAST(d.on_time_orders AS DOUBLE) / NULLIF(d.shipped_orders, 0), 4)   AS on_time_rate,
  round(CAST(d.late_orders AS DOUBLE) / NULLIF(d.shipped_orders, 0), 4)      AS late_rate,
  round(CAST(d.lost_orders AS DOUBLE) / NULLIF(d.shipped_orders, 0), 4)      AS lost_rate,
  round(d.delivery_days_p50, 2)                                              AS delivery_days_p50,
  round(d.delivery_days_p90, 2)                                              AS delivery_days_p90,
  coalesce(r.refunds, 0)                                                     AS refunds,
  round(r.refund_processing_days_p50, 2)                                     AS refund_processing_days_p50,
  round(r.refund_processing_days_p90, 2)                                     AS refund_processing_days_p90,
  coalesce(t.tickets, 0)                                                     AS tickets,
  round(t.resolution_hours_p50, 2)                                           AS resolution_hours_p50,
  round(t.resolution_hours_p90, 2)                                           AS resolution_hours_p90,
  coalesce(t.csat_responses, 0)                                              AS csat_responses,
  round(t.mean_csat, 2)                                                      AS mean_csat
FROM delivery d
LEFT JOIN refund_stats r
  ON r.order_month = d.order_month AND r.region = d.region AND r.carrier = d.carrier
LEFT JOIN ticket_stats t
  ON t.order_month = d.order_month AND t.region = d.region AND t.carrier = d.carrier
