"""Reference values for the Pareto/NBD and MBG/NBD models of src/stages/btyd/
(pareto_nbd.rs, mbgnbd.rs) and for the CLV calibration table, from
implementations written here independently of the Rust code:

* Pareto/NBD: the likelihood in Fader & Hardie's hypergeometric form with
  scipy.special.hyp2f1 (both branches, alpha >= beta and alpha < beta) and,
  as a check, the integral form
      L = C [(a+T)^-(r+x) (b+T)^-s + s Int_{t_x}^T (a+u)^-(r+x) (b+u)^-(s+1) du]
  by mpmath.quad at 40 digits (the pinned values); P(alive) and E[Y(t)] from
  the same integral; `lifetimes`' ParetoNBDFitter printed alongside.
* MBG/NBD (Batislam, Denizel & Filiztekin 2007): the likelihood, P(alive) and
  E[Y(t)] in mpmath (hyp2f1 at 40 digits); lifetimes' ModifiedBetaGeoFitter
  alongside (its conventions: t_x = 0 for x = 0, P(alive) without the
  delta(x > 0) of BG/NBD).
* Fits: the optimum of the weighted log-likelihood (scipy BFGS on log
  parameters, gtol 1e-10, from a few starts) on the 600-customer data set of
  bgnbd_fit.rs (LIFETIMES_SAMPLE) and on the committed sample data
  (data/sample, as_of 2026-11-24, weeks, purchases on one day merged).
* Calibration: the table of a small fixture (calibration_fixture below, as
  the integration test writes it), and the sample's table.
* Gradients (for the analytic gradients of pareto_nbd_fit.rs and
  mbgnbd_fit.rs): p * d ln L / dp for each parameter p of each customer, by
  mpmath's numerical differentiation (mp.diff, at 40 digits) of the same
  40-digit likelihoods (the Pareto/NBD one by quadrature of its integral
  form, so no hypergeometric series is involved); and ln 2F1(1, b; c; z)
  with its partial derivatives in b, c and z (mp.hyp2f1, mp.diff).

Run (Python 3.11; lifetimes 0.11.3, numpy 1.24.4, pandas 1.5.3, scipy 1.11.4,
mpmath 1.3.0, pyarrow 14.0.2; about two minutes):

    python3 -m venv target/ref-venv
    target/ref-venv/bin/pip install lifetimes==0.11.3 "pandas==1.5.3" "numpy==1.24.4" \
        "scipy==1.11.4" mpmath==1.3.0 pyarrow==14.0.2
    target/ref-venv/bin/python tests/reference/btyd_pareto_mbg.py [section ...]

Sections: values, fit600, sample, sample_customers, calibration, gradients
(not in the default run; about a minute).
"""

import glob
import math
import sys
import warnings

import mpmath as mp
import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln, hyp2f1

warnings.simplefilter("ignore")
mp.mp.dps = 40

# (x, t_x, T) customers of the unit tests (test_support.rs CUSTOMERS without weights)
CUSTOMERS = [
    (0.0, 0.0, 38.86),
    (1.0, 30.43, 38.86),
    (2.0, 1.71, 38.86),
    (5.0, 10.0, 40.0),
    (10.0, 35.0, 38.5),
    (3.0, 20.5, 39.0),
    (0.0, 0.0, 5.0),
    (300.0, 2990.0, 3000.0),
]

PARETO = {
    # Fader & Hardie's CDNOW estimates (alpha < beta)
    "cdnow": (0.5533, 10.5776, 0.6061, 11.6650),
    "alpha_gt_beta": (0.55, 12.0, 0.6, 8.0),
    "alpha_eq_beta": (0.55, 10.0, 0.6, 10.0),
    "alpha_near_beta": (0.55, 10.0, 0.6, 10.0 * (1 + 1e-9)),
    "s_one": (0.8, 5.0, 1.0, 3.0),
}
MBG = {
    "cdnow": (0.243, 4.414, 0.793, 2.426),
    # crmflow generate: lambda ~ Gamma(1.5, scale 10 per year), p ~ Beta(3, 50); weeks
    "generator": (1.5, 365.25 / 7.0 / 10.0, 3.0, 50.0),
}
HORIZONS = [10.0, 52.0]


