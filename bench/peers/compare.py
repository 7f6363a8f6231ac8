#!/usr/bin/env python3
"""Compare job outputs as bench/SPEC.md section 7 says.

Usage: python3 compare.py BASELINE OTHER [OTHER ...]

Each argument is an output directory: a peer's (customer_scores.parquet,
segment_summary.parquet, metrics.json) or crmflow's (one directory per sink of
bench/bench_job.yaml: customer_scores/, segment_summary/, segments_profile/,
ols_metrics/, ols_model/).

Gates, against the baseline:
  * features and CLV (every column of SPEC section 2, and clv): integers,
    strings and dates equal; floats within 1e-9 relative (absolute floor 1e-9);
  * OLS: predictions, R^2, intercept and coefficients within 1e-6 relative
    (the problem is well posed; crmflow fits on the same customer_id % 5 split);
  * k-means, same library (two scikit-learn peers): segments >= 99.9 % equal,
    distances 1e-6, inertia 1e-6 relative, sizes and iterations equal;
  * k-means, across libraries (crmflow vs scikit-learn: different k-means++
    draws): segment sizes within 1 % of the customers, centres within 0.05 in
    z-space, inertia within 1 % -- the same clustering, not the same labels.
Exit status 0 iff every output passes. Prints one line per quantity checked.
"""
import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FEATURE_RTOL = 1e-9
FEATURE_ATOL = 1e-9
ML_RTOL = 1e-6
CROSS_SIZE_SHARE = 0.01
CROSS_CENTRE_ABS = 0.05
CROSS_INERTIA_RTOL = 0.01

FEATURE_COLS = ["customer_id", "signup_date", "country", "age", "gender", "income",
                "acquisition_cost", "channel", "recency_days", "frequency", "monetary",
                "avg_amount", "tenure_days", "purchases_per_year", "web_visits_90d",
                "email_opens_90d", "email_clicks_90d", "support_tickets_90d",
                "app_sessions_90d", "clv"]
OLS_COLS = ["recency_days", "frequency", "monetary", "avg_amount", "tenure_days",
            "purchases_per_year", "web_visits_90d", "email_opens_90d", "email_clicks_90d",
            "support_tickets_90d", "app_sessions_90d", "age", "income", "acquisition_cost"]


def plain(table):
    """Strings as plain utf8 (crmflow may write string views), no nullability flags."""
    cols, fields = [], []
    for f, c in zip(table.schema, table.columns):
        t = f.type
        if pa.types.is_large_string(t) or str(t) == "string_view":
            t = pa.string()
            c = c.cast(t)
        cols.append(c)
        fields.append(pa.field(f.name, t))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def name_value(path, key):
    t = pq.read_table(path)
    return dict(zip(t.column(key).to_pylist(), t.column("value").to_pylist()))


def load(out):
    """(scores, summary, metrics, library) of an output directory."""
    if os.path.exists(os.path.join(out, "metrics.json")):
        scores = pq.read_table(os.path.join(out, "customer_scores.parquet"))
        summary = pq.read_table(os.path.join(out, "segment_summary.parquet"))
        with open(os.path.join(out, "metrics.json")) as f:
            metrics = json.load(f)
        return plain(scores), plain(summary), metrics, "scikit-learn"
    # crmflow: one directory per sink (pyarrow skips _SUCCESS and hidden files)
    scores = plain(pq.read_table(os.path.join(out, "customer_scores"))).sort_by("customer_id")
    summary = plain(pq.read_table(os.path.join(out, "segment_summary"))).sort_by("segment")
    profile = pq.read_table(os.path.join(out, "segments_profile")).sort_by("segment")
    m = name_value(os.path.join(out, "ols_metrics"), "metric")
    model = name_value(os.path.join(out, "ols_model"), "name")
    metrics = {
        "impl": "crmflow",
        "rows_scored": scores.num_rows,
        "n_train": int(m["n_train"]),
        "n_holdout": int(m["n_test"]),
        "r2_holdout": m["r2"],
        "rmse_holdout": m["rmse"],
        "mae_holdout": m["mae"],
        "ols_intercept": model["intercept"],
        "ols_coef": {c: model[c] for c in OLS_COLS},
        "kmeans_inertia": float(np.sum(profile.column("inertia").to_numpy())),
        "kmeans_n_iter": None,
        "segment_sizes": profile.column("size").to_pylist(),
    }
    return scores, summary, metrics, "crmflow"


def close(x, y, rtol):
    return abs(x - y) <= rtol * max(1.0, abs(x), abs(y))


def report(good, name, detail):
    print(f"  {'ok  ' if good else 'FAIL'} {name:28s} {detail}")
    return good


