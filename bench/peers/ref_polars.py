#!/usr/bin/env python3
"""Reference implementation: polars lazy API (features, CLV, target) + scikit-learn.

Usage: python3 ref_polars.py DATA_DIR OUT_DIR      (see bench/SPEC.md)
"""
import time

T_START = time.perf_counter()
import sys  # noqa: E402

sys.dont_write_bytecode = True
import polars as pl  # noqa: E402

import jobcommon as jc  # noqa: E402

T_IMPORTED = time.perf_counter()


def features(cust, tx, ix, as_of, as_of_end, with_clv=False, target_range=None):
    """F(A) of bench/SPEC.md section 2 (+ clv, section 3; + target y, section 5), as a LazyFrame."""
    win = jc.window_start(as_of_end)
    A = pl.lit(as_of, dtype=pl.Date)
    txa = tx.filter(pl.col("transaction_ts") < as_of_end)
    aggs = [
        pl.col("transaction_ts").max().dt.date().alias("last_date"),
        pl.len().cast(pl.Int64).alias("frequency"),
        pl.col("amount").sum().alias("monetary"),
    ]
    if with_clv:
        year = (pl.col("transaction_ts").dt.date() - pl.col("signup_date")).dt.total_days() // 365 + 1
        txa = txa.join(cust.select("customer_id", "signup_date"), on="customer_id", how="inner")
        aggs.append((pl.col("amount") * pl.lit(1.1).pow(-year.cast(pl.Float64))).sum().alias("disc_revenue"))
    t = txa.group_by("customer_id").agg(aggs)
    i = (ix.filter((pl.col("interaction_ts") >= win) & (pl.col("interaction_ts") < as_of_end))
         .group_by("customer_id")
         .agg([(pl.col("kind") == k).sum().cast(pl.Int64).alias(c) for k, c in jc.KINDS]))
    c = cust.filter(pl.col("signup_date") <= A)
    q = (c.join(t, on="customer_id", how="left")
         .join(i, on="customer_id", how="left"))
    if target_range is not None:
        lo, hi = target_range
        y_t = (tx.filter((pl.col("transaction_ts") >= lo) & (pl.col("transaction_ts") < hi))
               .group_by("customer_id").agg(pl.col("amount").sum().alias("y")))
        q = q.join(y_t, on="customer_id", how="left")
    freq = pl.col("frequency").fill_null(0)
    tenure = (A - pl.col("signup_date")).dt.total_days()
    cols = [
        *jc.ATTR_COLS,
        (A - pl.coalesce("last_date", "signup_date")).dt.total_days().alias("recency_days"),
        freq.alias("frequency"),
        pl.col("monetary").fill_null(0.0).alias("monetary"),
        pl.when(freq == 0).then(0.0)
          .otherwise(pl.col("monetary") / freq.cast(pl.Float64)).alias("avg_amount"),
        tenure.alias("tenure_days"),
        (365.0 * freq.cast(pl.Float64) / (tenure + 1).cast(pl.Float64)).alias("purchases_per_year"),
        *[pl.col(k).fill_null(0).alias(k) for k in jc.KIND_COLS],
    ]
    if with_clv:
        cols.append((pl.col("disc_revenue").fill_null(0.0) - pl.col("acquisition_cost")).alias("clv"))
    if target_range is not None:
        cols.append(pl.col("y").fill_null(0.0).alias("y"))
    return q.select(cols).sort("customer_id")


def main():
    data_dir, out_dir = sys.argv[1], sys.argv[2]
    timings = {"imports": T_IMPORTED - T_START}
    t = time.perf_counter()
    cust = pl.scan_parquet(f"{data_dir}/customers/*.parquet")
    tx = pl.scan_parquet(f"{data_dir}/transactions/*.parquet")
    ix = pl.scan_parquet(f"{data_dir}/interactions/*.parquet")
    q_now = features(cust, tx, ix, jc.AS_OF, jc.AS_OF_END, with_clv=True)
    q_train = features(cust, tx, ix, jc.CUTOFF, jc.CUTOFF_END,
                       target_range=(jc.CUTOFF_END, jc.AS_OF_END))
    now, train = pl.collect_all([q_now, q_train])
    now, train = now.to_arrow(), train.to_arrow()
    timings["features"] = time.perf_counter() - t
    m = jc.run_ml_and_write(now, train, out_dir, "polars", timings, T_START)
    print(f"polars: rows={m['rows_scored']} r2_holdout={m['r2_holdout']:.4f} "
          f"inertia={m['kmeans_inertia']:.1f} seconds={m['seconds']}", file=sys.stderr)


if __name__ == "__main__":
    main()
