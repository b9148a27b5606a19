-- One row per customer id, from the customer's first line (by time, then invoice number).
SELECT customer_id, signup_ts, region,
       CASE WHEN region = 'United Kingdom' THEN 'domestic' ELSE 'international' END AS acquisition_channel
FROM (
  SELECT customer_id,
         invoice_ts AS signup_ts,
         country    AS region,
         row_number() OVER (PARTITION BY customer_id ORDER BY invoice_ts, invoice_no) AS n
  FROM retail_lines
  WHERE customer_id IS NOT NULL
) first_line
WHERE n = 1
