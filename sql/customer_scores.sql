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
FROM features f
JOIN clv c ON c.customer_id = f.customer_id
LEFT JOIN clv_bgnbd b ON b.customer_id = f.customer_id
JOIN segments s ON s.customer_id = f.customer_id
JOIN rfm m ON m.customer_id = f.customer_id
JOIN revenue_forecast r ON r.customer_id = f.customer_id
JOIN churn ch ON ch.customer_id = f.customer_id
