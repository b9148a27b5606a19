-- Program ROI. Definitions: docs/metrics/program_roi.md.
WITH as_of AS (
  -- $as_of: the run's as-of day, a DATE the engine binds (`latest` is resolved before the job).
  SELECT CAST($as_of AS DATE) AS as_of_date
),
first_touch AS (
  -- A customer's first touch per program, month and arm.
  SELECT program_id, to_char(touch_ts, '%Y-%m') AS month, customer_id, is_holdout,
         min(touch_ts) AS touch_ts
  FROM touches
  GROUP BY program_id, to_char(touch_ts, '%Y-%m'), customer_id, is_holdout
),
attributed AS (
  SELECT t.program_id, t.month, t.customer_id, t.is_holdout,
         count(o.order_id)                                            AS orders,
         coalesce(sum(o.net_revenue), CAST(0 AS DECIMAL(18,2)))       AS net_revenue
  FROM first_touch t
  LEFT JOIN order_experience o
    ON o.customer_id = t.customer_id
   AND NOT o.is_cancelled
   AND o.order_ts > t.touch_ts
   AND extract(epoch FROM o.order_ts) <= extract(epoch FROM t.touch_ts) + $attribution_window_days * 86400
  GROUP BY t.program_id, t.month, t.customer_id, t.is_holdout
),
arms AS MATERIALIZED (
  SELECT program_id, month,
         sum(CASE WHEN NOT is_holdout THEN 1 ELSE 0 END)                              AS treated_customers,
         sum(CASE WHEN is_holdout THEN 1 ELSE 0 END)                                  AS holdout_customers,
         sum(CASE WHEN NOT is_holdout AND orders > 0 THEN 1 ELSE 0 END)               AS treated_repurchased,
         sum(CASE WHEN is_holdout AND orders > 0 THEN 1 ELSE 0 END)                   AS holdout_repurchased,
         sum(CASE WHEN NOT is_holdout THEN orders ELSE 0 END)                         AS attributed_orders,
         sum(CASE WHEN NOT is_holdout THEN net_revenue ELSE CAST(0 AS DECIMAL(18,2)) END) AS attributed_net_revenue,
         sum(CASE WHEN is_holdout THEN orders ELSE 0 END)                             AS holdout_orders,
         sum(CASE WHEN is_holdout THEN net_revenue ELSE CAST(0 AS DECIMAL(18,2)) END) AS holdout_net_revenue
  FROM attributed
  GROUP BY program_id, month
),
marketing AS MATERIALIZED (
  SELECT program_id, to_char(spend_date, '%Y-%m') AS month, sum(amount) AS marketing_spend
  FROM marketing_spend
  GROUP BY program_id, to_char(spend_date, '%Y-%m')
),
redeemed AS MATERIALIZED (
  SELECT program_id, to_char(issued_ts, '%Y-%m') AS month, sum(face_value) AS redeemed_voucher_value
  FROM vouchers
  WHERE redeemed_order_id IS NOT NULL
  GROUP BY program_id, to_char(issued_ts, '%Y-%m')
),
-- arms, marketing and redeemed are read twice (the cells, then the join): materialized, each is
-- computed once, the touches' attribution join included.
cells AS (
  SELECT program_id, month FROM arms
  UNION SELECT program_id, month FROM marketing
  UNION SELECT program_id, month FROM redeemed
),
joined AS (
  SELECT c.program_id, p.name AS program_name, p.kind AS program_kind, c.month,
         CAST(coalesce(m.marketing_spend, 0) AS DECIMAL(18,2))          AS marketing_spend,
         CAST(coalesce(r.redeemed_voucher_value, 0) AS DECIMAL(18,2))   AS redeemed_voucher_value,
         coalesce(a.treated_customers, 0)     AS treated_customers,
         coalesce(a.holdout_customers, 0)     AS holdout_customers,
         coalesce(a.treated_repurchased, 0)   AS treated_repurchased,
         coalesce(a.holdout_repurchased, 0)   AS holdout_repurchased,
         coalesce(a.attributed_orders, 0)     AS attributed_orders,
         CAST(coalesce(a.attributed_net_revenue, 0) AS DECIMAL(18,2)) AS attributed_net_revenue,
         coalesce(a.holdout_orders, 0)        AS holdout_orders,
         CAST(coalesce(a.holdout_net_revenue, 0) AS DECIMAL(18,2))    AS holdout_net_revenue
  FROM cells c
  LEFT JOIN programs p  ON p.program_id = c.program_id
  LEFT JOIN arms a      ON a.program_id = c.program_id AND a.month = c.month
  LEFT JOIN marketing m ON m.program_id = c.program_id AND m.month = c.month
  LEFT JOIN redeemed r  ON r.program_id = c.program_id AND r.month = c.month
),
economics AS (
  SELECT *,
         marketing_spend + redeemed_voucher_value AS spend,
         -- Treated revenue minus what the treated would have spent at the holdout's rate.
         CASE WHEN holdout_customers > 0 THEN
           CAST(attributed_net_revenue
                - CAST(holdout_net_revenue * treated_customers AS DECIMAL(28,2)) / holdout_customers
                AS DECIMAL(18,2))
         END AS incremental_revenue,
         CAST(treated_repurchased AS DOUBLE) / NULLIF(treated_customers, 0)
           - CAST(holdout_repurchased AS DOUBLE) / NULLIF(holdout_customers, 0) AS incremental_retention_p
  FROM joined
)
SELECT
  program_id,
  program_name,
  program_kind,
  month,
  marketing_spend,
  redeemed_voucher_value,
  spend,
  treated_customers,
  holdout_customers,
  treated_repurchased,
  round(CAST(treated_repurchased AS DOUBLE) / NULLIF(treated_customers, 0), 4)   AS treated_repurchase_rate,
  holdout_repurchased,
  round(CAST(holdout_repurchased AS DOUBLE) / NULLIF(holdout_customers, 0), 4)   AS holdout_repurchase_rate,
  attributed_orders,
  attributed_net_revenue,
  holdout_orders,
  holdout_net_revenue,
  incremental_revenue,
  CAST(incremental_revenue * CAST($margin_rate AS DECIMAL(5,4)) AS DECIMAL(18,2)) AS incremental_gross_margin,
  round(CAST(attributed_net_revenue AS DOUBLE) / NULLIF(CAST(spend AS DOUBLE), 0), 4) AS roas,
  round(CAST(incremental_revenue AS DOUBLE) / NULLIF(CAST(spend AS DOUBLE), 0), 4)    AS incremental_roas,
  round((CAST(incremental_revenue * CAST($margin_rate AS DECIMAL(5,4)) AS DOUBLE) - CAST(spend AS DOUBLE))
        / NULLIF(CAST(spend AS DOUBLE), 0), 4)                                        AS roi,
  round(incremental_retention_p * treated_customers, 2)                            AS incremental_retained_customers,
  CASE WHEN incremental_retention_p > 0 THEN
    CAST(spend / CAST(incremental_retention_p * treated_customers AS DECIMAL(18,4)) AS DECIMAL(18,2))
  END                                                                              AS cost_per_retained_customer,
  extract(epoch FROM CAST(to_timestamp(concat(month, '-01T00:00:00Z')) + INTERVAL '1 month' AS TIMESTAMP))
    + $attribution_window_days * 86400
    <= extract(epoch FROM CAST(a.as_of_date AS TIMESTAMP)) + 86400                 AS window_complete,
  $attribution_window_days                                                         AS attribution_window_days
FROM economics CROSS JOIN as_of a
