#!/usr/bin/env python3
"""Summarizes the runs of bench/peers.sh: median wall, peak RSS, the ratios of
crmflow to the fastest peer and to the read floor, and crmflow's median time
per step and sink (from its run results).

Usage: python3 summary.py RUNS_TSV RESULTS_DIR
"""
import glob
import json
import os
import statistics
import sys

NAMES = {
    "crmflow": "crmflow (bench/bench_job.yaml)",
    "duckdb": "DuckDB + scikit-learn (ref_duckdb.py)",
    "polars": "Polars + scikit-learn (ref_polars.py)",
    "floor": "floor: DuckDB reading every input column (floor.py)",
}
PEERS = ("duckdb", "polars")

log, results = sys.argv[1], sys.argv[2]
rows = [line.split() for line in open(log) if line.strip()]
wall, rss, cpu, failed = {}, {}, {}, {}
for impl, _run, w, r, rc, c in rows:
    wall.setdefault(impl, []).append(float(w))
    rss.setdefault(impl, []).append(int(r))
    cpu.setdefault(impl, []).append(float(c))
    failed[impl] = failed.get(impl, 0) + (rc != "0")
med = {k: statistics.median(v) for k, v in wall.items()}
runs = max(len(v) for v in wall.values())
print(f"\n{runs} runs each, alternating; median wall (min-max), median CPU (user + system), peak RSS over the runs\n")
print("| implementation | median wall | median CPU | peak RSS |")
print("|---|---|---|---|")
for impl in ("crmflow", "duckdb", "polars", "floor"):
    if impl in wall:
        v = wall[impl]
        note = f" ({failed[impl]} failed)" if failed[impl] else ""
        print(f"| {NAMES[impl]} | {med[impl]:.2f} s ({min(v):.2f}-{max(v):.2f}){note} "
              f"| {statistics.median(cpu[impl]):.2f} s | {max(rss[impl]) / 1024:,.0f} MiB |")
fastest = min((p for p in PEERS if p in med), key=lambda p: med[p])
print()
print(f"crmflow / fastest peer ({fastest}): {med['crmflow'] / med[fastest]:.2f}  (target <= 0.33; CPU: "
      f"{statistics.median(cpu['crmflow']) / statistics.median(cpu[fastest]):.2f})")
print(f"crmflow / floor:                  {med['crmflow'] / med['floor']:.2f}  (target <= 2.5)")
print(f"crmflow peak RSS:                 {max(rss['crmflow']) / 1024:,.0f} MiB  (target <= 600)")
steps = {}
for path in sorted(glob.glob(os.path.join(results, "crmflow-*.json"))):
    r = json.load(open(path))
    for s in r["steps"]:
        steps.setdefault(f"step {s['name']}", []).append(s["seconds"])
    for s in r["sinks"]:
        steps.setdefault(f"sink {s['table']}", []).append(s["seconds"])
    steps.setdefault("whole run (in process)", []).append(r["seconds"])
if steps:
    print("\ncrmflow, median seconds per step (a view's time is spent in its consumer):")
    for name, v in steps.items():
        print(f"  {name:36} {statistics.median(v):7.3f}")
