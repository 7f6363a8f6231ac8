//! `run --backfill VAR=FROM..TO [--every 1d|7d|1mo]`: one run per value of
//! a var, in order, each with its own run id and its own atomic publish.
//!
//! A value whose sinks' `_SUCCESS` manifests all hold this pipeline's hash
//! and exactly the value's vars is already done and skipped (unless
//! `--force`). The first failing value stops the backfill (unless
//! `--keep-going`); an interrupt stops it after cleaning the current
//! value's staging (as for any run). The sinks' paths normally contain the
//! var (`${as_of}`), so that each value has its own output.

use std::sync::Arc;

use chrono::{Months, NaiveDate};
use serde::Serialize;

use super::exec::{self, Interrupt, RunOptions};
use super::plan::Plan;
use super::report::{RunStatus, RunSummary};
use crate::error::{Error, Result};

/// The values of a backfill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub var: String,
    pub every: String,
    pub values: Vec<String>,
}

/// Parses `--backfill VAR=FROM..TO` and `--every`.
///
/// # Errors
/// [`Error::Usage`] saying what is wrong.
pub fn parse(spec: &str, every: &str) -> Result<Range> {
    let usage = |m: String| Error::Usage(format!("--backfill {spec}: {m}"));
    let (var, range) = spec
        .split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| usage("expected VAR=FROM..TO, e.g. as_of=2026-11-01..2026-11-24".into()))?;
    let (from, to) = range
        .split_once("..")
        .ok_or_else(|| usage("expected VAR=FROM..TO, e.g. as_of=2026-11-01..2026-11-24".into()))?;
    let date = |s: &str| {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| usage(format!("\"{s}\" is not a date (YYYY-MM-DD)")))
    };
    let (from, to) = (date(from)?, date(to)?);
    if to < from {
        return Err(usage(format!("{to} is before {from}")));
    }
    let bad_every = || {
        Error::Usage(format!(
            "--every {every}: expected Nd (days) or Nmo (months), e.g. 1d, 7d, 1mo"
        ))
    };
    let (n, months) = if let Some(n) = every.strip_suffix("mo") {
        (n, true)
    } else if let Some(n) = every.strip_suffix('d') {
        (n, false)
    } else {
        return Err(bad_every());
    };
    let n: u32 = n.parse().ok().filter(|n| *n > 0).ok_or_else(bad_every)?;
    let mut values = Vec::new();
    for i in 0u32.. {
        // From the start each time, so that months do not drift (Jan 31,
        // Feb 28, Mar 31).
        let next = if months {
            from.checked_add_months(Months::new(n * i))
        } else {
            from.checked_add_days(chrono::Days::new(u64::from(n) * u64::from(i)))
        };
        match next {
            Some(d) if d <= to => values.push(d.format("%Y-%m-%d").to_string()),
            _ => break,
        }
    }
    Ok(Range {
        var: var.to_string(),
        every: every.to_string(),
        values,
    })
}

/// How one value ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueStatus {
    Success,
    /// Already published by this pipeline with these vars.
    Skipped,
    Failed,
    Invalid,
    Interrupted,
    /// Not started: an earlier value failed or the backfill was interrupted.
    NotRun,
}

impl ValueStatus {
    /// The name as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueStatus::Success => "success",
            ValueStatus::Skipped => "skipped",
            ValueStatus::Failed => "failed",
            ValueStatus::Invalid => "invalid",
            ValueStatus::Interrupted => "interrupted",
            ValueStatus::NotRun => "not_run",
        }
    }
}

/// The result of one value.
#[derive(Debug, Clone, Serialize)]
pub struct ValueResult {
    pub value: String,
    pub status: ValueStatus,
    pub run_id: Option<String>,
    pub reason: Option<String>,
    /// The value's run summary (none when it did not run).
    pub run: Option<RunSummary>,
}

