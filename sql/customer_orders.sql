-- Per customer: first and last completed order, order count and net GMV.
SELECT
  c.customer_id,
  c.acquisition_channel,
  c.region,
  min(o.order_ts)               AS first_order_ts,
  max(o.order_ts)               AS last_order_ts,
  count(o.order_id)             AS orders,
  coalesce(sum(o.gmv - o.discount), CAST(0 AS DECIMAL(18,2))) AS net_gmv
FROM customers c
LEFT JOIN orders o
  ON o.customer_id = c.customer_id AND o.status = 'completed'
GROUP BY c.customer_id, c.acquisition_channel, c.region
ORDER BY c.customer_id