# --- Pareto/NBD -------------------------------------------------------------

def pareto_ll_scipy(r, alpha, s, beta, x, tx, T):
    """Fader & Hardie's hypergeometric form with scipy's hyp2f1, in logs
    (the powers overflow for large x and T)."""
    m = r + s + x
    if alpha >= beta:
        lf = lambda t: math.log(hyp2f1(m, s + 1, m + 1, (alpha - beta) / (alpha + t))) - m * math.log(alpha + t)
    else:
        lf = lambda t: math.log(hyp2f1(m, r + x, m + 1, (beta - alpha) / (beta + t))) - m * math.log(beta + t)
    l_tx, l_t = lf(tx), lf(T)
    ln_a0 = l_tx + math.log(-math.expm1(l_t - l_tx)) if l_t < l_tx else -math.inf
    ln_alive = -(r + x) * math.log(alpha + T) - s * math.log(beta + T)
    ln_dead = math.log(s / m) + ln_a0
    c = gammaln(r + x) - gammaln(r) + r * math.log(alpha) + s * math.log(beta)
    return c + np.logaddexp(ln_alive, ln_dead)


def pareto_parts_mp(r, alpha, s, beta, x, tx, T):
    """(ln C, alive term, dead term) by the integral form in mpmath."""
    r, alpha, s, beta, x, tx, T = map(mp.mpf, (r, alpha, s, beta, x, tx, T))
    c = mp.loggamma(r + x) - mp.loggamma(r) + r * mp.log(alpha) + s * mp.log(beta)
    alive = (alpha + T) ** -(r + x) * (beta + T) ** -s
    f = lambda u: (alpha + u) ** -(r + x) * (beta + u) ** -(s + 1)
    dead = s * mp.quad(f, [tx, (tx + T) / 2, T]) if tx < T else mp.mpf(0)
    return c, alive, dead


def pareto_values_mp(params, x, tx, T, horizons):
    r, alpha, s, beta = params
    c, alive, dead = pareto_parts_mp(r, alpha, s, beta, x, tx, T)
    ll = c + mp.log(alive + dead)
    p = alive / (alive + dead)
    out = [ll, p]
    for h in horizons:
        rx, a, b, ss, TT, hh = map(mp.mpf, (r + x, alpha, beta, s, T, h))
        if ss == 1:
            cond = rx / (a + TT) * (b + TT) * mp.log(1 + hh / (b + TT))
        else:
            cond = rx * (b + TT) / ((a + TT) * (ss - 1)) * (1 - ((b + TT) / (b + TT + hh)) ** (ss - 1))
        out.append(p * cond)
    return [float(v) for v in out]


def pareto_ll_mp(params, x, tx, T):
    r, alpha, s, beta = params
    c, alive, dead = pareto_parts_mp(r, alpha, s, beta, x, tx, T)
    return c + mp.log(alive + dead)


# --- MBG/NBD ----------------------------------------------------------------

def mbg_values_mp(params, x, tx, T, horizons):
    r, alpha, a, b = map(mp.mpf, params)
    x, tx, T = map(mp.mpf, (x, tx, T))
    if x == 0:
        tx = mp.mpf(0)
    c = (mp.loggamma(r + x) - mp.loggamma(r) + r * mp.log(alpha)
         + mp.loggamma(a + b) + mp.loggamma(b + x + 1) - mp.loggamma(b) - mp.loggamma(a + b + x + 1))
    alive = (alpha + T) ** -(r + x)
    dead = a / (b + x) * (alpha + tx) ** -(r + x)
    ll = c + mp.log(alive + dead)
    p = alive / (alive + dead)
    out = [ll, p]
    for h in horizons:
        h = mp.mpf(h)
        cond = (a + b + x) / (a - 1) * (
            1 - ((alpha + T) / (alpha + T + h)) ** (r + x) * mp.hyp2f1(r + x, b + x + 1, a + b + x, h / (alpha + T + h)))
        out.append(p * cond)
    return [float(v) for v in out]


