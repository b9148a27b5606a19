WITH first_order AS (
  SELECT customer_id, min(order_ts) AS first_ts
  FROM orders WHERE status = 'completed' GROUP BY customer_id
)
SELECT date_trunc('month', f.first_ts) AS cohort_month,
       date_trunc('month', o.order_ts) AS activity_month,
       count(DISTINCT o.customer_id) AS active_customers,
       sum(o.gmv - o.discount) AS net_revenue
FROM orders o JOIN first_order f ON f.customer_id = o.customer_id
WHERE o.status = 'completed'
GROUP BY 1, 2
ORDER BY 1, 2