impl ValueResult {
    /// The one-line human summary: `as_of=2026-11-01: success (run ..., 0.42s)`.
    pub fn line(&self, var: &str) -> String {
        let head = format!("backfill {var}={}: {}", self.value, self.status.as_str());
        match (&self.run, &self.reason) {
            (Some(r), None) => format!("{head} (run {}, {:.2}s)", r.run_id, r.seconds),
            (Some(r), Some(why)) => format!("{head} (run {}): {why}", r.run_id),
            (None, Some(why)) => format!("{head}: {why}"),
            (None, None) => head,
        }
    }
}

/// The result of a backfill: the last stdout line and the run results.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub pipeline: String,
    pub backfill: String,
    pub every: String,
    pub status: RunStatus,
    pub seconds: f64,
    pub succeeded: usize,
    pub skipped: usize,
    pub failed: usize,
    pub not_run: usize,
    pub values: Vec<ValueResult>,
}

/// Whether every sink of `plan` already holds its output: a `_SUCCESS`
/// manifest of this pipeline, with its hash and exactly its vars.
pub async fn up_to_date(plan: &Plan) -> bool {
    if plan.sinks.is_empty() {
        return false;
    }
    let vars = plan.vars.shown();
    for sink in &plan.sinks {
        let Ok(store) = crate::storage::build_store(&sink.location, &plan.storage) else {
            return false;
        };
        match crate::sinks::publish::manifest_of(store, &sink.location).await {
            Some(m) if m.pipeline == plan.name && m.pipeline_hash == plan.hash && m.vars == vars => {}
            _ => return false,
        }
    }
    true
}

/// Options of a backfill.
pub struct Options {
    pub force: bool,
    pub keep_going: bool,
    pub fail_fast: bool,
    pub interrupt: Interrupt,
    pub progress: indicatif::ProgressBar,
}