def mbg_ll_mp(params, x, tx, T):
    r, alpha, a, b = map(mp.mpf, params)
    x, tx, T = map(mp.mpf, (x, tx, T))
    if x == 0:
        tx = mp.mpf(0)
    c = (mp.loggamma(r + x) - mp.loggamma(r) + r * mp.log(alpha)
         + mp.loggamma(a + b) + mp.loggamma(b + x + 1) - mp.loggamma(b) - mp.loggamma(a + b + x + 1))
    return c + mp.log((alpha + T) ** -(r + x) + a / (b + x) * (alpha + tx) ** -(r + x))


def elasticities(ll, params, x, tx, T):
    """[ln L, p_i d ln L / dp_i for each parameter], by mp.diff at 40 digits."""
    out = [ll(params, x, tx, T)]
    for i in range(4):
        def f(v, i=i):
            q = list(map(mp.mpf, params))
            q[i] = v
            return ll(q, x, tx, T)
        out.append(mp.mpf(params[i]) * mp.diff(f, mp.mpf(params[i])))
    return [float(v) for v in out]


def section_gradients():
    print("== pareto_gradients: name, (x, t_x, T) -> [ln L, r dlnL/dr, alpha dlnL/dalpha, s dlnL/ds, beta dlnL/dbeta]")
    for name, p in PARETO.items():
        print(f"-- {name} {p}")
        for (x, tx, T) in CUSTOMERS:
            tx = tx if x > 0 else 0.0
            print(f"({x}, {tx}, {T}, {elasticities(pareto_ll_mp, p, x, tx, T)!r}),")
    print("== mbg_gradients: name, (x, t_x, T) -> [ln L, r dlnL/dr, alpha dlnL/dalpha, a dlnL/da, b dlnL/db]")
    for name, p in MBG.items():
        print(f"-- {name} {p}")
        for (x, tx, T) in CUSTOMERS:
            print(f"({x}, {tx}, {T}, {elasticities(mbg_ll_mp, p, x, tx, T)!r}),")
    print("== f1_gradients: (b, c, z) -> [ln F, d/db, d/dc, d/dz] of F = 2F1(1, b; c; z)")
    for (b, c, z) in F1_CASES:
        lf = lambda b, c, z: mp.log(mp.hyp2f1(1, b, c, z))
        b_, c_, z_ = map(mp.mpf, (b, c, z))
        v = [lf(b_, c_, z_), mp.diff(lambda u: lf(u, c_, z_), b_), mp.diff(lambda u: lf(b_, u, z_), c_),
             mp.diff(lambda u: lf(b_, c_, u), z_)]
        print(f"({b!r}, {c!r}, {z!r}, {[float(u) for u in v]!r}),")


# (b, c, z) of the f1_gradients section: z = 0, moderate, close to 1 (long
# series) and closer (past the series' 20000 terms)
F1_CASES = [
    (0.55, 2.15, 0.0),
    (0.55, 2.15, 0.3),
    (1.6, 2.15, 0.5),
    (300.55, 302.15, 0.9),
    (1.6, 13.2, 0.97),
    (0.55, 2.15, 0.999),
    (1.6, 2.6, 0.9995),
    (0.25, 1.75, 0.99999),
]


def mbg_ll_np(params, x, tx, T, w):
    r, alpha, a, b = params
    tx = np.where(x > 0, tx, 0.0)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x + 1) - gammaln(b) - gammaln(a + b + x + 1)
    a3 = -(r + x) * np.log(alpha + T)
    a4 = np.log(a) - np.log(b + x) - (r + x) * np.log(alpha + tx)
    return np.sum(w * (a1 + a2 + np.logaddexp(a3, a4)))


