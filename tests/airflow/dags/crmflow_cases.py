"""DAGs for tests/airflow/run.sh: each runs crmflow on a small generated
dataset in the work directory ``CRMFLOW_TEST_WORK`` (pipelines/, data/, out/)
with the binary ``CRMFLOW_BIN``; run.sh runs them with ``airflow dags test``
and asserts on Airflow's own database what a DAG author would see.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, task

from crmflow_airflow import CrmflowOperator

BIN = os.environ["CRMFLOW_BIN"]
WORK = os.environ["CRMFLOW_TEST_WORK"]
AS_OF = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"
START = pendulum.datetime(2026, 11, 1, tz="UTC")
FAST_RETRY = {"retries": 1, "retry_delay": timedelta(seconds=0)}


def crmflow(pipeline: str, **kwargs) -> CrmflowOperator:
    return CrmflowOperator(
        task_id="crm",
        binary=BIN,
        cwd=WORK,
        pipeline=f"pipelines/{pipeline}.yaml",
        vars={"as_of": AS_OF},
        sinks=[f"{WORK}/out/totals/", f"{WORK}/out/by_country/"],
        **kwargs,
    )


@task(trigger_rule="all_done")
def check_summary(summary, want_status: str) -> None:
    # What a downstream task receives: a dict, not a JSON string.
    assert isinstance(summary, dict), f"XCom is {type(summary).__name__}: {summary!r}"
    assert summary["status"] == want_status, summary


with DAG("t_success", schedule=None, start_date=START, catchup=False, default_args=FAST_RETRY) as t_success:
    crm = crmflow("good", validate=True)
    check_summary(crm.output, "success")

with DAG("t_invalid", schedule=None, start_date=START, catchup=False, default_args={"retries": 3}):
    crmflow("invalid")

with DAG("t_failing", schedule=None, start_date=START, catchup=False, default_args=FAST_RETRY):
    crmflow("failing")

with DAG("t_timeout", schedule=None, start_date=START, catchup=False):
    # A step that hangs is stopped by Airflow's timeout: on_kill sends
    # SIGTERM, crmflow exits 143 at once and publishes nothing.
    crmflow(
        "good",
        env={"CRMFLOW_FAILPOINTS": "run::step:by_country=sleep(60000)"},
        run_results="results/timeout.json",
        execution_timeout=timedelta(seconds=8),
    )

with DAG("t_bash", schedule=None, start_date=START, catchup=False, default_args=FAST_RETRY):
    # The README's plain BashOperator: absolute binary, cwd, relative paths
    # below it, the summary as a JSON string in XCom.
    run = BashOperator(
        task_id="crm",
        bash_command=(
            f"{BIN} --log-format json run pipelines/good.yaml --var as_of={AS_OF} --var out=out-bash "
            f"--run-results results/bash_{AS_OF}.json"
        ),
        cwd=WORK,
    )

    @task
    def parse(line) -> None:
        assert isinstance(line, str), type(line)
        assert json.loads(line)["status"] == "success", line

    parse(run.output)
