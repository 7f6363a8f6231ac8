"""``CrmflowOperator``: one crmflow run as an Airflow task.

A thin layer on the standard provider's ``SubprocessHook`` (what
``BashOperator`` runs on), adding what a plain ``BashOperator`` cannot give:

- the binary, the pipeline and the working directory are absolute, so
  relative URLs in the pipeline (``out: "out"``) never land in the temporary
  directory ``BashOperator`` runs in and deletes afterwards;
- exit code 2 (the pipeline or the command line is invalid) raises
  ``AirflowFailException``: the task fails without using its retries; exit 1
  (the run failed, nothing was published) raises ``AirflowException`` and is
  retried; 130/143 (interrupted) likewise;
- the run summary is a dict in XCom: ``return_value`` on success, and under
  the key ``summary`` on success and on failure (read from crmflow's
  ``--run-results`` file, not from the mixed stdout/stderr stream);
- optionally ``crmflow validate`` first (footers only, no rows read);
- the sinks are declared as Airflow Assets (outlets), so downstream DAGs can
  be scheduled on them; each asset event carries the run id and its rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from airflow.providers.standard.hooks.subprocess import SubprocessHook
from airflow.sdk import Asset, BaseOperator

try:  # Airflow >= 3.1 keeps them in the Task SDK
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # pragma: no cover - Airflow 3.0
    from airflow.exceptions import AirflowException, AirflowFailException

#: Exit codes of ``crmflow`` (see its README).
EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
EXIT_INTERRUPTED = (130, 143)


def asset_uri(url: str) -> str:
    """The Asset URI of a crmflow sink URL: ``s3://b/marts/x/`` stays as it
    is (without the trailing slash), a local path becomes ``file:///...``."""
    parts = urlsplit(url)
    if parts.scheme and len(parts.scheme) > 1:  # not a Windows drive letter
        return url.rstrip("/")
    if not os.path.isabs(url):
        raise ValueError(f"sink {url!r}: give an absolute path or a URL (relative paths depend on the cwd)")
    return "file://" + os.path.normpath(url)


def sink_asset(url: str, **kwargs: Any) -> Asset:
    """An Airflow Asset for the sink at ``url`` (a path or URL, as in the
    pipeline's ``sinks:`` after vars are applied)."""
    return Asset(uri=asset_uri(url), **kwargs)


