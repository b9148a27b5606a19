SELECT s.carrier,
       date_trunc('month', o.order_ts) AS month,
       count(*) AS shipped,
       sum(CASE WHEN s.delivered_ts > s.promised_ts THEN 1 ELSE 0 END) AS late,
       sum(o.gmv) AS gmv
FROM orders o
JOIN shipments s ON s.order_id = o.order_id
WHERE o.status = 'completed'
GROUP BY s.carrier, date_trunc('month', o.order_ts)
ORDER BY carrier, month
