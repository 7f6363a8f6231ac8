#!/usr/bin/env bash
# Benchmark: BG/NBD + Gamma-Gamma in crmflow against the Python `lifetimes`
# package on the same customers, side by side in one run.
#
#   bench/lifetimes.sh [CUSTOMERS=1000000] [RUNS=3]
#
# crmflow runs bench/lifetimes.yaml (only the `bgnbd` clv stage, weeks,
# horizon 52, discount 0.10, and its two sinks) as a whole process: reading
# and aggregating the transactions, both fits, scoring every customer and
# writing. lifetimes 0.11.3 then gets crmflow's own RFM summary (frequency,
# recency, t, monetary_value of the scored table, read before the clock
# starts) and is timed for its compute alone: BetaGeoFitter.fit,
# GammaGammaFitter.fit on repeat buyers and customer_lifetime_value(time=12,
# discount_rate=0.1/12, freq="W"). Prints the median times, the ratio
# lifetimes compute / crmflow whole process, and both fits' parameters
# (which must agree to about 4 digits: both stop at a tolerance).
#
# The data is generated once by `crmflow generate` into target/bench/gen-N;
# lifetimes and its pinned old stack live in target/lifetimes-venv.
# A benchmark, not a test: on a shared machine compare ratios, not seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
runs=${2:-3}
root=$PWD
venv=$root/target/lifetimes-venv
py=$venv/bin/python
if [ ! -x "$py" ]; then
  python3 -m venv "$venv"
  "$py" -m pip install --quiet --disable-pip-version-check \
    lifetimes==0.11.3 "pandas==1.5.3" "numpy==1.24.4" "scipy==1.11.4" "pyarrow==14.0.2"
fi
if [ -z "${CRMFLOW_BIN:-}" ]; then
  cargo build --release --quiet
  bin=$root/target/release/crmflow
else
  bin=$(realpath "$CRMFLOW_BIN")
fi
data=${BENCH_DATA:-$root/target/bench/gen-$n}
if [ ! -d "$data/transactions" ]; then
  "$bin" --log warn generate --customers "$n" --out "$data"
fi
out=$root/target/bench/lifetimes-$n
mkdir -p "$out"

wall() { # wall OUTFILE CMD... -> OUTFILE: wall seconds
  local file=$1
  shift
  "$py" - "$file" "$@" <<'PY'
import subprocess, sys, time
t0 = time.perf_counter()
subprocess.run(sys.argv[2:], check=True)
open(sys.argv[1], "w").write(f"{time.perf_counter() - t0:.3f}\n")
PY
}

for i in $(seq "$runs"); do
  wall "$out/crmflow-$i.t" "$bin" --log warn run bench/lifetimes.yaml --var data="$data" --var out="$out/run" > /dev/null
  "$py" "$root/bench/lifetimes_fit.py" "$out/run/clv_bgnbd" "$out/lifetimes-$i.json"
done

"$py" - "$out" "$runs" <<'PY'
import json, statistics, sys, glob
import pyarrow.parquet as pq
out, runs = sys.argv[1], int(sys.argv[2])
c = [float(open(f"{out}/crmflow-{i}.t").read()) for i in range(1, runs + 1)]
lt = [json.load(open(f"{out}/lifetimes-{i}.json")) for i in range(1, runs + 1)]
med = statistics.median
print(f"{'':34} {'median s':>9}")
print(f"{'crmflow whole process':34} {med(c):9.2f}")
for k in ("bg_fit", "gg_fit", "clv"):
    print(f"{'lifetimes ' + k:34} {med(r[k] for r in lt):9.2f}")
total = med(r["bg_fit"] + r["gg_fit"] + r["clv"] for r in lt)
print(f"{'lifetimes compute':34} {total:9.2f}")
print(f"lifetimes compute / crmflow whole process: {total / med(c):.1f}x")
m = pq.read_table(glob.glob(f"{out}/run/clv_bgnbd_model/*.parquet")).to_pylist()
ours = {r["name"]: r["value"] for r in m}
print("parameter   crmflow        lifetimes")
for k, v in lt[0]["params"].items():
    print(f"{k:8} {ours.get(k, float('nan')):12.6g} {v:12.6g}")
PY
