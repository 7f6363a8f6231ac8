-- segment_summary of bench/SPEC.md section 6: one row per segment, with the
-- segment's centre in z-space (its feature means, z-scored with the
-- population mean and standard deviation of all customers, as the segment
-- stage standardizes).
WITH z AS (
    SELECT avg(CAST(recency_days AS DOUBLE)) AS m1, stddev_pop(CAST(recency_days AS DOUBLE)) AS s1,
           avg(CAST(frequency AS DOUBLE)) AS m2, stddev_pop(CAST(frequency AS DOUBLE)) AS s2,
           avg(monetary) AS m3, stddev_pop(monetary) AS s3,
           avg(CAST(tenure_days AS DOUBLE)) AS m4, stddev_pop(CAST(tenure_days AS DOUBLE)) AS s4,
           avg(CAST(web_visits_90d AS DOUBLE)) AS m5, stddev_pop(CAST(web_visits_90d AS DOUBLE)) AS s5
    FROM customer_scores
),
g AS (
    SELECT segment,
           count(*) AS n_customers,
           avg(CAST(recency_days AS DOUBLE)) AS avg_recency_days,
           avg(CAST(frequency AS DOUBLE)) AS avg_frequency,
           avg(monetary) AS avg_monetary,
           avg(CAST(tenure_days AS DOUBLE)) AS avg_tenure_days,
           avg(CAST(web_visits_90d AS DOUBLE)) AS avg_web_visits_90d,
           avg(clv) AS avg_clv,
           sum(clv) AS total_clv,
           avg(predicted_revenue_next_365d) AS avg_predicted_revenue_next_365d
    FROM customer_scores
    GROUP BY segment
)
SELECT g.segment, g.n_customers,
       CAST(g.n_customers AS DOUBLE) / CAST(sum(g.n_customers) OVER () AS DOUBLE) AS share,
       g.avg_recency_days, g.avg_frequency, g.avg_monetary, g.avg_tenure_days, g.avg_web_visits_90d,
       g.avg_clv, g.total_clv, g.avg_predicted_revenue_next_365d,
       (g.avg_recency_days - z.m1) / z.s1 AS z_recency_days,
       (g.avg_frequency - z.m2) / z.s2 AS z_frequency,
       (g.avg_monetary - z.m3) / z.s3 AS z_monetary,
       (g.avg_tenure_days - z.m4) / z.s4 AS z_tenure_days,
       (g.avg_web_visits_90d - z.m5) / z.s5 AS z_web_visits_90d
FROM g CROSS JOIN z
ORDER BY g.segment
