-- customer_scores of bench/SPEC.md section 6: the features of the as-of day,
-- CLV, segment and predicted revenue, one row per customer, by customer_id.
SELECT f.customer_id, f.signup_date, f.country, f.age, f.gender, f.income, f.acquisition_cost, f.channel,
       f.recency_days, f.frequency, f.monetary, f.avg_amount, f.tenure_days, f.purchases_per_year,
       f.web_visits_90d, f.email_opens_90d, f.email_clicks_90d, f.support_tickets_90d, f.app_sessions_90d,
       c.clv,
       s.segment,
       s.segment_distance,
       r.prediction AS predicted_revenue_next_365d
FROM features f
JOIN clv c ON c.customer_id = f.customer_id
JOIN segments s ON s.customer_id = f.customer_id
JOIN ols r ON r.customer_id = f.customer_id
ORDER BY f.customer_id