def compare(base_dir, other_dir):
    a, sa, ma, lib_a = load(base_dir)
    b, sb, mb, lib_b = load(other_dir)
    same_library = lib_a == lib_b
    print(f"== {other_dir} ({mb.get('impl')}) vs {base_dir} ({ma.get('impl')})"
          + ("" if same_library else ": across libraries"))
    if a.schema != b.schema:
        print("  FAIL schema differs:\n", a.schema, "\n", b.schema)
        return False
    if a.num_rows != b.num_rows:
        print(f"  FAIL rows {a.num_rows} != {b.num_rows}")
        return False
    ok = True
    for c in FEATURE_COLS:
        ca, cb = a.column(c), b.column(c)
        if pa.types.is_floating(ca.type):
            x, y = ca.to_numpy(), cb.to_numpy()
            d = np.abs(x - y)
            scale = np.maximum(np.abs(x), np.abs(y))
            rel = float(np.where(scale < 1e-6, 0.0, d / np.where(scale == 0, 1.0, scale)).max())
            good = bool(np.all((d <= FEATURE_ATOL) | (d <= FEATURE_RTOL * scale)))
            ok &= report(good, c, f"max_rel={rel:.3e} max_abs={d.max():.3e}")
        else:
            ok &= report(ca.equals(cb), c, "exact")

    # ---- OLS ----
    x, y = a.column("predicted_revenue_next_365d").to_numpy(), b.column("predicted_revenue_next_365d").to_numpy()
    d = np.abs(x - y)
    good = bool(np.all(d <= ML_RTOL * np.maximum(1.0, np.maximum(np.abs(x), np.abs(y)))))
    ok &= report(good, "predicted_revenue_next_365d", f"max_abs={d.max():.3e}")
    for k in ["r2_holdout", "ols_intercept"]:
        ok &= report(close(ma[k], mb[k], ML_RTOL), k, f"{ma[k]!r} vs {mb[k]!r}")
    for k in ["n_train", "n_holdout"]:
        ok &= report(ma[k] == mb[k], k, f"{ma[k]} vs {mb[k]}")
    worst = max(OLS_COLS, key=lambda c: abs(ma["ols_coef"][c] - mb["ols_coef"][c])
                / max(abs(ma["ols_coef"][c]), abs(mb["ols_coef"][c]), 1e-300))
    ca, cb = ma["ols_coef"][worst], mb["ols_coef"][worst]
    rel = abs(ca - cb) / max(abs(ca), abs(cb), 1e-300)
    ok &= report(rel <= ML_RTOL, "ols_coef", f"max_rel={rel:.3e} ({worst}: {ca!r} vs {cb!r})")

    # ---- k-means ----
    sizes_a, sizes_b = np.asarray(ma["segment_sizes"]), np.asarray(mb["segment_sizes"])
    ia, ib = ma["kmeans_inertia"], mb["kmeans_inertia"]
    zc = [c for c in sa.column_names if c.startswith("z_")]
    za = np.column_stack([sa.column(c).to_numpy() for c in zc])
    zb = np.column_stack([sb.column(c).to_numpy() for c in zc])
    if same_library:
        seg_a, seg_b = a.column("segment").to_numpy(), b.column("segment").to_numpy()
        same = float((seg_a == seg_b).mean())
        ok &= report(same >= 0.999, "segment", f"equal_fraction={same:.6f}")
        x, y = a.column("segment_distance").to_numpy(), b.column("segment_distance").to_numpy()
        d = np.abs(x - y)
        good = bool(np.all(d <= ML_RTOL * np.maximum(1.0, np.maximum(np.abs(x), np.abs(y))))) or same < 1.0
        ok &= report(good, "segment_distance", f"max_abs={d.max():.3e}")
        ok &= report(close(ia, ib, ML_RTOL), "kmeans_inertia", f"{ia!r} vs {ib!r}")
        for k in ["segment_sizes", "kmeans_n_iter"]:
            ok &= report(ma[k] == mb[k], k, f"{ma[k]} vs {mb[k]}")
        for c in sa.column_names:
            x = sa.column(c).to_numpy().astype(np.float64)
            y = sb.column(c).to_numpy().astype(np.float64)
            good = bool(np.all(np.abs(x - y) <= ML_RTOL * np.maximum(1.0, np.abs(x))))
            if not good:
                ok &= report(False, f"segment_summary.{c}", f"{x} vs {y}")
    else:
        n = max(int(sizes_a.sum()), 1)
        share = float(np.abs(sizes_a - sizes_b).max()) / n if len(sizes_a) == len(sizes_b) else 1.0
        ok &= report(share <= CROSS_SIZE_SHARE, "segment_sizes",
                     f"{sizes_a.tolist()} vs {sizes_b.tolist()} (max diff {share:.2%} of customers)")
        dz = float(np.abs(za - zb).max()) if za.shape == zb.shape else float("inf")
        ok &= report(dz <= CROSS_CENTRE_ABS, "segment centres (z)", f"max_abs={dz:.3e}")
        rel = abs(ia - ib) / max(abs(ia), abs(ib))
        ok &= report(rel <= CROSS_INERTIA_RTOL, "kmeans_inertia", f"{ia:.1f} vs {ib:.1f} (rel {rel:.2e})")
        x, y = a.column("segment_distance").to_numpy(), b.column("segment_distance").to_numpy()
        print(f"  info segment                      equal_fraction={float((a.column('segment').to_numpy() == b.column('segment').to_numpy()).mean()):.6f}"
              f", segment_distance max_abs={np.abs(x - y).max():.3e}")
    if ok:
        print(f"  ok   segment_summary ({sa.num_rows} rows)")
    return ok


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    results = [compare(args[0], o) for o in args[1:]]
    print("ALL OK" if all(results) else "MISMATCH")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
