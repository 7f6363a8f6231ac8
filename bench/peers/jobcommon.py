"""Shared parts of the peer implementations: parameters (bench/SPEC.md section 1),
the ML steps (sections 4-5, scikit-learn) and the output writer (section 6).

ref_duckdb.py and ref_polars.py each compute F(AS_OF) + clv and F(CUTOFF) + y with its own engine, hands
them over as a pyarrow Table or pandas DataFrame sorted by customer_id, and
calls run_ml_and_write().
"""
import datetime as dt
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.cluster import KMeans
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

AS_OF = dt.date(2026, 11, 24)
AS_OF_END = dt.datetime(2026, 11, 25)
CUTOFF = AS_OF - dt.timedelta(days=365)  # 2025-11-24
CUTOFF_END = dt.datetime.combine(CUTOFF + dt.timedelta(days=1), dt.time())
DISCOUNT = 0.1
IX_WINDOW_DAYS = 90
K = 5
SEED = 42

KINDS = [  # (kind value, output column)
    ("web_visit", "web_visits_90d"),
    ("email_open", "email_opens_90d"),
    ("email_click", "email_clicks_90d"),
    ("support_ticket", "support_tickets_90d"),
    ("app_session", "app_sessions_90d"),
]
KIND_COLS = [c for _, c in KINDS]
ATTR_COLS = ["customer_id", "signup_date", "country", "age", "gender", "income",
             "acquisition_cost", "channel"]
FEATURE_COLS = ["recency_days", "frequency", "monetary", "avg_amount", "tenure_days",
                "purchases_per_year"] + KIND_COLS
KMEANS_COLS = ["recency_days", "frequency", "monetary", "tenure_days", "web_visits_90d"]
OLS_COLS = ["recency_days", "frequency", "monetary", "avg_amount", "tenure_days",
            "purchases_per_year"] + KIND_COLS + ["age", "income", "acquisition_cost"]

SCORES_SCHEMA = pa.schema([
    ("customer_id", pa.int64()), ("signup_date", pa.date32()), ("country", pa.string()),
    ("age", pa.int32()), ("gender", pa.string()), ("income", pa.float64()),
    ("acquisition_cost", pa.float64()), ("channel", pa.string()),
    ("recency_days", pa.int64()), ("frequency", pa.int64()), ("monetary", pa.float64()),
    ("avg_amount", pa.float64()), ("tenure_days", pa.int64()),
    ("purchases_per_year", pa.float64()),
] + [(c, pa.int64()) for c in KIND_COLS] + [
    ("clv", pa.float64()), ("segment", pa.int32()), ("segment_distance", pa.float64()),
    ("predicted_revenue_next_365d", pa.float64()),
])


def window_start(as_of_end):
    return as_of_end - dt.timedelta(days=IX_WINDOW_DAYS)


def prepare_out(out_dir):
    """Create the output folder; it ignores itself in git (generated data)."""
    os.makedirs(out_dir, exist_ok=True)
    gi = os.path.join(out_dir, ".gitignore")
    if not os.path.exists(gi):
        with open(gi, "w") as f:
            f.write("*\n")


def _to_arrow(tbl):
    if isinstance(tbl, pa.Table):
        return tbl
    return pa.Table.from_pandas(tbl, preserve_index=False)  # pandas DataFrame


def _np(tbl, name, dtype=np.float64):
    return np.asarray(tbl.column(name).to_numpy(), dtype=dtype)


def kmeans_segments(Xk):
    mean = Xk.mean(axis=0)
    std = Xk.std(axis=0)
    std[std == 0] = 1.0
    Z = (Xk - mean) / std
    km = KMeans(n_clusters=K, init="k-means++", n_init=1, max_iter=100, tol=1e-4,
                random_state=SEED, algorithm="lloyd").fit(Z)
    centers = km.cluster_centers_
    # canonical ids: largest segment first, ties broken by the centre (lexicographic)
    sizes = np.bincount(km.labels_, minlength=K)
    order = np.array(sorted(range(K), key=lambda j: (-sizes[j], tuple(centers[j]))))
    relabel = np.empty(K, dtype=np.int32)
    relabel[order] = np.arange(K, dtype=np.int32)
    seg = relabel[km.labels_]
    centers = centers[order]
    dist = np.sqrt(((Z - centers[seg]) ** 2).sum(axis=1))
    return seg, dist, centers, float((dist ** 2).sum()), int(km.n_iter_), mean, std