/// Runs the plans (one per value, in order); `report` is called with each
/// value's result as it is known.
///
/// # Errors
/// With the summary: the interrupt, or [`Error::Backfill`] naming the
/// values that failed (exit 1, or 2 when every failure was an invalid
/// pipeline).
pub async fn run(
    range: &Range,
    plans: Vec<Plan>,
    opts: Options,
    report: &mut dyn FnMut(&ValueResult, &Summary),
) -> (Summary, Option<Error>) {
    let started = std::time::Instant::now();
    let mut summary = Summary {
        pipeline: plans.first().map(|p| p.name.clone()).unwrap_or_default(),
        backfill: format!(
            "{}={}..{}",
            range.var,
            range.values.first().map_or("", String::as_str),
            range.values.last().map_or("", String::as_str)
        ),
        every: range.every.clone(),
        status: RunStatus::Running,
        seconds: 0.0,
        succeeded: 0,
        skipped: 0,
        failed: 0,
        not_run: 0,
        values: vec![],
    };
    let mut stop: Option<String> = None;
    let mut errors: Vec<(String, Error)> = Vec::new();
    let mut interrupted = None;
    for (value, plan) in range.values.iter().zip(plans) {
        if stop.is_none()
            && let Some(signal) = *opts.interrupt.borrow()
        {
            stop = Some(format!("not run: interrupted by {signal}"));
            interrupted = Some(Error::Interrupted { signal });
        }
        let result = if let Some(why) = &stop {
            ValueResult {
                value: value.clone(),
                status: ValueStatus::NotRun,
                run_id: None,
                reason: Some(why.clone()),
                run: None,
            }
        } else if !opts.force && up_to_date(&plan).await {
            ValueResult {
                value: value.clone(),
                status: ValueStatus::Skipped,
                run_id: None,
                reason: Some(format!(
                    "already published: every sink's _SUCCESS holds pipeline hash {} and these vars (--force reruns it)",
                    plan.hash
                )),
                run: None,
            }
        } else {
            let run_id = super::run_id();
            crate::logging::set_run_id(&run_id);
            tracing::info!(pipeline = %plan.name, run_id = %run_id, var = %range.var, value = %value, "backfill value started");
            opts.progress.reset();
            let run_opts = RunOptions {
                run_id: run_id.clone(),
                interrupt: opts.interrupt.clone(),
                progress: opts.progress.clone(),
                fail_fast: opts.fail_fast,
            };
            match exec::run(Arc::new(plan), run_opts).await {
                Ok(s) => ValueResult {
                    value: value.clone(),
                    status: ValueStatus::Success,
                    run_id: Some(run_id),
                    reason: None,
                    run: Some(s),
                },
                Err((e, s)) => {
                    let status = match e.exit_code() {
                        2 => ValueStatus::Invalid,
                        130 | 143 => ValueStatus::Interrupted,
                        _ => ValueStatus::Failed,
                    };
                    let reason = s.error.clone();
                    if status == ValueStatus::Interrupted {
                        stop = Some(format!("not run: interrupted while {}={value} ran", range.var));
                        interrupted = Some(e);
                    } else {
                        if !opts.keep_going {
                            stop = Some(format!(
                                "not run: {}={value} failed (--keep-going runs the rest)",
                                range.var
                            ));
                        }
                        errors.push((value.clone(), e));
                    }
                    ValueResult {
                        value: value.clone(),
                        status,
                        run_id: Some(run_id),
                        reason,
                        run: Some(s),
                    }
                }
            }
        };
        match result.status {
            ValueStatus::Success => summary.succeeded += 1,
            ValueStatus::Skipped => summary.skipped += 1,
            ValueStatus::NotRun => summary.not_run += 1,
            _ => summary.failed += 1,
        }
        summary.values.push(result);
        summary.seconds = started.elapsed().as_secs_f64();
        if let Some(last) = summary.values.last() {
            report(last, &summary);
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    let error = if let Some(e) = interrupted {
        summary.status = RunStatus::Interrupted;
        Some(e)
    } else if errors.is_empty() {
        summary.status = RunStatus::Success;
        None
    } else {
        let invalid = errors.iter().all(|(_, e)| e.exit_code() == 2);
        summary.status = if invalid { RunStatus::Invalid } else { RunStatus::Failed };
        let list: Vec<String> = errors.iter().map(|(v, _)| format!("{}={v}", range.var)).collect();
        let (first_value, first) = &errors[0];
        Some(Error::Backfill {
            message: format!(
                "backfill: {} of {} values failed ({}); nothing of a failed value was published; first, {}={first_value}: {}",
                errors.len(),
                range.values.len(),
                list.join(", "),
                range.var,
                first.render()
            ),
            code: if invalid { 2 } else { 1 },
        })
    };
    (summary, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_step_by_days_weeks_and_months() {
        let r = parse("as_of=2026-11-01..2026-11-24", "7d").unwrap();
        assert_eq!(r.values, vec!["2026-11-01", "2026-11-08", "2026-11-15", "2026-11-22"]);
        assert_eq!(parse("as_of=2026-11-01..2026-11-24", "1d").unwrap().values.len(), 24);
        let m = parse("d=2026-01-31..2026-05-31", "1mo").unwrap();
        assert_eq!(
            m.values,
            vec!["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31"]
        );
        assert_eq!(
            parse("d=2026-01-01..2026-01-01", "1d").unwrap().values,
            vec!["2026-01-01"]
        );
    }

    #[test]
    fn bad_ranges_say_why() {
        let msg = |s: &str, e: &str| parse(s, e).unwrap_err().to_string();
        assert_eq!(
            msg("as_of", "1d"),
            "--backfill as_of: expected VAR=FROM..TO, e.g. as_of=2026-11-01..2026-11-24"
        );
        assert_eq!(
            msg("as_of=2026-11-31..2026-12-01", "1d"),
            "--backfill as_of=2026-11-31..2026-12-01: \"2026-11-31\" is not a date (YYYY-MM-DD)"
        );
        assert_eq!(
            msg("as_of=2026-11-02..2026-11-01", "1d"),
            "--backfill as_of=2026-11-02..2026-11-01: 2026-11-01 is before 2026-11-02"
        );
        assert_eq!(
            msg("as_of=2026-11-01..2026-11-02", "1w"),
            "--every 1w: expected Nd (days) or Nmo (months), e.g. 1d, 7d, 1mo"
        );
        assert_eq!(
            msg("as_of=2026-11-01..2026-11-02", "0d"),
            "--every 0d: expected Nd (days) or Nmo (months), e.g. 1d, 7d, 1mo"
        );
    }
}
