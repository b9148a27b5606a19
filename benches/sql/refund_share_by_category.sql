SELECT o.category,
       count(DISTINCT o.order_id) AS orders,
       count(DISTINCT r.order_id) AS refunded_orders,
       sum(r.amount) AS refunded_amount
FROM orders o LEFT JOIN refunds r ON r.order_id = o.order_id
GROUP BY o.category
ORDER BY o.category
