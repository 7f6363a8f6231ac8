#!/usr/bin/env bash
# Benchmark: the demo nightly job on the local engine, on standalone Ballista
# (scheduler and executor in the crmflow process) and on a cluster of one
# `crmflow scheduler` and two `crmflow executor`s on this machine, on the same
# data in the same session, one after the other, RUNS times each. Prints the
# median wall time per engine and, per engine, the median time of each step.
#
#   bench/cluster.sh [CUSTOMERS=sample] [RUNS=1]
#
# CUSTOMERS=sample uses the bundled data/sample (5,000 customers); a number
# generates that many customers once into $BENCH_DATA (default
# /tmp/crmflow-bench/N). The cluster reads and writes local disk, listed in
# engine.shared_paths (its executors are on this machine). CRMFLOW_BIN picks
# the binary (default: a release build); ENGINES a subset of
# "local standalone cluster".
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-sample}
runs=${2:-1}
engines=${ENGINES:-local standalone cluster}
if [ -z "${CRMFLOW_BIN:-}" ]; then
  cargo build --release --quiet
  bin=$PWD/target/release/crmflow
else
  bin=$(realpath "$CRMFLOW_BIN")
fi
if [ "$n" = sample ]; then
  data=$PWD/data/sample
else
  data=${BENCH_DATA:-/tmp/crmflow-bench/$n}
  if [ ! -d "$data/customers" ]; then
    "$bin" --log warn generate --customers "$n" --out "$data"
  fi
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The cluster: one scheduler, two executors (each half of the cores).
cores=$(nproc)
half=$(( cores > 1 ? cores / 2 : 1 ))
sp=$(free_port)
"$bin" scheduler --bind "127.0.0.1:$sp" > "$work/scheduler.log" 2>&1 &
pids+=($!)
for i in 0 1; do
  ep=$(free_port)
  gp=$(free_port)
  "$bin" executor --scheduler "127.0.0.1:$sp" --bind "127.0.0.1:$ep" --grpc-port "$gp" --external-host 127.0.0.1 \
    --concurrent-tasks "$half" --work-dir "$work/executor-$i" > "$work/executor-$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do
  if curl -fs "http://127.0.0.1:$sp/readyz" 2>/dev/null | grep -q "ready: 2 "; then break; fi
  sleep 0.2
done

# One pipeline file per engine, the demo's steps and SQL unchanged.
mkdir -p "$work/pipelines"
ln -s "$PWD/sql" "$work/sql"
engine_block() {
  case $1 in
    local) printf 'engine:\n  kind: local\n' ;;
    standalone) printf 'engine:\n  kind: ballista\n  standalone: true\n' ;;
    cluster) printf 'engine:\n  kind: ballista\n  url: df://127.0.0.1:%s\n  scratch: %s/scratch/\n  shared_paths: ["%s", "%s"]\n' \
      "$sp" "$work" "$work" "$data" ;;
  esac
}
for e in local standalone cluster; do
  { sed -n '1,/^name:/p' pipelines/crm_nightly.yaml; engine_block "$e"; sed '1,/^name:/d' pipelines/crm_nightly.yaml; } \
    > "$work/pipelines/$e.yaml"
done

log="$work/runs.tsv"
for i in $(seq "$runs"); do
  for e in $engines; do
    /usr/bin/time -o "$work/time" -f "%e %M" "$bin" --log warn run "$work/pipelines/$e.yaml" \
      --var "data=$data" --var "out=$work/out-$e" --run-results "$work/$e-$i.json" > /dev/null 2> "$work/$e-$i.err"
    echo -e "$e\t$i\t$(cat "$work/time")" >> "$log"
  done
done
python3 - "$log" "$work" "$runs" $engines <<'PY'
import json, statistics, sys
log, work, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [l.split() for l in open(log)]
engines = sys.argv[4:]
for e in engines:
    walls = [float(r[2]) for r in rows if r[0] == e]
    rss = [int(r[3]) for r in rows if r[0] == e]
    print(f"{e:10} wall median {statistics.median(walls):7.2f} s (min {min(walls):.2f}, max {max(walls):.2f}), client max RSS {max(rss)/1024:.0f} MiB")
print("median seconds per step and sink (a view's time is spent in its consumer):")
print(f"  {'':32} " + " ".join(f"{e:>10}" for e in engines))
table = {}
for e in engines:
    for i in range(1, runs + 1):
        r = json.load(open(f"{work}/{e}-{i}.json"))
        for s in r["steps"]:
            table.setdefault(s["name"], {}).setdefault(e, []).append(s["seconds"])
        for s in r["sinks"]:
            table.setdefault("sink " + s["table"], {}).setdefault(e, []).append(s["seconds"])
for name, by in table.items():
    print(f"  {name:32} " + " ".join(f"{statistics.median(by.get(e, [0])):10.3f}" for e in engines))
PY
