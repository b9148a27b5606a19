-- One row per customer with at least one completed order on or before the as-of date, with
-- their churn status on that date. Definitions: docs/metrics/customer_churn.md.
-- status: active (days < at_risk_days), at_risk (at_risk_days <= days < churn_days),
-- churned (days >= churn_days), where days = as_of_date - last completed order date.
WITH params AS (
  -- $as_of: the run's as-of day, a DATE the engine binds (`latest` is resolved before the job).
  SELECT CAST($as_of AS DATE)          AS as_of_date,
         CAST($at_risk_days AS BIGINT) AS at_risk_days,
         CAST($churn_days AS BIGINT)   AS churn_days
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
