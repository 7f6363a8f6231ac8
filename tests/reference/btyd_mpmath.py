"""Reference values for the BG/NBD and Gamma-Gamma models of src/stages/btyd/,
from the papers' formulas evaluated directly in high precision with mpmath.

Run (checked with mpmath 1.4.1; the hard cases take a few seconds):

    python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install mpmath
    /tmp/refvenv/bin/python tests/reference/btyd_mpmath.py

Each block of output is pinned in one unit test:

    bgnbd_customers     -> bgnbd.rs, bgnbd_matches_lifetimes_reference (mp.dps = 50):
                           the weighted log-likelihood (paper eq. 6 with Beta/Gamma
                           functions), P(alive) (Hardie's note 021) and E[Y(39)],
                           E[Y(200)] (paper eq. 10 with mp.hyp2f1) of CUSTOMERS at
                           the CDNOW estimates
    bgnbd_hard_cases    -> bgnbd.rs, expected_purchases_hard_cases_match_mpmath
                           (mp.dps = 80), the `cases` table
    bgnbd_grid_cases    -> the same test, the `grid` table (inputs drawn from a
                           randomised grid; their values recomputed here)
    gamma_gamma_values  -> gamma_gamma.rs, gamma_gamma_matches_lifetimes_reference
                           (mp.dps = 50): the weighted log-likelihood (note 025
                           eq. 1a), the conditional expected spends (eq. 5) and the
                           population mean spend

tests/reference/btyd_lifetimes.py prints the same quantities from lifetimes
0.11.3 as a cross-check. Arguments are the f64 values the Rust tests pass
(Python floats convert to mpmath exactly).
"""

from mpmath import mp, mpf

CDNOW = (0.243, 4.414, 0.793, 2.426)  # (r, alpha, a, b)
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


def bgnbd_ll(params, x, tx, T):
    """ln L of one customer, paper eq. (6)."""
    R, AL, A, B = (mpf(v) for v in params)
    x, tx, T = mpf(x), mpf(tx), mpf(T)
    common = mp.gamma(R + x) * AL**R / mp.gamma(R)
    alive = mp.beta(A, B + x) / mp.beta(A, B) * common / (AL + T) ** (R + x)
    dead = mp.beta(A + 1, B + x - 1) / mp.beta(A, B) * common / (AL + tx) ** (R + x) if x > 0 else 0
    return mp.log(alive + dead)


def p_alive(params, x, tx, T):
    """P(alive | x, t_x, T), Hardie's note 021 eq. (2)."""
    R, AL, A, B = (mpf(v) for v in params)
    x, tx, T = mpf(x), mpf(tx), mpf(T)
    if x == 0:
        return mpf(1)
    return 1 / (1 + A / (B + x - 1) * ((AL + T) / (AL + tx)) ** (R + x))


def expected(params, t, x, tx, T):
    """E[Y(t) | x, t_x, T], paper eq. (10)."""
    R, AL, A, B = (mpf(v) for v in params)
    t, x, tx, T = mpf(t), mpf(x), mpf(tx), mpf(T)
    z = t / (AL + T + t)
    num = (A + B + x - 1) / (A - 1) * (1 - ((AL + T) / (AL + T + t)) ** (R + x) * mp.hyp2f1(R + x, B + x, A + B + x - 1, z))
    den = 1 + (A / (B + x - 1) * ((AL + T) / (AL + tx)) ** (R + x) if x > 0 else 0)
    return num / den


def bgnbd_customers():
    mp.dps = 50
    ll = sum(mpf(w) * bgnbd_ll(CDNOW, x, tx, T) for x, tx, T, w in CUSTOMERS)
    print("# bgnbd_customers: weighted LL at CDNOW")
    print(mp.nstr(ll, 17))
    print("# (p_alive, E[Y(39)], E[Y(200)]) per customer")
    for x, tx, T, _ in CUSTOMERS:
        vals = [p_alive(CDNOW, x, tx, T), expected(CDNOW, 39.0, x, tx, T), expected(CDNOW, 200.0, x, tx, T)]
        print("(" + ", ".join(mp.nstr(v, 17) for v in vals) + "),")


