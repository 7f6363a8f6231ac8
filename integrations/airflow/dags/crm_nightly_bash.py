"""The nightly CRM job with the standard provider's plain ``BashOperator``.

What it takes to use BashOperator correctly:

- an absolute binary, an absolute pipeline and ``cwd``: without ``cwd``,
  BashOperator runs in a temporary directory that it deletes afterwards, so
  relative outputs (the demo's ``out: "out"``) would vanish;
- BashOperator raises the same exception for every non-zero exit code, so
  it cannot leave exit 2 (invalid pipeline) unretried: ``validate`` runs as a
  task of its own without retries, and only the run is retried;
- XCom is the last output line as a string (stdout and stderr are one
  stream): the JSON summary on success, parsed with ``json.loads``; nothing
  is pushed on failure (the summary is then only in the run results file);
- ``{{ ds }}`` exists only for runs with a logical date.

``CrmflowOperator`` (crm_nightly.py) does all of this for you.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, task

CRMFLOW_BIN = os.environ.get("CRMFLOW_BIN", "/opt/crmflow/bin/crmflow")
CRMFLOW_HOME = os.environ.get("CRMFLOW_HOME", "/opt/crmflow")
DATA = os.environ.get("CRMFLOW_DATA", "s3://acme-crm/raw")
OUT = os.environ.get("CRMFLOW_OUT", "s3://acme-crm/marts")
RESULTS = os.environ.get("CRMFLOW_RESULTS", "/var/lib/crmflow/results")

AS_OF = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"
ARGS = f"{CRMFLOW_HOME}/pipelines/crm_nightly.yaml --var as_of={AS_OF} --var data={DATA} --var out={OUT}"

with DAG(
    dag_id="crm_nightly_bash",
    schedule="0 3 * * *",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["crmflow"],
):
    validate = BashOperator(
        task_id="validate",
        bash_command=f"{CRMFLOW_BIN} --log-format json validate {ARGS}",
        cwd=CRMFLOW_HOME,
        env={"AWS_REGION": "eu-west-1"},
        append_env=True,
        retries=0,  # exit 2: the pipeline is wrong; retrying cannot help
    )
    run = BashOperator(
        task_id="run",
        bash_command=(
            f"{CRMFLOW_BIN} --log-format json run {ARGS} "
            f"--run-results {RESULTS}/crm_nightly_{AS_OF}.json"
        ),
        cwd=CRMFLOW_HOME,
        env={"AWS_REGION": "eu-west-1"},
        append_env=True,
        retries=2,  # exit 1: nothing was published; a rerun replaces the date's output
        retry_delay=timedelta(minutes=10),
        do_xcom_push=True,  # the last output line: the summary, as a JSON string
    )

    @task
    def report(line: str) -> None:
        summary = json.loads(line)  # XCom from BashOperator is a string
        print(f"run {summary['run_id']}: {summary['status']}, published {', '.join(summary['published'])}")

    validate >> run
    report(run.output)
