//! The steps of a run, in order, each on a task of its own (so that an
//! interrupt is seen at once even while a step keeps a worker busy).
//!
//! A step that fails does not stop the run: the steps that read it
//! (transitively) are skipped, naming it, and independent branches run on,
//! so one run reports every broken step; nothing is published after a
//! failure. With `--fail-fast` the first failure stops the run. An invalid
//! pipeline (exit 2) or an interrupt stops it at once either way. Deferred
//! steps (`--defer`) are reported first: their tables are sources.
//!
//! With a report (`report:`/`--report`), a stage step that succeeded is read
//! for it at once, while its tables are registered ([`story::collect`]); a
//! skipped or failed step shows in the report by its status and reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use super::exec::{RunOptions, guarded, release_unread, run_step};
use super::plan::{Plan, StepKind};
use super::report::{RunSummary, StepReport, StepStatus};
use super::story::{self, Story};
use crate::engine::Engine;
use crate::error::{Error, Result};

/// What the steps left for the sinks.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The steps that failed, in run order.
    pub failures: Vec<Error>,
    /// Tables not made (their step failed or was skipped): table -> the
    /// failed step it waits for.
    pub missing: HashMap<String, String>,
    /// `--fail-fast` stopped the run: no sink is written.
    pub stopped: bool,
}

/// Runs the plan's steps (see the module docs).
///
/// # Errors
/// Only what stops the run at once: an invalid pipeline, an interrupt.
pub async fn run(
    plan: &Arc<Plan>,
    engine: &Engine,
    opts: &mut RunOptions,
    summary: &mut RunSummary,
    told: &mut Story,
) -> Result<Outcome> {
    let pb = opts.progress.clone();
    for d in &plan.deferred {
        let reason = format!("deferred to {}", d.urls.join(", "));
        tracing::info!(step = %d.step, "step {reason} (not computed: --defer)");
        summary
            .steps
            .push(StepReport::not_run(&d.step, d.kind, StepStatus::Deferred, reason, 0.0));
    }
    let mut out = Outcome::default();
    let mut first_failed: Option<String> = None;
    for i in 0..plan.steps.len() {
        let step = &plan.steps[i];
        let kind = step.kind.name();
        let waits_for = step.inputs.iter().find_map(|t| out.missing.get(t).cloned());
        let skipped = match (opts.fail_fast, first_failed.clone(), waits_for) {
            (true, Some(failed), _) => {
                out.stopped = true;
                Some((
                    format!("not run: --fail-fast stopped the run after step \"{failed}\" failed"),
                    failed,
                ))
            }
            (_, _, Some(failed)) => Some((format!("depends on failed step \"{failed}\""), failed)),
            _ => None,
        };
        if let Some((reason, failed)) = skipped {
            tracing::warn!(step = %step.name, "step skipped: {reason}");
            summary
                .steps
                .push(StepReport::not_run(&step.name, kind, StepStatus::Skipped, reason, 0.0));
            for t in &step.outputs {
                out.missing.insert(t.clone(), failed.clone());
            }
            pb.inc(1);
            continue;
        }
        pb.set_message(format!("step {} ({kind})", step.name));
        let span = tracing::info_span!("step", step = %step.name, step_kind = kind);
        let t0 = Instant::now();
        tracing::info!(parent: &span, step = %step.name, kind, n = i + 1, of = plan.steps.len(), "step started");
        let task = tokio::spawn({
            let (engine, plan) = (engine.clone(), plan.clone());
            async move { run_step(&engine, &plan, &plan.steps[i]).await }.instrument(span.clone())
        });
        let joined = async move {
            task.await.map_err(|e| match e.try_into_panic() {
                Ok(payload) => Error::step(
                    &step.name,
                    format!("panicked: {}", crate::error::panic_message(payload.as_ref())),
                ),
                Err(e) => Error::step(&step.name, e.to_string()),
            })?
        };
        let result = guarded(&mut opts.interrupt, joined).await;
        let seconds = t0.elapsed().as_secs_f64();
        match result {
            Ok(rows) => {
                match rows {
                    Some(r) => tracing::info!(parent: &span, step = %step.name, rows = r, seconds, "step done"),
                    None => {
                        tracing::info!(parent: &span, step = %step.name, seconds, "step planned (a view: it streams into its consumer)")
                    }
                }
                summary.steps.push(StepReport {
                    name: step.name.clone(),
                    kind,
                    status: StepStatus::Success,
                    reason: None,
                    rows,
                    seconds,
                });
                // The report reads the stage's small tables and aggregates of
                // its scored one now, while they are registered.
                if plan.report.is_some()
                    && let StepKind::Stage(stage) = &step.kind
                {
                    let t0 = Instant::now();
                    let read = story::collect(engine, &step.name, stage.name(), &step.outputs).instrument(span.clone());
                    let read = guarded(&mut opts.interrupt, async { Ok(read.await) }).await?;
                    tracing::info!(parent: &span, step = %step.name, seconds = t0.elapsed().as_secs_f64(), "read for the report");
                    told.steps.push(read);
                }
            }
            Err(e) if e.exit_code() != 1 => return Err(e),
            Err(e) => {
                let message = plan.vars.mask(&e.render());
                tracing::error!(parent: &span, step = %step.name, seconds, "step failed: {message}");
                summary.steps.push(StepReport::not_run(
                    &step.name,
                    kind,
                    StepStatus::Error,
                    message,
                    seconds,
                ));
                for t in &step.outputs {
                    out.missing.insert(t.clone(), step.name.clone());
                }
                first_failed.get_or_insert_with(|| step.name.clone());
                out.failures.push(e);
            }
        }
        release_unread(engine, plan, i);
        pb.inc(1);
    }
    Ok(out)
}

/// The error of a run whose steps or checks failed: a single step's error
/// as it is, several as one list.
pub fn failed(mut steps: Vec<Error>, checks: Vec<String>) -> Error {
    if steps.len() == 1 && checks.is_empty() {
        return steps.remove(0);
    }
    if steps.is_empty() {
        return Error::Checks { failures: checks };
    }
    let mut failures: Vec<String> = steps.iter().map(Error::render).collect();
    failures.extend(checks);
    Error::Failures { failures }
}
