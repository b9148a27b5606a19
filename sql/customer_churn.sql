-- One row per customer with at least one completed order on or before the as-of date, with
-- their churn status on that date. Definitions: docs/metrics/customer_churn.md.
-- status: active (days < at_risk_days), at_risk (at_risk_days <= days < churn_days),
-- churned (days >= churn_days), where days = as_of_date - last completed order date.
WITH params AS (
  -- 'latest' -> the latest order day in the data (any order status). Written as an aggregate
  -- over order_experience rather than CASE ... ELSE CAST($as_of AS DATE) (the constant folder
  -- casts 'latest' to a date and fails) or a scalar subquery (its plan root reports no row
  -- count, so the run ledger would record rows_written = 0).
  SELECT coalesce(CAST(CASE WHEN $as_of = 'latest' THEN NULL ELSE $as_of END AS DATE),
                  max(order_date))     AS as_of_date,
         CAST($at_risk_days AS BIGINT) AS at_risk_days,
         CAST($churn_days AS BIGINT)   AS churn_days
  FROM order_experience
),
buyer AS (
  SELECT oe.customer_id,
         min(oe.order_date) AS first_order_date,
         max(oe.order_date) AS last_order_date
  FROM params p
  CROSS JOIN order_experience oe
  WHERE oe.status = 'completed'
    AND oe.order_date <= p.as_of_date
  GROUP BY oe.customer_id
),
scored AS (
  SELECT b.customer_id,
         b.first_order_date,
         b.last_order_date,
         p.as_of_date,
         p.at_risk_days,
         p.churn_days,
         CAST((extract(epoch FROM CAST(p.as_of_date AS TIMESTAMP))
               - extract(epoch FROM CAST(b.last_order_date AS TIMESTAMP))) / 86400 AS BIGINT)
                                       AS days_since_last_order
  FROM params p
  CROSS JOIN buyer b
)
SELECT
  s.customer_id,
  c.acquisition_channel,
  c.region,
  s.as_of_date,
  s.first_order_date,
  s.last_order_date,
  s.days_since_last_order,
  CASE
    WHEN s.days_since_last_order >= s.churn_days   THEN 'churned'
    WHEN s.days_since_last_order >= s.at_risk_days THEN 'at_risk'
    ELSE 'active'
  END                                  AS status,
  s.at_risk_days,
  s.churn_days
FROM scored s
LEFT JOIN customers c ON c.customer_id = s.customer_id
