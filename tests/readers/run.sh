#!/usr/bin/env bash
# Reads crmflow's outputs with the engines BI users point at them: pyarrow,
# DuckDB, Polars and Spark (pyspark, local), each by the bare directory
# path, the Delta outputs with the `deltalake` package and Polars'
# read_delta, and prints a reader x output table. Installs the pinned readers into
# target/readers-venv once (about a minute; Spark needs Java 17 on PATH).
#
#   bash tests/readers/run.sh            # all four readers
#   READERS=pyarrow,duckdb,polars bash tests/readers/run.sh
#
# Prints `readers: N passed, M failed` last; exits 1 if any check failed.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/readers-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import pyarrow, duckdb, polars, pyspark, deltalake' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'pyarrow==26.0.1' 'duckdb==2.0.1' 'polars==2.1.0' 'pyspark==4.3.0' 'deltalake==1.6.6'
fi
cargo build --locked --quiet
work=target/readers-work
rm -rf "$work"
mkdir -p "$work"
exec "$venv/bin/python" tests/readers/check.py "$PWD/target/debug/crmflow" "$PWD/$work"
