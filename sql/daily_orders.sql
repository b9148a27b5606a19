-- Completed orders and GMV per day and region.
SELECT
  substr(dt, 1, 7)               AS order_month,
  CAST(dt AS DATE)               AS order_date,
  region,
  count(*)                       AS orders,
  count(DISTINCT customer_id)    AS customers,
  sum(gmv)                       AS gmv,
  sum(gmv - discount)            AS net_gmv
FROM orders
WHERE status = 'completed'
GROUP BY dt, region
ORDER BY order_date, region