# Parameter sets of expected_purchases_hard_cases_match_mpmath. Set 2 has
# a = 1 exactly, where eq. (10) is 0/0: its reference is taken at a = 1 + 1e-40.
# Set 4 with x = 0 has c = a + b + x - 1 = 0: its reference is taken at
# b = 0.6 +- 1e-30 (both are printed; they agree).
HARD_SETS = [
    CDNOW,
    (20.0, 500.0, 30.0, 100.0),
    (0.5, 2.0, 1.0, 3.0),
    (0.5, 0.01, 0.3, 0.5),
    (0.3, 0.05, 0.4, 0.6),
]
# (horizon, x, t_x, T), the same for every set
HARD_CUSTOMERS = [
    (1000.0, 0.0, 0.0, 0.5),
    (5000.0, 500.0, 4990.0, 5000.0),
    (5000.0, 500.0, 100.0, 5000.0),
    (52.0, 1.0, 1.0, 1.0),
    (30.0, 3.0, 20.0, 40.0),
    (1e-06, 2.0, 3.0, 10.0),
]


def bgnbd_hard_cases():
    mp.dps = 80
    print("# bgnbd_hard_cases: (set, horizon, x, t_x, T, E[Y])")
    for i, params in enumerate(HARD_SETS):
        r, alpha, a, b = (mpf(v) for v in params)
        if a == 1:
            a = 1 + mpf("1e-40")
        for h, x, tx, T in HARD_CUSTOMERS:
            if x == 0 and a + b + x - 1 == 0:
                lo = expected((r, alpha, a, b - mpf("1e-30")), h, x, tx, T)
                hi = expected((r, alpha, a, b + mpf("1e-30")), h, x, tx, T)
                print(f"({i}, {h!r}, {x!r}, {tx!r}, {T!r}, {mp.nstr(lo, 20)}),  # b - 1e-30; b + 1e-30: {mp.nstr(hi, 20)}")
            else:
                v = expected((r, alpha, a, b), h, x, tx, T)
                print(f"({i}, {h!r}, {x!r}, {tx!r}, {T!r}, {mp.nstr(v, 20)}),")


# (r, alpha, a, b, horizon, x, t_x, T) where z = t/(alpha+T+t) is close to 1
# with large parameters (the 1 - z connection formula, and a close to 1).
GRID_CASES = [
    (1.0599110073322462, 16.767646999652097, 1.5848124269858153, 248.08966027938817, 9156.237759932355, 0.0, 0.0, 0.583397840442589),
    (0.043523710734417, 0.2800290432589626, 38.36481910274672, 241.92479316914958, 677.3390517290968, 30.0, 1.549846680597167, 1.6474825058116511),
    (0.020908713711520404, 1.6336277564723731, 0.9995081467395078, 77.32935451187147, 333589.43863757123, 1.0, 1.1400359615907756, 6.290631260161198),
]


def bgnbd_grid_cases():
    mp.dps = 80
    print("# bgnbd_grid_cases: E[Y]")
    for r, alpha, a, b, h, x, tx, T in GRID_CASES:
        print(mp.nstr(expected((r, alpha, a, b), h, x, tx, T), 20))


GG = (6.25, 3.74, 15.45)  # (p, q, v)
# (frequency, monetary value, weight)
SPENDS = [(1.0, 20.0, 2.0), (2.0, 35.5, 1.0), (5.0, 12.3, 1.0), (10.0, 80.0, 1.0), (300.0, 25.0, 1.0), (3.0, 0.5, 3.0)]


def gamma_gamma_values():
    mp.dps = 50
    p, q, v = (mpf(t) for t in GG)
    ll = 0
    for x, m, w in SPENDS:
        x, m, w = mpf(x), mpf(m), mpf(w)
        px = p * x
        ll += w * (
            mp.loggamma(px + q) - mp.loggamma(px) - mp.loggamma(q) + q * mp.log(v) + (px - 1) * mp.log(m)
            + px * mp.log(x) - (px + q) * mp.log(x * m + v)
        )
    print("# gamma_gamma_values: weighted LL")
    print(mp.nstr(ll, 17))
    print("# E[Z | x, m] per row")
    for x, m, _ in SPENDS:
        x, m = mpf(x), mpf(m)
        print(mp.nstr(p * (v + x * m) / (p * x + q - 1), 17))
    print("# population mean p v / (q - 1)")
    print(mp.nstr(p * v / (q - 1), 17))


if __name__ == "__main__":
    bgnbd_customers()
    gamma_gamma_values()
    bgnbd_grid_cases()
    bgnbd_hard_cases()
