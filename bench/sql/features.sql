-- F(A) of bench/SPEC.md section 2: one row per customer signed up by the
-- as-of day A = ${as_of}, with purchase and 90-day interaction features.
-- "Up to A" means timestamps before the start of A + 1 day.
WITH t AS (
    SELECT customer_id,
           max(transaction_ts) AS last_ts,
           count(*) AS frequency,
           sum(amount) AS monetary
    FROM transactions
    WHERE transaction_ts < CAST(DATE ${as_of} + INTERVAL '1' DAY AS TIMESTAMP)
    GROUP BY customer_id
),
i AS (
    SELECT customer_id,
           count(*) FILTER (WHERE kind = 'web_visit') AS web_visits_90d,
           count(*) FILTER (WHERE kind = 'email_open') AS email_opens_90d,
           count(*) FILTER (WHERE kind = 'email_click') AS email_clicks_90d,
           count(*) FILTER (WHERE kind = 'support_ticket') AS support_tickets_90d,
           count(*) FILTER (WHERE kind = 'app_session') AS app_sessions_90d
    FROM interactions
    WHERE interaction_ts >= CAST(DATE ${as_of} - INTERVAL '89' DAY AS TIMESTAMP)
      AND interaction_ts < CAST(DATE ${as_of} + INTERVAL '1' DAY AS TIMESTAMP)
    GROUP BY customer_id
)
SELECT c.customer_id, c.signup_date, c.country, c.age, c.gender, c.income, c.acquisition_cost, c.channel,
       CAST(DATE ${as_of} - coalesce(CAST(t.last_ts AS DATE), c.signup_date) AS BIGINT) AS recency_days,
       coalesce(t.frequency, 0) AS frequency,
       coalesce(t.monetary, 0.0) AS monetary,
       CASE WHEN coalesce(t.frequency, 0) = 0 THEN 0.0
            ELSE t.monetary / CAST(t.frequency AS DOUBLE) END AS avg_amount,
       CAST(DATE ${as_of} - c.signup_date AS BIGINT) AS tenure_days,
       365.0 * CAST(coalesce(t.frequency, 0) AS DOUBLE) / CAST(DATE ${as_of} - c.signup_date + 1 AS DOUBLE)
         AS purchases_per_year,
       coalesce(i.web_visits_90d, 0) AS web_visits_90d,
       coalesce(i.email_opens_90d, 0) AS email_opens_90d,
       coalesce(i.email_clicks_90d, 0) AS email_clicks_90d,
       coalesce(i.support_tickets_90d, 0) AS support_tickets_90d,
       coalesce(i.app_sessions_90d, 0) AS app_sessions_90d
FROM customers c
LEFT JOIN t ON t.customer_id = c.customer_id
LEFT JOIN i ON i.customer_id = c.customer_id
WHERE c.signup_date <= DATE ${as_of}
