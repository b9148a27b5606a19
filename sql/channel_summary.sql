-- Per acquisition channel: customers, repeat buyers ($repeat_min_orders or more orders) and net GMV.
SELECT
  acquisition_channel,
  count(*)                                              AS customers,
  sum(CASE WHEN orders >= $repeat_min_orders THEN 1 ELSE 0 END) AS repeat_customers,
  sum(net_gmv)                                          AS net_gmv
FROM customer_orders
GROUP BY acquisition_channel
ORDER BY acquisition_channel
