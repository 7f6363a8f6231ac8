"""Reference values for the BG/NBD and Gamma-Gamma models of src/stages/btyd/
from the Python `lifetimes` package, whose conventions (time scaling,
penalizer, weights) the fits follow.

Run (checked on Python 3.11 with lifetimes 0.11.3, numpy 1.24.4, pandas 1.5.3,
scipy 1.11.4, autograd 1.9.1; takes about a minute):

    python3 -m venv /tmp/ltvenv
    /tmp/ltvenv/bin/pip install lifetimes==0.11.3 "pandas<2" "numpy<1.25" "scipy<1.12"
    /tmp/ltvenv/bin/python tests/reference/btyd_lifetimes.py

Each block of output is used by one unit test:

    bgnbd_customers     -> bgnbd.rs, bgnbd_matches_lifetimes_reference: lifetimes'
                           values of the quantities pinned there from
                           tests/reference/btyd_mpmath.py (they agree to ~1e-12)
    gamma_gamma_values  -> gamma_gamma.rs, gamma_gamma_matches_lifetimes_reference
                           (the log-likelihood pinned there is mpmath's; the
                           spends agree with both)
    bgnbd_sample        -> bgnbd_fit.rs, LIFETIMES_SAMPLE (the 600-customer data set)
    bgnbd_fit           -> bgnbd_fit.rs, bgnbd_fit_matches_lifetimes_optimum: the
                           optimum of lifetimes' own objective (scipy BFGS to
                           gtol = 1e-12) for penalizers 0 and 0.1, and
                           BetaGeoFitter's standard_errors_
    gamma_gamma_fit     -> gamma_gamma.rs, gamma_gamma_fit_matches_lifetimes_optimum:
                           the same for GammaGammaFitter, penalizers 0 and 0.001,
                           on the data set that test builds
"""

import math
import warnings

import numpy as np
import pandas as pd
from autograd import value_and_grad
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.generate_data import beta_geometric_nbd_model
from scipy.optimize import minimize

warnings.simplefilter("ignore")

CDNOW = dict(r=0.243, alpha=4.414, a=0.793, b=2.426)
# (x, t_x, T, weight), = CUSTOMERS in src/stages/btyd/test_support.rs
CUSTOMERS = [
    (0.0, 0.0, 38.86, 3.0),
    (1.0, 30.43, 38.86, 1.0),
    (2.0, 1.71, 38.86, 2.0),
    (5.0, 10.0, 40.0, 1.0),
    (10.0, 35.0, 38.5, 1.0),
    (3.0, 20.5, 39.0, 4.0),
    (0.0, 0.0, 5.0, 1.0),
    (300.0, 2990.0, 3000.0, 1.0),
]
GG = dict(p=6.25, q=3.74, v=15.45)
SPENDS = [(1.0, 20.0, 2.0), (2.0, 35.5, 1.0), (5.0, 12.3, 1.0), (10.0, 80.0, 1.0), (300.0, 25.0, 1.0), (3.0, 0.5, 3.0)]


def bgnbd_customers():
    x, tx, T, w = (np.array(col, float) for col in zip(*CUSTOMERS))
    log_params = np.log([CDNOW["r"], CDNOW["alpha"], CDNOW["a"], CDNOW["b"]])
    ll = -BetaGeoFitter._negative_log_likelihood(log_params, x, tx, T, w, 0.0) * w.sum()
    bgf = BetaGeoFitter()
    bgf.params_ = pd.Series(CDNOW)
    pa = bgf.conditional_probability_alive(x, tx, T)
    e39 = bgf.conditional_expected_number_of_purchases_up_to_time(39.0, x, tx, T)
    e200 = bgf.conditional_expected_number_of_purchases_up_to_time(200.0, x, tx, T)
    print("# bgnbd_customers: weighted LL at CDNOW")
    print(repr(float(ll)))
    print("# (p_alive, E[Y(39)], E[Y(200)]) per customer")
    for row in zip(pa, e39, e200):
        print("(" + ", ".join(repr(float(v)) for v in row) + "),")


