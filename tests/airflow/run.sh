#!/usr/bin/env bash
# The Airflow integration tested on a real Apache Airflow (from PyPI, SQLite,
# `airflow dags test`): installs Airflow into a venv under target/ (kept
# between runs), the crmflow_airflow package from integrations/airflow/, builds
# the debug binary (failpoints are compiled in: the timeout case uses one),
# prepares a work directory with generated data, then runs tests/airflow/cases.py,
# which prints one line per case and `airflow: N passed, M failed`.
#
#   bash tests/airflow/run.sh [CASE...]        AIRFLOW_VERSION=3.3.2 by default
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
t0=$(date +%s)

version=${AIRFLOW_VERSION:-3.3.2}
venv=$root/target/airflow-venv-$version
if [ ! -x "$venv/bin/airflow" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "apache-airflow==$version"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall ./integrations/airflow
t_install=$(($(date +%s) - t0))

cargo build --locked --quiet
bin=$root/target/debug/crmflow

work=$root/target/airflow-test
rm -rf "$work"
mkdir -p "$work/pipelines" "$work/results" "$work/home/dags"
cp tests/airflow/pipelines/*.yaml "$work/pipelines/"
CRMFLOW_LOG=warn "$bin" generate --customers 300 --seed 7 --out "$work/data"
cp tests/airflow/dags/*.py integrations/airflow/dags/*.py "$work/home/dags/"

export AIRFLOW_HOME=$work/home
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_FOLDER=$work/home/dags
export CRMFLOW_BIN=$bin CRMFLOW_TEST_WORK=$work
# The ready DAGs of integrations/airflow/dags, on the demo's bundled data.
export CRMFLOW_HOME=$root CRMFLOW_DATA=$root/data/sample CRMFLOW_OUT=$work/demo-out CRMFLOW_RESULTS=$work/results
export CRMFLOW_LOG=info
"$venv/bin/airflow" db migrate > "$work/db-migrate.log" 2>&1

# cases.py prints the timing, then `airflow: N passed, M failed` last.
export CRMFLOW_TEST_SETUP="Airflow $version: install and setup $(($(date +%s) - t0))s (installing Airflow ${t_install}s)"
exec "$venv/bin/python" tests/airflow/cases.py "$@"
