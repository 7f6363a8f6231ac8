-- One row per customer: features, CLV (discounted and BG/NBD), segment, RFM segment,
-- predicted revenue, churn probability, and customer_value =
-- clv x satisfaction x loyalty.
SELECT f.*,
       c.clv,
       b.clv AS clv_bgnbd,
       b.p_alive,
       b.expected_purchases AS expected_purchases_next_year,
       s.segment,
       s.segment_distance,
       m.rfm_score,
       m.rfm_segment,
       r.prediction AS predicted_revenue_next_365d,
       ch.prediction AS churn_probability,
       c.clv * f.satisfaction * f.loyalty AS customer_value
-- The wide features table is joined last: DataFusion builds each hash
-- join's table from its left input, so the narrow score tables are built
-- and the features stream through (built first, the features were copied
-- into three build sides of 200 MB each at a million customers).
FROM clv c
JOIN segments s ON s.customer_id = c.customer_id
JOIN rfm m ON m.customer_id = c.customer_id
JOIN revenue_forecast r ON r.customer_id = c.customer_id
JOIN churn ch ON ch.customer_id = c.customer_id
JOIN features f ON f.customer_id = c.customer_id
LEFT JOIN clv_bgnbd b ON b.customer_id = f.customer_id
