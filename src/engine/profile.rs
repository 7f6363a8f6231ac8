//! Executed plans with their metrics, the `EXPLAIN ANALYZE` of a run: with
//! `--log crmflow::profile=debug` every table the run computes (a step it
//! materializes, a sink it writes) logs its physical plan with each
//! operator's rows, time and memory once it has run.

use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::display::DisplayableExecutionPlan;

/// The log target that turns the plans on.
pub const TARGET: &str = "crmflow::profile";

/// Whether executed plans are logged.
pub fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::DEBUG)
}

/// Logs `plan` (run) with its metrics, as `what` (e.g. `sink "scores"`).
pub fn log(what: &str, plan: &Arc<dyn ExecutionPlan>) {
    if enabled() {
        let shown = DisplayableExecutionPlan::with_metrics(plan.as_ref()).indent(true);
        tracing::debug!(target: TARGET, "{what}: executed plan with metrics\n{shown}");
    }
}