def pareto_ll_np(params, x, tx, T, w):
    """Vectorised pareto_ll_scipy (the same formula, numpy arrays)."""
    r, alpha, s, beta = params
    tx = np.where(x > 0, tx, 0.0)
    m = r + s + x
    if alpha >= beta:
        lf = lambda t: np.log(hyp2f1(m, s + 1, m + 1, (alpha - beta) / (alpha + t))) - m * np.log(alpha + t)
    else:
        lf = lambda t: np.log(hyp2f1(m, r + x, m + 1, (beta - alpha) / (beta + t))) - m * np.log(beta + t)
    l_tx, l_t = lf(tx), lf(T)
    with np.errstate(divide="ignore", invalid="ignore"):
        ln_a0 = np.where(l_t < l_tx, l_tx + np.log(-np.expm1(np.minimum(l_t - l_tx, -1e-300))), -np.inf)
    ln_alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    ln_dead = np.log(s / m) + ln_a0
    c = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    return np.sum(w * (c + np.logaddexp(ln_alive, ln_dead)))


def lifetimes_sample():
    src = open(__file__.replace("btyd_pareto_mbg.py", "../../src/stages/btyd/bgnbd_fit.rs")).read()
    s = src.split('const LIFETIMES_SAMPLE: &str = "')[1].split('"')[0]
    rows = np.array([[float(v) for v in row.split(",")] for row in s.split(";")])
    return rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]


def sample_triples(as_of="2026-11-24"):
    import pandas as pd
    import pyarrow.parquet as pq
    files = sorted(glob.glob(__file__.replace("tests/reference/btyd_pareto_mbg.py", "data/sample/transactions/*.parquet")))
    tx = pd.concat([pq.read_table(f).to_pandas() for f in files])
    tx["day"] = tx.transaction_ts.astype("int64") // 86_400_000_000_000  # ns since 1970
    as_of_day = (pd.Timestamp(as_of) - pd.Timestamp("1970-01-01")).days
    tx = tx[tx.day <= as_of_day]
    d = tx.groupby(["customer_id", "day"]).size().reset_index()
    g = d.groupby("customer_id").day.agg(["min", "max", "count"])
    df = pd.DataFrame({"x": g["count"] - 1.0, "tx": (g["max"] - g["min"]) / 7.0, "T": (as_of_day - g["min"]) / 7.0})
    df = df[df["T"] > 0]
    agg = df.groupby(["x", "tx", "T"]).size().reset_index(name="w")
    sample_triples.customers = df
    return (agg.x.values, agg.tx.values, agg["T"].values, agg.w.values.astype(float)), len(df)


def section_values():
    from lifetimes import ModifiedBetaGeoFitter, ParetoNBDFitter
    print("== pareto_values: name, (x, t_x, T) -> ln L, P(alive), E[Y(10)], E[Y(52)]  [mpmath integral]")
    for name, p in PARETO.items():
        print(f"-- {name} {p}")
        for (x, tx, T) in CUSTOMERS:
            v = pareto_values_mp(p, x, tx, T, HORIZONS)
            sc = pareto_ll_scipy(*p, x, tx, T)
            f = ParetoNBDFitter()
            f.params_ = dict(zip(["r", "alpha", "s", "beta"], p))
            try:
                lt_pa = f.conditional_probability_alive(x, tx, T)
                lt_e = f.conditional_expected_number_of_purchases_up_to_time(52.0, x, tx, T)
            except Exception as e:  # lifetimes overflows for large x, T
                lt_pa = lt_e = float("nan")
            print(f"({x}, {tx}, {T}, [{', '.join(repr(u) for u in v)}]),"
                  f"  # scipy ln L {sc!r}; lifetimes p_alive {float(np.squeeze(lt_pa))!r} E52 {float(np.squeeze(lt_e))!r}")
    print("== mbg_values: name, (x, t_x, T) -> ln L, P(alive), E[Y(10)], E[Y(52)]  [mpmath]")
    for name, p in MBG.items():
        print(f"-- {name} {p}")
        for (x, tx, T) in CUSTOMERS:
            v = mbg_values_mp(p, x, tx, T, HORIZONS)
            f = ModifiedBetaGeoFitter()
            f.params_ = dict(zip(["r", "alpha", "a", "b"], p))
            lt_pa = f.conditional_probability_alive(x, tx, T)
            lt_e = f.conditional_expected_number_of_purchases_up_to_time(52.0, x, tx, T)
            lt_ll = mbg_ll_np(p, np.array([x]), np.array([tx]), np.array([T]), np.array([1.0]))
            print(f"({x}, {tx}, {T}, [{', '.join(repr(u) for u in v)}]),"
                  f"  # numpy ln L {lt_ll!r}; lifetimes p_alive {float(np.squeeze(lt_pa))!r} E52 {float(np.squeeze(lt_e))!r}")


