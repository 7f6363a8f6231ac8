"""The Airflow integration on a real Airflow: each case runs a DAG with
``airflow dags test`` (SQLite, no scheduler) and asserts, on Airflow's own
database and on the files crmflow wrote, what a DAG author relies on.
Run by run.sh (which installs Airflow and prepares the work directory);
prints one line per case and ``airflow: N passed, M failed``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

WORK = Path(os.environ["CRMFLOW_TEST_WORK"])
HOME = Path(os.environ["AIRFLOW_HOME"])
LOGS = WORK / "logs"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def dags_test(dag_id: str, logical_date: str | None = None, log: str | None = None) -> int:
    """``airflow dags test DAG [DATE]``; its output goes to logs/<log>.log."""
    LOGS.mkdir(exist_ok=True)
    args = [AIRFLOW, "dags", "test", dag_id] + ([logical_date] if logical_date else [])
    with open(LOGS / f"{log or dag_id}.log", "w") as out:
        return subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, check=False).returncode


def db() -> sqlite3.Connection:
    return sqlite3.connect(HOME / "airflow.db")


def last_run(dag_id: str) -> str:
    with db() as c:
        row = c.execute("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)).fetchone()
    assert row, f"no run of {dag_id}"
    return row[0]


def task(dag_id: str, run_id: str, task_id: str = "crm") -> tuple[str, int]:
    """(state, try_number) of a task instance."""
    with db() as c:
        row = c.execute(
            "SELECT state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
            (dag_id, run_id, task_id),
        ).fetchone()
    assert row, f"no task {task_id} in {dag_id} {run_id}"
    return row[0], row[1]


def xcom(dag_id: str, run_id: str, key: str, task_id: str = "crm"):
    """The XCom value as a DAG's next task would get it (JSON-decoded), or
    None when there is none."""
    with db() as c:
        row = c.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = ?",
            (dag_id, run_id, task_id, key),
        ).fetchone()
    return None if row is None else json.loads(row[0])


def manifest(sink: str, out: str = "out") -> dict:
    # The commit record beside the sink (the sink holds an empty _SUCCESS).
    return json.loads((WORK / out / f".{sink}.crmflow-manifest.json").read_text())


def data_files(sink: str, out: str = "out") -> dict[str, bytes]:
    root = WORK / out / sink
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def staging_left() -> list[str]:
    root = WORK / ".crmflow-staging"
    return [str(p) for p in root.rglob("*") if p.is_file()] if root.exists() else []


# -- the cases -------------------------------------------------------------


def success_gives_a_dict_in_xcom_and_asset_events():
    assert dags_test("t_success", "2026-11-24") == 0
    run = last_run("t_success")
    assert task("t_success", run) == ("success", 1), task("t_success", run)
    assert task("t_success", run, "check_summary")[0] == "success"
    summary = xcom("t_success", run, "return_value")
    assert isinstance(summary, dict), summary
    assert summary == xcom("t_success", run, "summary")
    assert summary["status"] == "success" and summary["published"] == ["totals", "by_country"], summary
    assert summary["vars"]["as_of"] == "2026-11-24", summary["vars"]
    assert manifest("totals")["run_id"] == summary["run_id"]
    with db() as c:
        events = c.execute(
            "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE e.source_run_id = ?",
            (run,),
        ).fetchall()
    got = {uri: json.loads(extra) for uri, extra in events}
    want = {f"file://{WORK}/out/totals", f"file://{WORK}/out/by_country"}
    assert set(got) == want, got
    assert all(e["run_id"] == summary["run_id"] for e in got.values()), got
    assert got[f"file://{WORK}/out/totals"]["rows"] == 300, got


def rerun_of_a_date_is_idempotent():
    before = {s: data_files(s) for s in ("totals", "by_country")}
    first = manifest("totals")
    assert dags_test("t_success", "2026-11-24", log="t_success-rerun") == 0
    run = last_run("t_success")
    summary = xcom("t_success", run, "return_value")
    assert summary["status"] == "success", summary
    again = manifest("totals")
    assert again["run_id"] == summary["run_id"] != first["run_id"]
    assert again["rows"] == first["rows"] == 300
    # The same files byte for byte (under new names); nothing else.
    for s in ("totals", "by_country"):
        after = data_files(s)
        assert sorted(after.values()) == sorted(before[s].values()), s
        assert sorted(f["path"] for f in manifest(s)["files"]) == sorted(after), s
    assert staging_left() == []


def exit_2_fails_at_once_with_the_summary():
    previous = manifest("totals")["run_id"]
    dags_test("t_invalid", "2026-11-24")
    run = last_run("t_invalid")
    state, tries = task("t_invalid", run)
    assert (state, tries) == ("failed", 1), f"retries=3, yet: {state} after {tries} tries"
    summary = xcom("t_invalid", run, "summary")
    assert isinstance(summary, dict), summary
    assert summary["status"] == "invalid", summary
    assert summary["error"].endswith(
        'step "by_country" (line 19): table "totls" is neither a source nor a step; did you mean "totals"?'
    ), summary["error"]
    assert xcom("t_invalid", run, "return_value") is None
    log = (LOGS / "t_invalid.log").read_text()
    assert "AirflowFailException" in log and "not retried" in log
    assert manifest("totals")["run_id"] == previous


def exit_1_is_retried_with_the_summary_and_publishes_nothing():
    previous = manifest("totals")["run_id"]
    dags_test("t_failing", "2026-11-24")
    run = last_run("t_failing")
    assert task("t_failing", run) == ("failed", 2), task("t_failing", run)
    with db() as c:
        history = c.execute(
            "SELECT try_number, state FROM task_instance_history WHERE dag_id = 't_failing' AND run_id = ?", (run,)
        ).fetchall()
    assert [t for t, _ in history] == [1], history
    log = (LOGS / "t_failing.log").read_text()
    assert log.count("'run', '") == 2, "crmflow did not run twice"
    summary = xcom("t_failing", run, "summary")
    assert isinstance(summary, dict), summary
    assert summary["status"] == "failed" and summary["published"] == [], summary
    assert summary["error"] == 'sink "totals": check row_count(max 1) failed: the table has 300 rows', summary["error"]
    assert manifest("totals")["run_id"] == previous, "a failed run published"
    assert staging_left() == []


def timeout_stops_crmflow_with_sigterm_and_publishes_nothing():
    previous = manifest("totals")["run_id"]
    t0 = time.monotonic()
    dags_test("t_timeout", "2026-11-24")
    run = last_run("t_timeout")
    assert task("t_timeout", run)[0] == "failed"
    log = (LOGS / "t_timeout.log").read_text()
    assert "AirflowTaskTimeout" in log, "no timeout in the log"
    assert "Sending SIGTERM signal to process group" in log
    # Airflow stops reading crmflow's output once the task has timed out;
    # crmflow's run results tell how it ended.
    results = WORK / "results" / "timeout.json"
    while time.monotonic() - t0 < 50 and not (results.exists() and results.read_text().strip()):
        time.sleep(0.2)
    summary = json.loads(results.read_text())
    assert summary["status"] == "interrupted", summary
    assert summary["error"] == "interrupted by SIGTERM; nothing was published", summary
    took = time.monotonic() - t0
    assert took < 50, f"took {took:.0f}s: crmflow was not stopped at once (its step sleeps 60 s)"
    assert manifest("totals")["run_id"] == previous
    assert staging_left() == []


def plain_bash_operator_as_in_the_readme():
    assert dags_test("t_bash", "2026-11-24") == 0
    run = last_run("t_bash")
    assert task("t_bash", run) == ("success", 1)
    assert task("t_bash", run, "parse")[0] == "success"
    line = xcom("t_bash", run, "return_value")
    assert isinstance(line, str), f"BashOperator's XCom is a string, got {type(line).__name__}"
    summary = json.loads(line)
    assert summary["status"] == "success"
    # cwd: relative outputs land below it, not in a deleted temporary dir.
    assert manifest("totals", out="out-bash")["run_id"] == summary["run_id"]
    results = json.loads((WORK / "results" / "bash_2026-11-24.json").read_text())
    assert results == summary


def as_of_without_a_logical_date():
    # A run without a logical date has no {{ ds }}; the DAGs' template falls
    # back to the run's run_after.
    code = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util, sys; from airflow.sdk import DAG;"
            f"spec = importlib.util.spec_from_file_location('cases', '{HOME}/dags/crmflow_cases.py');"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m);"
            "r = m.t_success.test(logical_date=None); sys.exit(0 if str(r.state) == 'success' else 1)",
        ],
        stdout=open(LOGS / "t_success-no-logical-date.log", "w"),
        stderr=subprocess.STDOUT,
        check=False,
    ).returncode
    assert code == 0, "the run failed"
    with db() as c:
        run, logical = c.execute(
            "SELECT run_id, logical_date FROM dag_run WHERE dag_id = 't_success' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert logical is None, logical
    summary = xcom("t_success", run, "return_value")
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert summary["vars"]["as_of"] == today, summary["vars"]


def ready_dags_run_the_demo():
    for dag_id in ("crm_nightly", "crm_nightly_bash"):
        assert dags_test(dag_id, "2026-11-24") == 0, dag_id
        run = last_run(dag_id)
        tasks = ["crm_nightly", "report"] if dag_id == "crm_nightly" else ["validate", "run", "report"]
        for t in tasks:
            assert task(dag_id, run, t)[0] == "success", (dag_id, t)
    m = manifest("customer_scores", out="demo-out")
    assert m["rows"] == 5000 and m["vars"]["as_of"] == "2026-11-24", m


CASES = [
    success_gives_a_dict_in_xcom_and_asset_events,
    rerun_of_a_date_is_idempotent,
    exit_2_fails_at_once_with_the_summary,
    exit_1_is_retried_with_the_summary_and_publishes_nothing,
    timeout_stops_crmflow_with_sigterm_and_publishes_nothing,
    plain_bash_operator_as_in_the_readme,
    as_of_without_a_logical_date,
    ready_dags_run_the_demo,
]


def main() -> int:
    only = sys.argv[1:]
    passed = failed = 0
    started = time.monotonic()
    LOGS.mkdir(exist_ok=True)
    for case in CASES:
        if only and case.__name__ not in only:
            continue
        t0 = time.monotonic()
        try:
            case()
        except Exception:
            failed += 1
            print(f"FAIL {case.__name__} ({time.monotonic() - t0:.1f}s; logs in {LOGS})", flush=True)
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {case.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
    print(f"{os.environ.get('CRMFLOW_TEST_SETUP', 'Airflow')}, cases {time.monotonic() - started:.0f}s")
    print(f"airflow: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
