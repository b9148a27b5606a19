-- Predicted lifetime value per customer from the fitted models. Definitions: docs/metrics/clv.md.
-- Times go into the models in clv_model's time unit; horizons are given in days and months.
WITH model AS (
  SELECT max(r) AS r, max(alpha) AS alpha, max(a) AS a, max(b) AS b,
         max(p) AS p, max(q) AS q, max(gamma) AS gamma,
         max(CASE time_unit WHEN 'day' THEN 1.0 WHEN 'week' THEN 7.0 END) AS days
  FROM clv_model
),
history AS (
  SELECT s.customer_id, s.segment, s.historical_ltv,
         CAST(s.frequency AS DOUBLE)                                  AS x,
         CAST(s.recency AS DOUBLE) / m.days                           AS t_x,
         CAST(s.t AS DOUBLE) / m.days                                 AS big_t,
         -- A customer without a positive repeat value is scored at 0 (shrunk to the population).
         greatest(CAST(coalesce(s.repeat_monetary_value, 0) AS DOUBLE), 0.0) AS mean_value,
         m.*
  FROM customer_summary s
  CROSS JOIN model m
),
-- The BG/NBD scores depend on (x, t_x, T) alone: computed once per distinct history (a tenth as
-- many as customers at scale), then joined back.
purchases AS (
  SELECT x, t_x, big_t,
         bgnbd_p_alive(r, alpha, a, b, x, t_x, big_t)                          AS p_alive,
         bgnbd_expected_purchases(r, alpha, a, b, x, t_x, big_t, 90 / days)    AS expected_purchases_90d,
         bgnbd_expected_purchases(r, alpha, a, b, x, t_x, big_t, 180 / days)   AS expected_purchases_180d,
         bgnbd_expected_purchases(r, alpha, a, b, x, t_x, big_t, 365 / days)   AS expected_purchases_365d,
         bgnbd_discounted_purchases(r, alpha, a, b, x, t_x, big_t, 6,
             $monthly_discount_rate, 30.4375 / days)                          AS discounted_purchases_6m,
         bgnbd_discounted_purchases(r, alpha, a, b, x, t_x, big_t, 12,
             $monthly_discount_rate, 30.4375 / days)                          AS discounted_purchases_12m
  FROM (SELECT DISTINCT x, t_x, big_t, r, alpha, a, b, days FROM history)
),
valued AS (
  SELECT h.customer_id, h.segment, h.historical_ltv, p.*,
         gamma_gamma_expected_value(h.p, h.q, h.gamma, h.x, h.mean_value)     AS expected_average_order_value
  FROM history h
  JOIN purchases p ON p.x = h.x AND p.t_x = h.t_x AND p.big_t = h.big_t
),
-- CLV = margin x the published value per purchase x the discounted purchases, exact in decimal
-- and rounded half-even to the cent, so that it ties out to expected_average_order_value.
-- Materialized: ranked counts it once and ranks it once (count(*) OVER () would hold every row in
-- one batch outside the memory pool; docs/jobs.md#memory).
scored AS MATERIALIZED (
  SELECT customer_id, segment, historical_ltv, p_alive,
         expected_purchases_90d, expected_purchases_180d, expected_purchases_365d,
         expected_average_order_value,
         CAST(round_half_even(expected_average_order_value * CAST($margin AS DECIMAL(6,4))
              * CAST(discounted_purchases_6m AS DECIMAL(20,10))) AS DECIMAL(18,2))  AS predicted_clv_6m,
         CAST(round_half_even(expected_average_order_value * CAST($margin AS DECIMAL(6,4))
              * CAST(discounted_purchases_12m AS DECIMAL(20,10))) AS DECIMAL(18,2)) AS predicted_clv_12m
  FROM valued
),
ranked AS (
  SELECT scored.*,
         row_number() OVER (ORDER BY predicted_clv_12m DESC NULLS LAST, customer_id) AS n,
         c.customers
  FROM scored
  CROSS JOIN (SELECT count(*) AS customers FROM scored) c
)
SELECT customer_id, segment, p_alive,
       expected_purchases_90d, expected_purchases_180d, expected_purchases_365d,
       expected_average_order_value, predicted_clv_6m, predicted_clv_12m,
       -- By predicted 12-month CLV: the top 10%, the next 20%, the next 30%, the rest.
       CASE WHEN predicted_clv_12m IS NULL THEN NULL
            WHEN n <= 0.1 * customers THEN 'top'
            WHEN n <= 0.3 * customers THEN 'high'
            WHEN n <= 0.6 * customers THEN 'medium'
            ELSE 'low' END                                                       AS value_tier,
       historical_ltv
FROM ranked
