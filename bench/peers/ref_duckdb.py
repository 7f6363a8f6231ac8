#!/usr/bin/env python3
"""Reference implementation: DuckDB SQL (features, CLV, target) + scikit-learn (KMeans, OLS).

Usage: python3 ref_duckdb.py DATA_DIR OUT_DIR      (see bench/SPEC.md)
"""
import time

T_START = time.perf_counter()
import sys  # noqa: E402

sys.dont_write_bytecode = True
import duckdb  # noqa: E402

import jobcommon as jc  # noqa: E402

T_IMPORTED = time.perf_counter()


def feature_sql(as_of, as_of_end, with_clv=False, target_range=None):
    """F(A) of bench/SPEC.md section 2 (+ clv, section 3; + target y, section 5)."""
    win = jc.window_start(as_of_end)
    A, A_END, W = f"DATE '{as_of}'", f"TIMESTAMP '{as_of_end}'", f"TIMESTAMP '{win}'"
    kind_aggs = ",\n           ".join(
        f"count(*) FILTER (WHERE kind = '{k}') AS {c}" for k, c in jc.KINDS)
    kind_cols = ",\n       ".join(f"coalesce(i.{c}, 0) AS {c}" for c in jc.KIND_COLS)
    ctes, extra_cols, extra_joins = [], [], []
    clv_agg, clv_join = "", ""
    if with_clv:
        clv_agg = """,
           sum(tr.amount * pow(CAST(1.1 AS DOUBLE),
                               -((CAST(tr.transaction_ts AS DATE) - cu.signup_date) // 365 + 1)))
               AS disc_revenue"""
        clv_join = " JOIN customers cu ON cu.customer_id = tr.customer_id"
        extra_cols.append("coalesce(t.disc_revenue, 0.0) - c.acquisition_cost AS clv")
    if target_range is not None:
        lo, hi = target_range
        ctes.append(f"""
y_t AS (
    SELECT customer_id, sum(amount) AS y
    FROM transactions
    WHERE transaction_ts >= TIMESTAMP '{lo}' AND transaction_ts < TIMESTAMP '{hi}'
    GROUP BY customer_id
)""")
        extra_cols.append("coalesce(y_t.y, 0.0) AS y")
        extra_joins.append("LEFT JOIN y_t ON y_t.customer_id = c.customer_id")
    extra_ctes = "".join("," + c for c in ctes)
    extra_cols = "".join(",\n       " + c for c in extra_cols)
    extra_joins = "\n".join(extra_joins)
    return f"""
WITH t AS (
    SELECT tr.customer_id,
           max(CAST(tr.transaction_ts AS DATE)) AS last_date,
           count(*) AS frequency,
           sum(tr.amount) AS monetary{clv_agg}
    FROM transactions tr{clv_join}
    WHERE tr.transaction_ts < {A_END}
    GROUP BY tr.customer_id
),
i AS (
    SELECT customer_id,
           {kind_aggs}
    FROM interactions
    WHERE interaction_ts >= {W} AND interaction_ts < {A_END}
    GROUP BY customer_id
){extra_ctes}
SELECT c.customer_id, c.signup_date, c.country, c.age, c.gender, c.income,
       c.acquisition_cost, c.channel,
       {A} - coalesce(t.last_date, c.signup_date) AS recency_days,
       coalesce(t.frequency, 0) AS frequency,
       coalesce(t.monetary, 0.0) AS monetary,
       CASE WHEN coalesce(t.frequency, 0) = 0 THEN 0.0 ELSE t.monetary / t.frequency END AS avg_amount,
       {A} - c.signup_date AS tenure_days,
       CAST(365.0 AS DOUBLE) * coalesce(t.frequency, 0) / ({A} - c.signup_date + 1) AS purchases_per_year,
       {kind_cols}{extra_cols}
FROM customers c
LEFT JOIN t ON t.customer_id = c.customer_id
LEFT JOIN i ON i.customer_id = c.customer_id
{extra_joins}
WHERE c.signup_date <= {A}
ORDER BY c.customer_id
"""


def main():
    data_dir, out_dir = sys.argv[1], sys.argv[2]
    timings = {"imports": T_IMPORTED - T_START}
    t = time.perf_counter()
    con = duckdb.connect()
    for name in ("customers", "transactions", "interactions"):
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{data_dir}/{name}/*.parquet')")
    now = con.sql(feature_sql(jc.AS_OF, jc.AS_OF_END, with_clv=True)).to_arrow_table()
    train = con.sql(feature_sql(jc.CUTOFF, jc.CUTOFF_END,
                                target_range=(jc.CUTOFF_END, jc.AS_OF_END))).to_arrow_table()
    timings["features"] = time.perf_counter() - t
    m = jc.run_ml_and_write(now, train, out_dir, "duckdb", timings, T_START)
    print(f"duckdb: rows={m['rows_scored']} r2_holdout={m['r2_holdout']:.4f} "
          f"inertia={m['kmeans_inertia']:.1f} seconds={m['seconds']}", file=sys.stderr)


if __name__ == "__main__":
    main()
