"""Reference RFM scores and segments for tests/it/rfm.rs
(rfm_matches_the_pandas_reference), computed with pandas and numpy,
independently of crmflow's DataFusion plan.

Run (checked on Python 3.11 with pandas 2.2.3, numpy 2.1.3):

    python3 -m venv target/ref-venv
    target/ref-venv/bin/pip install pandas==2.2.3 numpy==2.1.3
    target/ref-venv/bin/python tests/reference/rfm_pandas.py > tests/reference/rfm_fixture.csv

The fixture has many ties (integer recency and frequency, monetary rounded
to 5) and some null monetary values. The output is CSV: the inputs
(customer_id, recency_days, frequency, monetary; monetary empty when null)
and the expected r, f, m scores and segment.

Rules (README, rfm): score = 1 + floor(5 (rank - 1) / n), rank = the
minimum rank of the value ordered from worst to best (recency descending,
frequency and monetary ascending), nulls ranked first; fm = floor((f + m) / 2);
the segment is looked up in the README's R x FM grid.
"""

import sys

import numpy as np
import pandas as pd

N = 1500
rng = np.random.default_rng(20261201)
df = pd.DataFrame(
    {
        "customer_id": np.arange(1, N + 1),
        "recency_days": rng.integers(0, 60, N) * 7,
        "frequency": rng.poisson(2.5, N),
        "monetary": np.round(rng.gamma(2.0, 60.0, N) / 5.0) * 5.0,
    }
)
df.loc[rng.random(N) < 0.03, "monetary"] = np.nan


def score(values: pd.Series, ascending: bool) -> np.ndarray:
    # Worst first: rank of the value in the worst-to-best order, ties get
    # the lowest rank of their group, NaN ranked before everything.
    key = values if ascending else -values
    rank = key.rank(method="min", na_option="top").to_numpy().astype(np.int64)
    return 1 + (5 * (rank - 1)) // len(values)


r = score(df["recency_days"], ascending=False)
f = score(df["frequency"], ascending=True)
m = score(df["monetary"], ascending=True)
fm = (f + m) // 2

# The README grid: rows r = 5 .. 1, columns fm = 1 .. 5.
GRID = [
    ["New Customers", "Potential Loyalist", "Potential Loyalist", "Champions", "Champions"],
    ["Promising", "Potential Loyalist", "Potential Loyalist", "Loyal Customers", "Loyal Customers"],
    ["About to Sleep", "About to Sleep", "Need Attention", "Loyal Customers", "Loyal Customers"],
    ["Hibernating", "Hibernating", "At Risk", "At Risk", "Can't Lose Them"],
    ["Lost", "Hibernating", "At Risk", "At Risk", "Can't Lose Them"],
]
segment = [GRID[5 - a][b - 1] for a, b in zip(r, fm)]

out = sys.stdout
out.write("customer_id,recency_days,frequency,monetary,r,f,m,segment\n")
for i in range(N):
    mon = df["monetary"].iat[i]
    mon_s = "" if np.isnan(mon) else repr(float(mon))
    out.write(
        f"{df['customer_id'].iat[i]},{df['recency_days'].iat[i]},{df['frequency'].iat[i]},{mon_s},"
        f"{r[i]},{f[i]},{m[i]},{segment[i]}\n"
    )
