#!/usr/bin/env python3
"""Deterministic synthetic CRM data generator (customers, transactions, interactions).

Usage: python3 gen.py --customers 100000 --out data/small [--seed 20261124]

Writes <out>/customers/part-K.parquet, <out>/transactions/part-K.parquet,
<out>/interactions/part-K.parquet (zstd, <= 1,000,000 rows per file,
row groups of 131,072 rows). Same --customers and --seed => identical data.

Purchase behaviour follows the BG/NBD story (Fader, Hardie & Lee 2005):
  * customer i is "born" at signup (a random time on signup_date) and makes
    its first purchase then;
  * while alive it buys according to a Poisson process with rate
    lambda_i ~ Gamma(shape=1.5, scale=10) purchases/year;
  * after every purchase it drops out for good with probability
    p_i ~ Beta(3, 50).
The observation window is the 3 calendar years ending 2026-11-24 (inclusive),
i.e. [2023-11-25 00:00, 2026-11-25 00:00).
See bench/SPEC.md for the full description.
"""
import argparse
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

US_PER_DAY = 86_400_000_000
US_PER_YEAR = int(365.25 * US_PER_DAY)  # BG/NBD time unit

# Observation window: [WINDOW_START, WINDOW_END) ; last day = 2026-11-24.
WINDOW_START_DAY = int(np.datetime64("2023-11-25", "D").astype(np.int64))
WINDOW_END_DAY = int(np.datetime64("2026-11-25", "D").astype(np.int64))
N_DAYS = WINDOW_END_DAY - WINDOW_START_DAY  # 1096
WINDOW_END_US = WINDOW_END_DAY * US_PER_DAY

ROWS_PER_FILE = 1_000_000
ROW_GROUP = 131_072

COUNTRIES = ["US", "GB", "DE", "FR", "CA", "AU", "NL", "SE", "ES", "IT",
             "BR", "MX", "JP", "IN", "PL", "IE", "BE", "CH", "AT", "DK"]
CHANNELS = ["organic", "paid_search", "social", "email", "referral", "affiliate", "display"]
CHANNEL_P = [0.30, 0.22, 0.18, 0.10, 0.08, 0.07, 0.05]
CHANNEL_CAC = [15.0, 45.0, 30.0, 10.0, 20.0, 35.0, 50.0]  # median acquisition cost per channel
CATEGORIES = ["electronics", "apparel", "home", "beauty", "sports", "toys", "books",
              "grocery", "garden", "automotive", "health", "jewelry", "office", "pets", "music"]
KINDS = ["web_visit", "email_open", "email_click", "support_ticket", "app_session"]
KIND_P = [0.40, 0.22, 0.10, 0.05, 0.23]
# log-normal duration (seconds): (median, sigma) per kind
KIND_DUR = [(90.0, 0.9), (15.0, 0.7), (30.0, 0.8), (600.0, 0.8), (240.0, 0.9)]

# BG/NBD hyper-parameters
LAMBDA_SHAPE, LAMBDA_SCALE = 1.5, 10.0  # purchases per year while alive
DROP_A, DROP_B = 3.0, 50.0
# interactions: rate per year while "engaged"
IX_SHAPE, IX_SCALE = 2.0, 6.7


def zipf_p(n, s=1.0):
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


def dict_strings(codes, values):
    """Plain Arrow string array from small-integer codes."""
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)),
                                          pa.array(values, pa.string())).cast(pa.string())


def write_table(tbl, directory):
    os.makedirs(directory, exist_ok=True)
    for f in os.listdir(directory):
        if f.endswith(".parquet"):
            os.remove(os.path.join(directory, f))
    n = tbl.num_rows
    for k, start in enumerate(range(0, max(n, 1), ROWS_PER_FILE)):
        pq.write_table(tbl.slice(start, ROWS_PER_FILE), os.path.join(directory, f"part-{k}.parquet"),
                       compression="zstd", row_group_size=ROW_GROUP)


