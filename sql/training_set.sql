-- The training table for the prediction steps: features as of a year before
-- ${as_of} (step training_features), and what happened next:
--   revenue_next_365d  the customer's spend in the 365 days after the cutoff
--   churned_next_90d   1 if the customer bought nothing in the 90 days after it
WITH cutoff AS (
    SELECT customer_id,
           sum(amount) AS revenue_next_365d,
           count(*) FILTER (WHERE transaction_ts < CAST(DATE ${as_of} - INTERVAL '274' DAY AS TIMESTAMP)) AS purchases_next_90d
    FROM transactions
    WHERE transaction_ts >= CAST(DATE ${as_of} - INTERVAL '364' DAY AS TIMESTAMP)
      AND transaction_ts < CAST(DATE ${as_of} + INTERVAL '1' DAY AS TIMESTAMP)
    GROUP BY customer_id
)
SELECT f.*,
       coalesce(c.revenue_next_365d, 0.0) AS revenue_next_365d,
       CASE WHEN coalesce(c.purchases_next_90d, 0) = 0 THEN 1 ELSE 0 END AS churned_next_90d
FROM training_features f
LEFT JOIN cutoff c ON c.customer_id = f.customer_id
