"""lifetimes' side of bench/lifetimes.sh: fits BG/NBD and Gamma-Gamma on
crmflow's RFM summary (the scored table's frequency, recency, t and
monetary_value, in weeks) and computes the 12-month discounted CLV, timing
the compute alone. Writes the times and parameters as JSON.

    python bench/lifetimes_fit.py SCORED_DIR OUT.json
"""

import glob
import json
import sys
import time

import pyarrow.parquet as pq
from lifetimes import BetaGeoFitter, GammaGammaFitter

scored, out = sys.argv[1], sys.argv[2]
cols = ["frequency", "recency", "t", "monetary_value"]
df = pq.read_table(sorted(glob.glob(f"{scored}/**/*.parquet", recursive=True)), columns=cols).to_pandas()
# crmflow fits on customers with t > 0 (a first purchase on as_of carries no
# information); so does lifetimes here.
df = df[df["t"] > 0]

t0 = time.perf_counter()
bg = BetaGeoFitter(penalizer_coef=0.0)
bg.fit(df["frequency"], df["recency"], df["t"])
t1 = time.perf_counter()
rep = df[df["frequency"] > 0]
gg = GammaGammaFitter(penalizer_coef=0.0)
gg.fit(rep["frequency"], rep["monetary_value"])
t2 = time.perf_counter()
clv = gg.customer_lifetime_value(
    bg, df["frequency"], df["recency"], df["t"], df["monetary_value"], time=12, discount_rate=0.1 / 12, freq="W"
)
t3 = time.perf_counter()

params = {k: float(v) for k, v in bg.params_.items()}
params.update({k: float(v) for k, v in gg.params_.items()})
json.dump(
    {"bg_fit": t1 - t0, "gg_fit": t2 - t1, "clv": t3 - t2, "customers": len(df), "clv_sum": float(clv.sum()), "params": params},
    open(out, "w"),
)
