-- BG/NBD and Gamma-Gamma fitted on customer_summary (already as of the run's as-of day).
-- Definitions: docs/metrics/clv.md. Both fits come from one scan: the two rows are the two
-- models, picked from one aggregate.
WITH unit AS (
  SELECT CASE $time_unit WHEN 'day' THEN 1.0 WHEN 'week' THEN 7.0 END AS days
),
fits AS (
  SELECT bgnbd_fit(CAST(s.frequency AS DOUBLE),
                   CAST(s.recency AS DOUBLE) / u.days,
                   CAST(s.t AS DOUBLE) / u.days)                                    AS bg,
         gamma_gamma_fit(CAST(s.frequency AS DOUBLE), CAST(s.repeat_monetary_value AS DOUBLE)) AS gg
  FROM customer_summary s
  CROSS JOIN unit u
)
SELECT
  m.model,
  CASE WHEN m.model = 'bgnbd' THEN f.bg['r'] END                                    AS r,
  CASE WHEN m.model = 'bgnbd' THEN f.bg['alpha'] END                                AS alpha,
  CASE WHEN m.model = 'bgnbd' THEN f.bg['a'] END                                    AS a,
  CASE WHEN m.model = 'bgnbd' THEN f.bg['b'] END                                    AS b,
  CASE WHEN m.model = 'gamma_gamma' THEN f.gg['p'] END                              AS p,
  CASE WHEN m.model = 'gamma_gamma' THEN f.gg['q'] END                              AS q,
  CASE WHEN m.model = 'gamma_gamma' THEN f.gg['gamma'] END                          AS gamma,
  CASE WHEN m.model = 'bgnbd' THEN f.bg['r_se'] END                                 AS r_se,
  CASE WHEN m.model = 'bgnbd' THEN f.bg['alpha_se'] END                             AS alpha_se,
  CASE WHEN m.model = 'bgnbd' THEN f.bg['a_se'] END                                 AS a_se,
  CASE WHEN m.model = 'bgnbd' THEN f.bg['b_se'] END                                 AS b_se,
  CASE WHEN m.model = 'gamma_gamma' THEN f.gg['p_se'] END                           AS p_se,
  CASE WHEN m.model = 'gamma_gamma' THEN f.gg['q_se'] END                           AS q_se,
  CASE WHEN m.model = 'gamma_gamma' THEN f.gg['gamma_se'] END                       AS gamma_se,
  CASE WHEN m.model = 'bgnbd' THEN f.bg['log_likelihood'] ELSE f.gg['log_likelihood'] END AS log_likelihood,
  CASE WHEN m.model = 'bgnbd' THEN f.bg['customers'] ELSE f.gg['customers'] END     AS customers,
  CASE WHEN m.model = 'bgnbd' THEN f.bg['converged'] ELSE f.gg['converged'] END     AS converged,
  CASE WHEN m.model = 'bgnbd' THEN f.bg['iterations'] ELSE f.gg['iterations'] END   AS iterations,
  CAST($as_of AS DATE)                                                              AS as_of,
  CAST($time_unit AS VARCHAR)                                                       AS time_unit
FROM fits f
CROSS JOIN (VALUES ('bgnbd'), ('gamma_gamma')) AS m(model)
