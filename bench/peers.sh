#!/usr/bin/env bash
# The benchmark of bench/SPEC.md: crmflow (bench/bench_job.yaml) side by side
# with the same job in DuckDB + scikit-learn and Polars + scikit-learn
# (bench/peers/), and the read floor (DuckDB reading every input column), on
# the same generated data, as whole processes, alternating, RUNS runs each.
# Checks that the outputs agree (bench/peers/compare.py), then prints median
# wall time, peak RSS, crmflow / fastest peer and crmflow / floor.
#
#   bench/peers.sh [CUSTOMERS=1000000] [RUNS=5]
#
# Everything lives under target/: the peers' venv (target/peers-venv, the
# pinned versions of bench/peers/requirements.txt), the data (generated once,
# target/bench/data-N) and the outputs (target/bench/out-N). Needs python3
# (3.10+) with venv, and network access on the first run (PyPI).
# A benchmark, not a test: on a shared machine compare ratios, not seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
runs=${2:-5}
root=$PWD
venv=$root/target/peers-venv
py=$venv/bin/python
peers=$root/bench/peers
data=$root/target/bench/data-$n
out=$root/target/bench/out-$n
results=$out/results

# Peers at their pinned versions (reinstalled when the pins change).
if [ ! -x "$py" ]; then
  python3 -m venv "$venv"
fi
if ! cmp -s "$peers/requirements.txt" "$venv/crmflow-bench-requirements.txt"; then
  "$py" -m pip install --quiet --disable-pip-version-check -r "$peers/requirements.txt"
  cp "$peers/requirements.txt" "$venv/crmflow-bench-requirements.txt"
fi

# Whole-process wall time and peak RSS: GNU time, else Python's resource module.
if [ ! -x /usr/bin/time ] && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
  apt-get install -y -qq time > /dev/null 2>&1 || true
fi
measure() { # measure OUTFILE CMD... -> OUTFILE: "wall_s max_rss_kib exit cpu_s"
  local file=$1
  shift
  if [ -x /usr/bin/time ]; then
    local rc=0
    /usr/bin/time -o "$file.v" -v "$@" || rc=$?
    "$py" - "$file.v" "$rc" > "$file" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
w = 0.0
for p in re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", t).group(1).split(":"):
    w = w * 60 + float(p)
cpu = sum(float(re.search(p + r" time \(seconds\): ([\d.]+)", t).group(1)) for p in ("User", "System"))
rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)
print(f"{w:.3f} {rss} {sys.argv[2]} {cpu:.2f}")
PY
    return "$rc"
  else
    "$py" "$peers/measure.py" "$file" "$@"
  fi
}

if [ ! -f "$data/.complete" ]; then
  echo "generating $n customers into $data"
  "$py" "$peers/gen.py" --customers "$n" --out "$data"
  touch "$data/.complete"
fi

cargo build --release --quiet
bin=$root/target/release/crmflow

echo "load average before the runs: $(cut -d" " -f1-3 /proc/loadavg) ($(nproc) CPUs)"
rm -rf "$out"
mkdir -p "$results"
log=$results/runs.tsv
for i in $(seq "$runs"); do
  for impl in crmflow duckdb polars floor; do
    case $impl in
      crmflow) cmd=("$bin" --log warn run bench/bench_job.yaml --var "data=$data" --var "out=$out/crmflow"
                    --run-results "$results/crmflow-$i.json") ;;
      duckdb) cmd=("$py" "$peers/ref_duckdb.py" "$data" "$out/duckdb") ;;
      polars) cmd=("$py" "$peers/ref_polars.py" "$data" "$out/polars") ;;
      floor) cmd=("$py" "$peers/floor.py" "$data") ;;
    esac
    rc=0
    measure "$results/time" "${cmd[@]}" > "$results/$impl-$i.stdout" 2> "$results/$impl-$i.stderr" || rc=$?
    if [ "$rc" != 0 ]; then
      echo "$impl run $i failed (exit $rc):" >&2
      tail -5 "$results/$impl-$i.stderr" >&2
      exit 1
    fi
    echo -e "$impl\t$i\t$(cat "$results/time" | tr ' ' '\t')" >> "$log"
    echo "run $i $impl: $(cut -d' ' -f1 "$results/time") s"
  done
done

echo
echo "load average after the runs: $(cut -d" " -f1-3 /proc/loadavg)"
echo "outputs (bench/SPEC.md section 7; DuckDB is the baseline):"
agree=0
"$py" "$peers/compare.py" "$out/duckdb" "$out/polars" "$out/crmflow" > "$results/compare.txt" || agree=$?
grep -E "FAIL|^==|ALL OK|MISMATCH" "$results/compare.txt"
"$py" "$peers/summary.py" "$log" "$results"
echo
echo "raw runs and the full comparison: $results"
exit "$agree"
