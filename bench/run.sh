#!/usr/bin/env bash
# Benchmark: the demo nightly job against a bare DataFusion scan of the same
# inputs (bench/scan.yaml), alternating, as whole processes, several runs
# each; prints medians and the ratio measured in the same session (these
# machines are noisy: compare ratios, not seconds).
#
#   bench/run.sh [CUSTOMERS=1000000] [RUNS=3]
#
# Data is generated once into $BENCH_DATA (default /tmp/crmflow-bench/N).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
runs=${2:-3}
data=${BENCH_DATA:-/tmp/crmflow-bench/$n}
out=$(mktemp -d)
cargo build --release --quiet
bin=target/release/crmflow
if [ ! -d "$data/customers" ]; then
  /usr/bin/time -f "generate: %e s, max RSS %M KiB" "$bin" --log warn generate --customers "$n" --out "$data"
fi
log="$out/runs.tsv"
for i in $(seq "$runs"); do
  for job in scan nightly; do
    case $job in
      scan) pipeline=bench/scan.yaml ;;
      nightly) pipeline=pipelines/crm_nightly.yaml ;;
    esac
    /usr/bin/time -o "$out/time" -f "%e %M" "$bin" --log warn run "$pipeline" \
      --var "data=$data" --var "out=$out/$job" --run-results "$out/$job-$i.json" > /dev/null
    echo -e "$job\t$i\t$(cat "$out/time")" >> "$log"
  done
done
python3 - "$log" "$out" "$runs" <<'PY'
import json, statistics, sys
log, out, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [l.split() for l in open(log)]
med = {}
for job in ("scan", "nightly"):
    walls = [float(r[2]) for r in rows if r[0] == job]
    rss = [int(r[3]) for r in rows if r[0] == job]
    med[job] = statistics.median(walls)
    print(f"{job:8} wall median {med[job]:.2f} s (min {min(walls):.2f}, max {max(walls):.2f}), max RSS {max(rss)/1024:.0f} MiB")
print(f"nightly / scan wall ratio: {med['nightly'] / med['scan']:.2f}")
steps = {}
for i in range(1, runs + 1):
    for s in json.load(open(f"{out}/nightly-{i}.json"))["steps"]:
        steps.setdefault(s["name"], []).append(s["seconds"])
    for s in json.load(open(f"{out}/nightly-{i}.json"))["sinks"]:
        steps.setdefault("sink " + s["table"], []).append(s["seconds"])
print("nightly, median seconds per step (a view's time is spent in its consumer):")
for name, v in steps.items():
    print(f"  {name:32} {statistics.median(v):8.3f}")
PY
rm -rf "$out"
