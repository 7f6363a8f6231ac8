-- Per-customer features as of the end of day ${as_of} - ${lookback}.
--
-- A = DATE ${as_of} - INTERVAL ${lookback} (the as-of day); "up to A"
-- means timestamps before the start of A + 1 day. Every customer signed up
-- by A gets one row. Vars are bound as literals: ${as_of} becomes
-- '2026-11-24', ${lookback} '0 days'.
WITH tx AS (
    SELECT customer_id,
           CAST(transaction_ts AS DATE) AS day,
           amount
    FROM transactions
    WHERE transaction_ts < CAST(DATE ${as_of} - INTERVAL ${lookback} + INTERVAL '1' DAY AS TIMESTAMP)
),
t AS (
    SELECT customer_id,
           max(day) AS last_day,
           count(*) AS frequency,
           sum(amount) AS monetary,
           crmflow_day_gaps(day) AS gaps
    FROM tx
    GROUP BY customer_id
),
-- Gaps between distinct purchase days, for purchase regularity:
-- crmflow_day_gaps(day) gives their number (n_gaps), mean (mean_gap) and
-- population standard deviation (sd_gap), the same numbers, bit for bit, as
--   lag(day) OVER (PARTITION BY customer_id ORDER BY day)
-- over the distinct days with count, avg and stddev_pop of the gaps; but
-- from this aggregate by customer, without a window's sort of every
-- transaction (README "Performance").
i AS (
    SELECT customer_id,
           count(*) FILTER (WHERE kind = 'web_visit') AS web_visits_90d,
           count(*) FILTER (WHERE kind = 'email_open') AS email_opens_90d,
           count(*) FILTER (WHERE kind = 'email_click') AS email_clicks_90d,
           count(*) FILTER (WHERE kind = 'support_ticket') AS support_tickets_90d,
           count(*) FILTER (WHERE kind = 'app_session') AS app_sessions_90d
    FROM interactions
    WHERE interaction_ts >= CAST(DATE ${as_of} - INTERVAL ${lookback} - INTERVAL '89' DAY AS TIMESTAMP)
      AND interaction_ts < CAST(DATE ${as_of} - INTERVAL ${lookback} + INTERVAL '1' DAY AS TIMESTAMP)
    GROUP BY customer_id
),
f AS (
    SELECT c.customer_id, c.signup_date, c.country, c.age, c.gender, c.income,
           c.acquisition_cost, c.channel,
           CAST(DATE ${as_of} - INTERVAL ${lookback} - coalesce(t.last_day, c.signup_date) AS BIGINT) AS recency_days,
           coalesce(t.frequency, 0) AS frequency,
           coalesce(t.monetary, 0.0) AS monetary,
           CASE WHEN coalesce(t.frequency, 0) = 0 THEN 0.0
                ELSE t.monetary / CAST(t.frequency AS DOUBLE) END AS avg_amount,
           CAST(DATE ${as_of} - INTERVAL ${lookback} - c.signup_date AS BIGINT) AS tenure_days,
           coalesce(i.web_visits_90d, 0) AS web_visits_90d,
           coalesce(i.email_opens_90d, 0) AS email_opens_90d,
           coalesce(i.email_clicks_90d, 0) AS email_clicks_90d,
           coalesce(i.support_tickets_90d, 0) AS support_tickets_90d,
           coalesce(i.app_sessions_90d, 0) AS app_sessions_90d,
           coalesce(t.gaps['n_gaps'], 0) AS n_gaps,
           t.gaps['mean_gap'] AS mean_gap,
           t.gaps['sd_gap'] AS sd_gap
    FROM customers c
    LEFT JOIN t ON t.customer_id = c.customer_id
    LEFT JOIN i ON i.customer_id = c.customer_id
    WHERE c.signup_date <= DATE ${as_of} - INTERVAL ${lookback}
)
SELECT customer_id, signup_date, country, age, gender, income, acquisition_cost, channel,
       recency_days, frequency, monetary, avg_amount, tenure_days,
       365.0 * CAST(frequency AS DOUBLE) / CAST(tenure_days + 1 AS DOUBLE) AS purchases_per_year,
       web_visits_90d, email_opens_90d, email_clicks_90d, support_tickets_90d, app_sessions_90d,
       -- Satisfaction: engagement against support tickets, smoothed so that a
       -- customer with no interactions scores 0.5; in (0, 1].
       (CAST(web_visits_90d + email_clicks_90d + app_sessions_90d AS DOUBLE) + 1.0)
         / (CAST(web_visits_90d + email_clicks_90d + app_sessions_90d AS DOUBLE) + 3.0 * CAST(support_tickets_90d AS DOUBLE) + 2.0)
         AS satisfaction,
       -- Loyalty: regularity of the gaps between purchase days (1 / (1 + their
       -- coefficient of variation); 0.5 with one gap, 0.25 with none) times a
       -- decay for the time since the last purchase, on the scale of the
       -- customer's own rhythm (2 x mean gap + 30 days); in (0, 1].
       CASE WHEN n_gaps >= 2 THEN 1.0 / (1.0 + sd_gap / mean_gap)
            WHEN n_gaps = 1 THEN 0.5
            ELSE 0.25 END
         * exp(-CAST(recency_days AS DOUBLE) / (2.0 * coalesce(mean_gap, 30.0) + 30.0))
         AS loyalty
FROM f