def run_ml_and_write(now, train, out_dir, impl, timings, t_start):
    """now: F(AS_OF) + clv; train: F(CUTOFF) + y. Both sorted by customer_id."""
    t = time.perf_counter()
    now = _to_arrow(now)  # a no-op except for pandas
    train = _to_arrow(train)
    ids = _np(now, "customer_id", np.int64)
    assert np.all(np.diff(ids) > 0), "F(AS_OF) must be sorted by customer_id"
    assert np.all(np.diff(_np(train, "customer_id", np.int64)) > 0)
    timings["handover"] = time.perf_counter() - t

    # ---- segmentation ----
    t = time.perf_counter()
    Xk = np.column_stack([_np(now, c) for c in KMEANS_COLS])
    seg, dist, centers, inertia, n_iter, zmean, zstd = kmeans_segments(Xk)
    timings["kmeans"] = time.perf_counter() - t

    # ---- prediction ----
    t = time.perf_counter()
    Xtr = np.column_stack([_np(train, c) for c in OLS_COLS])
    y = _np(train, "y")
    hold = (_np(train, "customer_id", np.int64) % 5) == 0
    model = LinearRegression(fit_intercept=True).fit(Xtr[~hold], y[~hold])
    yhat = model.predict(Xtr[hold])
    r2 = float(r2_score(y[hold], yhat))
    rmse = float(np.sqrt(np.mean((y[hold] - yhat) ** 2)))
    mae = float(np.mean(np.abs(y[hold] - yhat)))
    Xnow = np.column_stack([_np(now, c) for c in OLS_COLS])
    pred = model.predict(Xnow)
    timings["ols"] = time.perf_counter() - t

    # ---- outputs ----
    t = time.perf_counter()
    prepare_out(out_dir)
    cols = {}
    for f in SCORES_SCHEMA:
        if f.name == "segment":
            cols[f.name] = pa.array(seg, pa.int32())
        elif f.name == "segment_distance":
            cols[f.name] = pa.array(dist)
        elif f.name == "predicted_revenue_next_365d":
            cols[f.name] = pa.array(pred)
        else:
            cols[f.name] = now.column(f.name).cast(f.type)
    scores = pa.table(cols, schema=SCORES_SCHEMA)
    pq.write_table(scores, os.path.join(out_dir, "customer_scores.parquet"), compression="zstd")

    n_seg = np.bincount(seg, minlength=K)

    def seg_mean(v):
        return np.bincount(seg, weights=v, minlength=K) / np.maximum(n_seg, 1)

    clv = _np(now, "clv")
    summary = {"segment": pa.array(np.arange(K, dtype=np.int32)),
               "n_customers": pa.array(n_seg.astype(np.int64)),
               "share": pa.array(n_seg / n_seg.sum())}
    for c in KMEANS_COLS:
        summary["avg_" + c] = pa.array(seg_mean(_np(now, c)))
    summary["avg_clv"] = pa.array(seg_mean(clv))
    summary["total_clv"] = pa.array(np.bincount(seg, weights=clv, minlength=K))
    summary["avg_predicted_revenue_next_365d"] = pa.array(seg_mean(pred))
    for j, c in enumerate(KMEANS_COLS):
        summary["z_" + c] = pa.array(centers[:, j])
    pq.write_table(pa.table(summary), os.path.join(out_dir, "segment_summary.parquet"),
                   compression="zstd")
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start

    metrics = {
        "impl": impl,
        "rows_scored": int(scores.num_rows),
        "n_train": int((~hold).sum()),
        "n_holdout": int(hold.sum()),
        "r2_holdout": r2,
        "rmse_holdout": rmse,
        "mae_holdout": mae,
        "ols_intercept": float(model.intercept_),
        "ols_coef": dict(zip(OLS_COLS, map(float, model.coef_))),
        "kmeans_inertia": inertia,
        "kmeans_n_iter": n_iter,
        "kmeans_zscore_mean": dict(zip(KMEANS_COLS, map(float, zmean))),
        "kmeans_zscore_std": dict(zip(KMEANS_COLS, map(float, zstd))),
        "segment_sizes": n_seg.tolist(),
        "seconds": {k: round(v, 4) for k, v in timings.items()},
    }
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics
