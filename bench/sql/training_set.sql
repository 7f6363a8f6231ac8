-- The OLS training table of bench/SPEC.md section 5: F(cutoff) (step
-- training_features) plus the target y, the customer's spend in the 365 days
-- after the cutoff day ${cutoff}, and the SPEC's holdout (customer_id % 5 = 0).
WITH y AS (
    SELECT customer_id, sum(amount) AS y
    FROM transactions
    WHERE transaction_ts >= CAST(DATE ${cutoff} + INTERVAL '1' DAY AS TIMESTAMP)
      AND transaction_ts < CAST(DATE ${as_of} + INTERVAL '1' DAY AS TIMESTAMP)
    GROUP BY customer_id
)
SELECT f.*, coalesce(y.y, 0.0) AS y, f.customer_id % 5 = 0 AS is_holdout
FROM training_features f
LEFT JOIN y ON y.customer_id = f.customer_id
