-- The latest version of every plan line.
SELECT month, program_id, cost_center, currency, planned_amount, version,
       versions AS versions_submitted
FROM (
  SELECT month, program_id, cost_center, currency, planned_amount, version,
         count(*) OVER (PARTITION BY month, program_id, cost_center, currency) AS versions,
         row_number() OVER (PARTITION BY month, program_id, cost_center, currency ORDER BY version DESC) AS n
  FROM budget_plan
) ranked
WHERE n = 1