def starts_for(data):
    x, tx, T, w = data
    rate = (w * x).sum() / (w * T / T.max()).sum()
    pareto = [[math.log(r), math.log(r / rate), math.log(s), math.log(s * l)]
              for r in (0.2, 1.0) for s in (0.3, 1.0) for l in (0.5, 2.0)]
    mbg = [[math.log(r), math.log(r / rate), math.log(a), math.log(b)]
           for r in (0.2, 1.0) for (a, b) in ((0.5, 2.0), (2.0, 8.0), (2.0, 40.0))]
    return pareto, mbg


def fit_fixed(ll, data, starts, time_params):
    x, tx, T, w = data
    scale = 1.0 / T.max()
    W = w.sum()

    def obj(th):
        p = np.exp(th)
        v = ll(p, x, tx * scale, T * scale, w)
        return -v / W if np.isfinite(v) else 1e10

    best = None
    for s0 in starts:
        res = minimize(obj, np.array(s0), method="BFGS", options=dict(gtol=1e-9, maxiter=2000))
        if best is None or res.fun < best.fun:
            best = res
    p = np.exp(best.x)
    for i in time_params:
        p[i] /= scale
    ll_unscaled = ll(p, x, tx, T, w)
    return [float(v) for v in p], float(ll_unscaled)


def section_fits(data, label):
    ps, ms = starts_for(data)
    print(f"== {label}: {len(data[0])} triples, {data[3].sum()} customers")
    print(f"pareto_nbd r, alpha, s, beta; LL:", *fit_fixed(pareto_ll_np, data, ps, [1, 3]))
    print(f"mbgnbd r, alpha, a, b; LL:", *fit_fixed(mbg_ll_np, data, ms, [1]))


# --- calibration ------------------------------------------------------------

def calibration(rows):  # noqa: the per-bucket means and the totals
    """rows: (calibration frequency, actual holdout purchases, predicted)."""
    buckets = {}
    for x, act, pred in rows:
        k = str(int(x)) if x < 7 else "7+"
        buckets.setdefault(k, []).append((act, pred))
    out = []
    for k in ["0", "1", "2", "3", "4", "5", "6", "7+"]:
        if k in buckets:
            v = np.array(buckets[k])
            out.append((k, len(v), v[:, 0].mean(), v[:, 1].mean()))
    v = np.array([(a, p) for _, a, p in rows])
    mae = np.abs(v[:, 0] - v[:, 1]).mean()
    corr = np.corrcoef(v[:, 0], v[:, 1])[0, 1]
    return out, (len(v), v[:, 0].mean(), v[:, 1].mean(), mae, corr)


def sample_days():
    import pandas as pd
    import pyarrow.parquet as pq
    files = sorted(glob.glob(__file__.replace("tests/reference/btyd_pareto_mbg.py", "data/sample/transactions/*.parquet")))
    tx = pd.concat([pq.read_table(f).to_pandas() for f in files])
    tx["day"] = tx.transaction_ts.astype("int64") // 86_400_000_000_000  # ns since 1970
    return tx.groupby(["customer_id", "day"]).size().reset_index()[["customer_id", "day"]]


def epoch_day(d):
    import pandas as pd
    return (pd.Timestamp(d) - pd.Timestamp("1970-01-01")).days


def mbg_expected(p, t, x, tx, T):
    """P(alive) E[Y(t) | alive] of MBG/NBD, vectorised (scipy hyp2f1)."""
    r, alpha, a, b = p
    tx = np.where(x > 0, tx, 0.0)
    p_alive = 1.0 / (1.0 + a / (b + x) * ((alpha + T) / (alpha + tx)) ** (r + x))
    hyp = hyp2f1(r + x, b + x + 1, a + b + x, t / (alpha + T + t))
    cond = (a + b + x) / (a - 1) * (1 - hyp * ((alpha + T) / (alpha + t + T)) ** (r + x))
    return p_alive * cond


