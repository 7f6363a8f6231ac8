"""The nightly CRM job with ``CrmflowOperator``: validate, run, publish.

Scheduled at 03:00 UTC for the previous day; ``as_of`` is the run's logical
date, or the trigger time for a run triggered without one. Exit 2 (the
pipeline is wrong) fails at once; exit 1 (data, I/O) is retried — a rerun of
a date replaces its output. The summary is a dict in XCom (``summary`` on
success and failure, ``return_value`` on success); each sink is an Asset that
downstream DAGs can be scheduled on (``schedule=[sink_asset(...)]``).

Set the paths for your installation (the defaults read these environment
variables of the worker): ``CRMFLOW_BIN`` the binary, ``CRMFLOW_HOME`` the
directory holding ``pipelines/`` and ``sql/`` (the working directory),
``CRMFLOW_DATA`` and ``CRMFLOW_OUT`` the input and output locations.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

from crmflow_airflow import CrmflowOperator

CRMFLOW_BIN = os.environ.get("CRMFLOW_BIN", "/opt/crmflow/bin/crmflow")
CRMFLOW_HOME = os.environ.get("CRMFLOW_HOME", "/opt/crmflow")
DATA = os.environ.get("CRMFLOW_DATA", "s3://acme-crm/raw")
OUT = os.environ.get("CRMFLOW_OUT", "s3://acme-crm/marts")

# The demo pipeline's sinks (pipelines/crm_nightly.yaml): table -> location.
SINKS = {
    "customer_scores": f"{OUT}/customer_scores/",
    "segments_profile": f"{OUT}/segment_profile/",
    "clv_bgnbd_model": f"{OUT}/clv_bgnbd_model/",
    "revenue_forecast_metrics": f"{OUT}/revenue_forecast_metrics/",
    "revenue_forecast_model": f"{OUT}/revenue_forecast_model/",
    "churn_metrics": f"{OUT}/churn_metrics/",
    "churn_model": f"{OUT}/churn_model/",
}

with DAG(
    dag_id="crm_nightly",
    schedule="0 3 * * *",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # runs of one sink must not overlap (crmflow locks them anyway)
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["crmflow"],
):
    crm = CrmflowOperator(
        task_id="crm_nightly",
        binary=CRMFLOW_BIN,
        cwd=CRMFLOW_HOME,
        pipeline="pipelines/crm_nightly.yaml",
        vars={
            # {{ ds }} exists only for runs with a logical date.
            "as_of": "{{ (dag_run.logical_date or dag_run.run_after) | ds }}",
            "data": DATA,
            "out": OUT,
        },
        validate=True,
        sinks=SINKS,
        env={"AWS_REGION": "eu-west-1"},  # credentials from the worker's role
        execution_timeout=timedelta(hours=2),
    )

    @task
    def report(summary: dict) -> None:
        rows = {s["table"]: s["rows"] for s in summary["sinks"]}
        print(f"run {summary['run_id']}: {summary['status']}; customer_scores has {rows['customer_scores']} rows")

    report(crm.output)
