-- One row per customer: signup at the first purchase (the sample is a cohort of first-time buyers
-- in the first quarter of 1997).
SELECT customer_id, min(order_ts) AS signup_ts, 'us' AS region, 'cdnow' AS acquisition_channel
FROM orders
GROUP BY customer_id