def section_calibration(as_of="2025-11-24", hold_from="2025-11-25", hold_to="2026-11-24"):
    """The sample's MBG/NBD calibration table: fit on days <= as_of (weeks),
    predict purchases in [hold_from, hold_to] for every customer whose first
    purchase is on or before as_of, count their distinct purchase days there."""
    import pandas as pd
    d = sample_days()
    cal = d[d.day <= epoch_day(as_of)]
    g = cal.groupby("customer_id").day.agg(["min", "max", "count"])
    df = pd.DataFrame({"x": g["count"] - 1.0, "tx": (g["max"] - g["min"]) / 7.0,
                       "T": (epoch_day(as_of) - g["min"]) / 7.0})
    fitted = df[df["T"] > 0].groupby(["x", "tx", "T"]).size().reset_index(name="w")
    data = (fitted.x.values, fitted.tx.values, fitted["T"].values, fitted.w.values.astype(float))
    _, ms = starts_for(data)
    p, ll = fit_fixed(mbg_ll_np, data, ms, [1])
    print("== calibration mbgnbd params, LL:", p, ll)
    hold = d[(d.day >= epoch_day(hold_from)) & (d.day <= epoch_day(hold_to))]
    actual = hold.groupby("customer_id").size()
    df["actual"] = actual.reindex(df.index).fillna(0.0)
    t1 = (epoch_day(hold_from) - epoch_day(as_of) - 1) / 7.0
    t2 = (epoch_day(hold_to) - epoch_day(as_of)) / 7.0
    pred = mbg_expected(p, t2, df.x.values, df.tx.values, df["T"].values)
    if t1 > 0:
        pred = pred - mbg_expected(p, t1, df.x.values, df.tx.values, df["T"].values)
    df["pred"] = pred
    buckets, total = calibration(list(zip(df.x, df.actual, df.pred)))
    print("== calibration table: bucket, customers, actual_mean, predicted_mean, mae, correlation")
    for k, n, am, pm in buckets:
        sub = df[(df.x >= 7) if k == "7+" else (df.x == int(k))]
        mae = float(np.abs(sub.pred - sub.actual).mean())
        corr = float(np.corrcoef(sub.actual, sub.pred)[0, 1])
        print(f'("{k}", {n}, {am!r}, {pm!r}, {mae!r}, {corr!r}),')
    n, am, pm, mae, corr = total
    print(f'("total", {n}, {am!r}, {pm!r}, {mae!r}, {corr!r}),')


if __name__ == "__main__":
    which = sys.argv[1:] or ["values", "fit600", "sample", "calibration"]
    if "values" in which:
        section_values()
    if "gradients" in which:
        section_gradients()
    if "fit600" in which:
        section_fits(lifetimes_sample(), "fit600")
    if "sample" in which:
        data, n = sample_triples()
        section_fits(data, "sample")
    if "sample_customers" in which:
        # P(alive) and E[Y(365 days)] of a few sample customers at the optima
        # printed by `sample` (the fits are not rerun).
        sample_triples()
        df = sample_triples.customers
        h = 365.0 / 7.0
        pnbd = (1.6133990170472703, 6.6484989548727675, 1.7813525494568188, 121.81813974819065)
        mbg = (1.560445741572017, 5.651126532974338, 3.7650304544952515, 64.42447326044729)
        print("== sample_customers: id, (x, t_x, T), pareto (P(alive), E[Y]), mbgnbd (P(alive), E[Y])")
        for cid in (1, 2, 100, 4321):
            x, tx, T = df.loc[cid, ["x", "tx", "T"]]
            pv = pareto_values_mp(pnbd, x, tx, T, [h])
            mv = mbg_values_mp(mbg, x, tx, T, [h])
            print(f"({cid}, {pv[1]!r}, {pv[2]!r}, {mv[1]!r}, {mv[2]!r}),")
    if "calibration" in which:
        section_calibration()