def segment_positions(counts):
    """For run-length counts, return (owner index per element, position within run)."""
    owner = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    pos = np.arange(counts.sum()) - np.repeat(starts, counts)
    return owner, pos


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=20261124)
    args = ap.parse_args()
    N = args.customers
    rng = np.random.default_rng(args.seed)
    t0 = time.time()

    # ---------------- customers ----------------
    # signups grow over the window (density ~ exp(0.6 * x)); ids follow signup order
    u = np.sort(rng.random(N))
    g = 0.6
    day_off = np.floor(N_DAYS * np.log1p(u * np.expm1(g)) / g).astype(np.int64)
    day_off = np.minimum(day_off, N_DAYS - 1)
    signup_day = WINDOW_START_DAY + day_off
    customer_id = np.arange(1, N + 1, dtype=np.int64)
    country = rng.choice(len(COUNTRIES), size=N, p=zipf_p(len(COUNTRIES), 0.9))
    age = np.clip(np.rint(rng.normal(40.0, 13.0, N)), 18, 90).astype(np.int32)
    gender = rng.choice(3, size=N, p=[0.48, 0.48, 0.04])
    income = np.round(rng.lognormal(np.log(52000.0), 0.6, N), 2)
    channel = rng.choice(len(CHANNELS), size=N, p=CHANNEL_P)
    acq = np.round(np.asarray(CHANNEL_CAC)[channel] * rng.lognormal(0.0, 0.5, N), 2)

    # ---------------- BG/NBD purchase process ----------------
    birth_us = signup_day * US_PER_DAY + rng.integers(0, US_PER_DAY, N)  # first purchase time
    T_us = WINDOW_END_US - birth_us  # > 0
    T_y = T_us / US_PER_YEAR
    lam = rng.gamma(LAMBDA_SHAPE, LAMBDA_SCALE, N)
    p_drop = rng.beta(DROP_A, DROP_B, N)
    K = rng.geometric(p_drop)  # purchases made before dropping out (incl. first), if unobserved
    M = rng.poisson(lam * T_y)  # Poisson arrivals in (0, T] if never dropping out
    n_rep = np.minimum(K - 1, M)
    alive = (K - 1) > M
    n_tx = 1 + n_rep
    # repeat purchase times = first n_rep order statistics of M uniforms on (0,T):
    # U_(j) = S_j / (S_nrep + G), S_j = cumsum of Exp(1), G ~ Gamma(M + 1 - n_rep)
    E = rng.standard_exponential(int(n_rep.sum()))
    owner_r, _ = segment_positions(n_rep)
    cs = np.cumsum(E)
    starts = np.cumsum(n_rep) - n_rep
    base = np.where(starts > 0, cs[np.maximum(starts - 1, 0)], 0.0)
    S = cs - base[owner_r]
    S_last = np.zeros(N)
    has = n_rep > 0
    S_last[has] = S[(starts + n_rep - 1)[has]]
    G = rng.gamma((M + 1 - n_rep).astype(np.float64), 1.0)
    denom = S_last + G
    rep_off = np.clip(np.rint(T_us[owner_r] * (S / denom[owner_r])), 1, T_us[owner_r] - 1).astype(np.int64)
    # assemble: first purchase at birth, then repeats
    tx_owner = np.concatenate([np.arange(N), owner_r])
    tx_ts = np.concatenate([birth_us, birth_us[owner_r] + rep_off])
    n_total = len(tx_ts)
    # repeat offsets are non-decreasing within a customer, so the last one is the latest purchase
    last_tx_us = birth_us.copy()
    last_tx_us[has] += rep_off[(starts + n_rep - 1)[has]]

    # spend: per-customer mean ~ Gamma(3, 20) * (income/52000)^0.3 ; amount ~ Gamma(4, mean/4)
    mean_amt = rng.gamma(3.0, 20.0, N) * (income / 52000.0) ** 0.3
    amount = np.maximum(np.round(rng.gamma(4.0, 1.0, n_total) * (mean_amt[tx_owner] / 4.0), 2), 0.01)
    quantity = (1 + rng.poisson(0.6, n_total)).astype(np.int32)
    category = rng.choice(len(CATEGORIES), size=n_total, p=zipf_p(len(CATEGORIES), 0.8))

    order = np.argsort(tx_ts, kind="stable")
    tx = pa.table({
        "transaction_id": pa.array(np.arange(1, n_total + 1, dtype=np.int64)),
        "customer_id": pa.array(customer_id[tx_owner[order]]),
        "transaction_ts": pa.array(tx_ts[order], pa.timestamp("us")),
        "amount": pa.array(amount[order]),
        "quantity": pa.array(quantity[order]),
        "product_category": dict_strings(category[order], CATEGORIES),
    })
    del order, tx_owner, tx_ts, amount, quantity, category, E, S, cs, owner_r, rep_off

    # ---------------- interactions ----------------
    # engaged from birth until window end (alive) or until last purchase + Exp(60 d) (dropped out)
    tail = np.rint(rng.exponential(60.0, N) * US_PER_DAY).astype(np.int64)
    end_us = np.where(alive, WINDOW_END_US, np.minimum(WINDOW_END_US, last_tx_us + tail))
    span_us = np.maximum(end_us - birth_us, 1)
    rho = rng.gamma(IX_SHAPE, IX_SCALE, N) * (lam / (LAMBDA_SHAPE * LAMBDA_SCALE)) ** 0.3
    n_ix = rng.poisson(rho * span_us / US_PER_YEAR)
    ix_owner = np.repeat(np.arange(N), n_ix)
    n_ix_total = len(ix_owner)
    ix_ts = birth_us[ix_owner] + np.floor(rng.random(n_ix_total) * span_us[ix_owner]).astype(np.int64)
    kind = rng.choice(len(KINDS), size=n_ix_total, p=KIND_P)
    med = np.log(np.asarray([d[0] for d in KIND_DUR]))[kind]
    sig = np.asarray([d[1] for d in KIND_DUR])[kind]
    duration = np.clip(np.rint(np.exp(med + sig * rng.standard_normal(n_ix_total))), 1, 86_400).astype(np.int32)
    order = np.argsort(ix_ts, kind="stable")
    ix = pa.table({
        "interaction_id": pa.array(np.arange(1, n_ix_total + 1, dtype=np.int64)),
        "customer_id": pa.array(customer_id[ix_owner[order]]),
        "interaction_ts": pa.array(ix_ts[order], pa.timestamp("us")),
        "kind": dict_strings(kind[order], KINDS),
        "duration_s": pa.array(duration[order]),
    })
    del order, ix_owner, ix_ts, kind, duration

    cust = pa.table({
        "customer_id": pa.array(customer_id),
        "signup_date": pa.array(signup_day.astype(np.int32), pa.date32()),
        "country": dict_strings(country, COUNTRIES),
        "age": pa.array(age),
        "gender": dict_strings(gender, ["M", "F", "U"]),
        "income": pa.array(income),
        "acquisition_cost": pa.array(acq),
        "channel": dict_strings(channel, CHANNELS),
    })

    os.makedirs(args.out, exist_ok=True)
    write_table(cust, os.path.join(args.out, "customers"))
    write_table(tx, os.path.join(args.out, "transactions"))
    write_table(ix, os.path.join(args.out, "interactions"))
    print(f"customers={N} transactions={tx.num_rows} ({tx.num_rows / N:.2f}/cust) "
          f"interactions={ix.num_rows} ({ix.num_rows / N:.2f}/cust) alive_at_end={alive.mean():.3f} "
          f"seed={args.seed} in {time.time() - t0:.1f}s -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