class CrmflowOperator(BaseOperator):
    """Runs ``crmflow run PIPELINE`` and reports it the way Airflow expects.

    :param pipeline: the pipeline YAML, absolute or relative to ``cwd``.
    :param cwd: absolute working directory: relative URLs in the pipeline
        (and relative ``--run-results``) are taken from it. Required, because
        without it they would go to a temporary directory.
    :param vars: ``--var KEY=VALUE`` overrides (templated), e.g.
        ``{"as_of": "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"}``.
    :param binary: the crmflow executable: an absolute path, or a name looked
        up on the task's ``PATH`` (and then run by its absolute path).
    :param select: ``--select STEP`` values.
    :param validate: run ``crmflow validate`` first (exit 2 there fails the
        task without retries; nothing is read but Parquet footers).
    :param sinks: the sinks' URLs (a list, or a mapping table -> URL) to
        declare as outlets; each becomes an ``Asset`` (see ``sink_asset``).
    :param run_results: where crmflow writes its summary (templated); by
        default a file in a temporary directory removed after the task.
    :param env: environment variables for crmflow (templated); added to the
        worker's environment when ``append_env`` (the default), else alone.
    :param log_format: ``json`` (default: one JSON object per log line, the
        error event included) or ``text``.
    """

    template_fields: Sequence[str] = ("pipeline", "cwd", "vars", "select", "run_results", "env")
    template_fields_renderers = {"vars": "json", "env": "json"}
    ui_color = "#d9ecf2"

    def __init__(
        self,
        *,
        pipeline: str,
        cwd: str,
        vars: Mapping[str, str] | None = None,
        binary: str = "crmflow",
        select: Sequence[str] = (),
        validate: bool = False,
        sinks: Sequence[str] | Mapping[str, str] = (),
        run_results: str | None = None,
        env: Mapping[str, str] | None = None,
        append_env: bool = True,
        log_format: str = "json",
        **kwargs: Any,
    ) -> None:
        urls = list(sinks.values()) if isinstance(sinks, Mapping) else list(sinks)
        self.sink_assets = [(u, sink_asset(u)) for u in urls]
        outlets = list(kwargs.pop("outlets", None) or []) + [a for _, a in self.sink_assets]
        super().__init__(outlets=outlets, **kwargs)
        if log_format not in ("json", "text"):
            raise ValueError(f"log_format: {log_format!r} is neither 'json' nor 'text'")
        self.pipeline = pipeline
        self.cwd = cwd
        self.vars = dict(vars or {})
        self.binary = binary
        self.select = list(select)
        self.validate = validate
        self.run_results = run_results
        self.env = dict(env or {})
        self.append_env = append_env
        self.log_format = log_format

    def execute(self, context: Any) -> dict[str, Any]:
        self._hook = SubprocessHook()
        cwd = self._cwd()
        env = self._environment()
        binary = self._binary(env)
        pipeline = os.path.join(cwd, self.pipeline)
        var_args = [a for k, v in self.vars.items() for a in ("--var", f"{k}={v}")]
        base = [binary, "--log-format", self.log_format]
        ti = context["ti"]

        if self.validate:
            result = self._hook.run_command([*base, "validate", pipeline, *var_args], env=env, cwd=cwd)
            if result.exit_code != EXIT_OK:
                summary = self._synthesized(result.exit_code, result.output, "validate")
                ti.xcom_push(key="summary", value=summary)
                self._raise(result.exit_code, summary)

        with tempfile.TemporaryDirectory(prefix="crmflow-airflow-") as tmp:
            results = os.path.join(cwd, self.run_results) if self.run_results else os.path.join(tmp, "run.json")
            # A file left by an earlier try must not pass for this one's.
            with contextlib.suppress(FileNotFoundError):
                os.remove(results)
            select = [a for s in self.select for a in ("--select", s)]
            command = [*base, "run", pipeline, *var_args, *select, "--run-results", results]
            result = self._hook.run_command(command, env=env, cwd=cwd)
            summary = self._read(results) or self._synthesized(result.exit_code, result.output, "run")

        ti.xcom_push(key="summary", value=summary)
        if result.exit_code != EXIT_OK:
            self._raise(result.exit_code, summary)
        self._annotate_outlets(context, summary)
        return summary

    def on_kill(self) -> None:
        # crmflow stops at once on SIGTERM (exit 143) and publishes nothing
        # half-written.
        hook = getattr(self, "_hook", None)
        if hook is not None:
            hook.send_sigterm()

    # -- helpers -------------------------------------------------------

    def _cwd(self) -> str:
        if not os.path.isabs(self.cwd):
            raise AirflowFailException(f"cwd {self.cwd!r} must be an absolute path")
        if not os.path.isdir(self.cwd):
            raise AirflowFailException(f"cwd {self.cwd!r} is not a directory")
        return self.cwd

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ) if self.append_env else {}
        env.update({k: str(v) for k, v in self.env.items()})
        return env

    def _binary(self, env: Mapping[str, str]) -> str:
        if os.path.isabs(self.binary):
            found = self.binary if os.access(self.binary, os.X_OK) else None
        else:
            found = shutil.which(self.binary, path=env.get("PATH"))
        if not found:
            raise AirflowFailException(f"crmflow binary {self.binary!r} not found or not executable")
        return os.path.abspath(found)

    def _read(self, path: str) -> dict[str, Any] | None:
        """The run results file, if crmflow wrote one."""
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError:
            return None
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            self.log.warning("run results %s are not JSON: %.200s", path, text)
            return None
        return value if isinstance(value, dict) else None

    def _synthesized(self, code: int, last_line: str, command: str) -> dict[str, Any]:
        """A summary for a failure that wrote no run results (an invalid
        command line, `validate`): the status and crmflow's last error."""
        error = last_line
        try:
            event = json.loads(last_line)
            if isinstance(event, dict) and "message" in event:
                error = event["message"]
        except ValueError:
            error = last_line.removeprefix("crmflow: error: ")
        status = "invalid" if code == EXIT_INVALID else "interrupted" if code in EXIT_INTERRUPTED else "failed"
        return {"status": status, "command": command, "exit_code": code, "error": error}

    def _raise(self, code: int, summary: Mapping[str, Any]) -> None:
        error = summary.get("error") or "(no error message)"
        if code == EXIT_INVALID:
            raise AirflowFailException(
                f"crmflow exit 2: the pipeline or the command line is invalid; not retried "
                f"(nothing was read or published): {error}"
            )
        if code in EXIT_INTERRUPTED:
            raise AirflowException(f"crmflow was interrupted (exit {code}); nothing half-written was published")
        published = summary.get("published") or []
        if published:
            raise AirflowException(
                f"crmflow exit {code}: publishing failed part way (published: {', '.join(published)}; "
                f"a retry publishes the rest): {error}"
            )
        raise AirflowException(f"crmflow exit {code}: the run failed, nothing was published: {error}")

    def _annotate_outlets(self, context: Any, summary: Mapping[str, Any]) -> None:
        """Puts the run id and rows of each published sink on its asset
        event; warns about declared sinks the run did not publish."""
        events = context.get("outlet_events")
        by_uri = {}
        for sink in summary.get("sinks") or []:
            try:
                by_uri[asset_uri(sink["url"])] = sink
            except (KeyError, ValueError):
                continue
        published = set(summary.get("published") or [])
        for url, asset in self.sink_assets:
            uri = asset_uri(url)
            sink = by_uri.get(uri)
            if sink is None or sink.get("table") not in published:
                self.log.warning("declared sink %s was not published by this run", uri)
                continue
            if events is not None:
                events[asset].extra = {
                    "run_id": summary.get("run_id"),
                    "pipeline": summary.get("pipeline"),
                    "table": sink.get("table"),
                    "rows": sink.get("rows"),
                    "vars": summary.get("vars"),
                }
