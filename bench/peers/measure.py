#!/usr/bin/env python3
"""Runs a command and prints "WALL_SECONDS MAX_RSS_KIB EXIT CPU_SECONDS" to the file named
first: the fallback of bench/peers.sh where GNU time (/usr/bin/time) is missing.

Usage: python3 measure.py OUT_FILE COMMAND [ARG ...]
"""
import resource
import subprocess
import sys
import time

if len(sys.argv) < 3:
    sys.exit(__doc__)
t = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
wall = time.perf_counter() - t
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
rss = usage.ru_maxrss  # KiB on Linux
with open(sys.argv[1], "w") as f:
    f.write(f"{wall:.3f} {rss} {rc} {usage.ru_utime + usage.ru_stime:.2f}\n")
sys.exit(rc)