def gamma_gamma_values():
    f, m, w = (np.array(col, float) for col in zip(*SPENDS))
    log_params = np.log([GG["p"], GG["q"], GG["v"]])
    ll = -GammaGammaFitter._negative_log_likelihood(log_params, f, m, w, 0.0) * w.sum()
    ggf = GammaGammaFitter()
    ggf.params_ = pd.Series(GG)
    print("# gamma_gamma_values: weighted LL")
    print(repr(float(ll)))
    print("# E[Z | x, m] per row, then the population mean (x = 0)")
    for v in ggf.conditional_expected_average_profit(f, m):
        print(repr(float(v)))
    print(repr(float(ggf.conditional_expected_average_profit(0.0, 0.0))))


def bgnbd_sample():
    np.random.seed(7)
    T = np.random.choice([20.0, 30.0, 40.0], size=600)
    df = beta_geometric_nbd_model(T, 0.25, 4.0, 0.8, 2.5, size=600)
    df["recency"] = np.ceil(df["recency"]).clip(upper=df["T"]) * (df["frequency"] > 0)
    agg = df.groupby(["frequency", "recency", "T"]).size()
    print("# bgnbd_sample: LIFETIMES_SAMPLE")
    print(";".join(f"{int(f)},{int(r)},{int(t)},{n}" for (f, r, t), n in agg.items()))
    f, rec, T = (np.array(agg.index.get_level_values(i), float) for i in range(3))
    return f, rec, T, np.array(agg.values, float)


def bgnbd_fit(f, rec, T, w):
    print("# bgnbd_fit: (r, alpha, a, b) at the optimum, per penalizer")
    scale = T.max()
    for pen in [0.0, 0.1]:
        res = minimize(
            value_and_grad(BetaGeoFitter._negative_log_likelihood),
            0.1 * np.ones(4),
            jac=True,
            method="BFGS",
            args=(f, rec / scale, T / scale, w, pen),
            options=dict(gtol=1e-12),
        )
        r, alpha, a, b = np.exp(res.x)
        print(f"penalizer {pen}: {[float(r), float(alpha * scale), float(a), float(b)]}")
        bgf = BetaGeoFitter(penalizer_coef=pen).fit(f, rec, T, weights=w)
        print(f"  BetaGeoFitter.fit params_: {[float(v) for v in bgf.params_[['r', 'alpha', 'a', 'b']]]}")
        print(f"  standard_errors_: {[float(v) for v in bgf.standard_errors_[['r', 'alpha', 'a', 'b']]]}")


def gamma_gamma_data():
    """The data set of gamma_gamma_fit_matches_lifetimes_optimum, with the same f64 operations."""
    f, m, w = [], [], []
    for i in range(200):
        x = 1.0 + float(i * 7 % 12)
        u = (float(i * 53 % 101) + 0.5) / 101.0
        f.append(x)
        m.append(30.0 * (0.2 + 1.6 * u) * (1.0 + 0.5 * (float(i * 17 % 13) - 6.0) / (6.0 * math.sqrt(x))))
        w.append(1.0 + float(i % 2))
    return np.array(f), np.array(m), np.array(w)


def gamma_gamma_fit():
    f, m, w = gamma_gamma_data()
    print("# gamma_gamma_fit: (p, q, v) at the optimum, per penalizer")
    for pen in [0.0, 0.001]:
        res = minimize(
            value_and_grad(GammaGammaFitter._negative_log_likelihood),
            np.log([2.0, 3.0, 30.0]),
            jac=True,
            method="BFGS",
            args=(f, m, w, pen),
            options=dict(gtol=1e-12),
        )
        print(f"penalizer {pen}: {[float(v) for v in np.exp(res.x)]}")
        ggf = GammaGammaFitter(penalizer_coef=pen).fit(f, m, weights=w)
        print(f"  GammaGammaFitter.fit params_: {[float(v) for v in ggf.params_[['p', 'q', 'v']]]}")
        print(f"  standard_errors_: {[float(v) for v in ggf.standard_errors_[['p', 'q', 'v']]]}")


if __name__ == "__main__":
    bgnbd_customers()
    gamma_gamma_values()
    bgnbd_fit(*bgnbd_sample())
    gamma_gamma_fit()
