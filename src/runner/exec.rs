//! Running a [`Plan`]: sources registered, steps in order (a span per
//! step), sinks staged, checked and published.
//!
//! The same walk serves `validate` and `plan` ([`check`]), where SQL steps
//! are planned and stage steps contribute empty tables of their output
//! schema — footers are read, rows never — and `run` ([`run`]), where steps
//! execute. A step read by one consumer stays a lazy view that streams into
//! it; a step read by several (or `cache: true`) is computed once and kept
//! in memory. Nothing is published until every sink has been written and
//! checked; an interruption before that leaves every previous output as it
//! was.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::datasource::{MemTable, empty::EmptyTable};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::collect_partitioned;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use serde::Serialize;
use tokio::sync::watch;
use tracing::Instrument;

use super::plan::{Plan, Step, StepKind};
use crate::checks::{self, Outcome};
use crate::error::{Error, Result};
use crate::sinks::{self, Staged, publish};
use crate::stages::Stage;

/// Receives the name of the signal that interrupted the run, if any.
pub type Interrupt = watch::Receiver<Option<&'static str>>;

/// An interrupt that never fires (library and test use).
pub fn no_interrupt() -> Interrupt {
    let (tx, rx) = watch::channel(None);
    // Keep the sender alive for the life of the process so `changed` waits.
    std::mem::forget(tx);
    rx
}

/// Runs `fut` unless a signal arrives first.
async fn guarded<T>(interrupt: &mut Interrupt, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    if let Some(signal) = *interrupt.borrow() {
        return Err(Error::Interrupted { signal });
    }
    tokio::select! {
        biased;
        changed = interrupt.changed() => {
            let signal = if changed.is_ok() { (*interrupt.borrow()).unwrap_or("SIGINT") } else { "SIGINT" };
            Err(Error::Interrupted { signal })
        }
        r = fut => r,
    }
}

/// A DataFusion context configured from the plan's engine.
///
/// # Errors
/// The runtime cannot be built (e.g. no temp directory for spilling).
pub fn context(plan: &Plan) -> Result<SessionContext> {
    let mut config = SessionConfig::new()
        .with_information_schema(false)
        .with_create_default_catalog_and_schema(true);
    if let Some(n) = plan.engine.target_partitions {
        config = config.with_target_partitions(n);
    }
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(bytes) = plan.engine.memory_limit {
        runtime = runtime.with_memory_limit(bytes as usize, 1.0);
    }
    let runtime = runtime.build_arc().map_err(|e| Error::step("engine", e))?;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// What one step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub name: String,
    pub kind: &'static str,
    /// Rows, when the step was computed (cached); `None` for a view that
    /// streamed into its consumers.
    pub rows: Option<u64>,
    pub seconds: f64,
}

/// What one sink wrote.
#[derive(Debug, Clone, Serialize)]
pub struct SinkReport {
    pub table: String,
    pub url: String,
    pub mode: &'static str,
    pub rows: u64,
    pub files: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// The result of a run, printed as the last line of `run` and written by
/// `--run-results`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub pipeline: String,
    pub status: &'static str,
    pub vars: std::collections::BTreeMap<String, String>,
    pub started_at: String,
    pub seconds: f64,
    pub steps: Vec<StepReport>,
    pub sinks: Vec<SinkReport>,
    pub checks: Vec<CheckReport>,
    pub error: Option<String>,
}

/// A check outcome with where it ran.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub on: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What `check` learned: each table's schema and logical plan (for `plan`).
#[derive(Debug)]
pub struct Checked {
    pub tables: Vec<TableInfo>,
}

/// One table of the plan.
#[derive(Debug)]
pub struct TableInfo {
    pub name: String,
    /// `source`, `sql`, `clv`, ...
    pub kind: String,
    /// The step that makes it (its own name for a step's main table).
    pub step: Option<String>,
    pub inputs: Vec<String>,
    pub schema: SchemaRef,
    pub plan: Option<LogicalPlan>,
}

/// Registers the sources and plans every step against their real schemas
/// without reading rows, collecting every problem.
///
/// # Errors
/// [`Error::Invalid`] with every problem found.
pub async fn check(plan: &Plan, check_storage: bool) -> Result<Checked> {
    check_with(plan, check_storage, None).await
}

/// [`check`], or, given the run's context, the planning pass of `run`: an
/// unreadable source is then the run's failure (exit 1), not a problem in
/// the list, and the planning context shares the run's runtime (its object
/// stores and its Parquet footer cache, so footers are read once).
async fn check_with(plan: &Plan, check_storage: bool, run: Option<&SessionContext>) -> Result<Checked> {
    let before_run = run.is_some();
    let ctx = match run {
        Some(run) => SessionContext::new_with_config_rt(run.copied_config(), run.runtime_env()),
        None => context(plan)?,
    };
    let mut problems = Vec::new();
    if check_storage {
        for sink in &plan.sinks {
            if let Err(e) = probe_sink(&ctx, plan, sink, "validate").await {
                problems.push(plan.vars.mask(&e.to_string()));
            }
        }
    }
    let mut tables = Vec::new();
    let mut failed: std::collections::HashSet<String> = std::collections::HashSet::new();
    for s in &plan.sources {
        match crate::sources::register(&ctx, s, &plan.storage).await {
            Ok(schema) => {
                problems.extend(checks::validate_against(
                    &format!("source \"{}\"", s.name),
                    &s.checks,
                    &schema,
                ));
                tables.push(TableInfo {
                    name: s.name.clone(),
                    kind: "source".into(),
                    step: None,
                    inputs: vec![],
                    schema,
                    plan: None,
                });
            }
            Err(e) if before_run => return Err(e),
            Err(e) => {
                problems.push(plan.vars.mask(&e.to_string()));
                failed.insert(s.name.clone());
            }
        }
    }
    for step in &plan.steps {
        if step.inputs.iter().any(|i| failed.contains(i)) {
            failed.extend(step.outputs.iter().cloned());
            continue;
        }
        let at = at(step);
        match &step.kind {
            StepKind::Sql(sql) => match crate::transform::plan(&ctx, sql).await {
                Ok(lp) => {
                    let schema: SchemaRef = Arc::new(lp.schema().as_arrow().clone());
                    let view = datafusion::catalog::view::ViewTable::new(lp.clone(), Some(sql.sql.clone()));
                    let _ = ctx.register_table(step.name.as_str(), Arc::new(view));
                    tables.push(TableInfo {
                        name: step.name.clone(),
                        kind: "sql".into(),
                        step: Some(step.name.clone()),
                        inputs: step.inputs.clone(),
                        schema,
                        plan: Some(lp),
                    });
                }
                Err(e) => {
                    problems.push(format!("{at}: {}", with_origin(&e.to_string(), &sql.origin)));
                    failed.extend(step.outputs.iter().cloned());
                }
            },
            kind => {
                let schemas = match kind {
                    StepKind::Clv(c) => c.schemas(&step.name, &ctx).await,
                    StepKind::Segment(s) => s.schemas(&step.name, &ctx).await,
                    StepKind::Predict(p) => p.schemas(&step.name, &ctx).await,
                    StepKind::Sql(_) => unreachable!("matched above"),
                };
                match schemas {
                    Ok(schemas) => {
                        for (name, schema) in step.outputs.iter().zip(schemas) {
                            let _ = ctx.register_table(name.as_str(), Arc::new(EmptyTable::new(schema.clone())));
                            tables.push(TableInfo {
                                name: name.clone(),
                                kind: kind.name().into(),
                                step: Some(step.name.clone()),
                                inputs: step.inputs.clone(),
                                schema,
                                plan: None,
                            });
                        }
                    }
                    Err(p) => {
                        problems.extend(p.into_iter().map(|m| with_line(m, step)));
                        failed.extend(step.outputs.iter().cloned());
                    }
                }
            }
        }
    }
    for sink in &plan.sinks {
        if failed.contains(&sink.table) {
            continue;
        }
        let Some(t) = tables.iter().find(|t| t.name == sink.table) else {
            continue;
        };
        let subject = format!("sink \"{}\"", sink.table);
        for c in &sink.partition_by {
            if t.schema.field_with_name(c).is_err() {
                problems.push(format!(
                    "{subject}: partition_by column \"{c}\" is not in table \"{}\" (columns: {})",
                    sink.table,
                    checks::column_list(&t.schema)
                ));
            }
        }
        problems.extend(checks::validate_against(&subject, &sink.checks, &t.schema));
    }
    if problems.is_empty() {
        Ok(Checked { tables })
    } else {
        Err(Error::Invalid {
            file: plan.file.display().to_string(),
            problems,
        })
    }
}

fn at(step: &Step) -> String {
    match step.line {
        Some(l) => format!("step \"{}\" (line {l})", step.name),
        None => format!("step \"{}\"", step.name),
    }
}

/// `step "x": ...` → `step "x" (line N): ...` when the line is known.
fn with_line(message: String, step: &Step) -> String {
    let plain = format!("step \"{}\"", step.name);
    match message.strip_prefix(&plain) {
        Some(rest) => format!("{}{rest}", at(step)),
        None => message,
    }
}

/// A DataFusion message, prefixed with the SQL file it came from.
fn with_origin(message: &str, origin: &str) -> String {
    let m = message.trim();
    if origin == "inline" {
        m.to_string()
    } else {
        format!("{origin}: {m}")
    }
}

/// Options of a run.
pub struct RunOptions {
    pub run_id: String,
    pub interrupt: Interrupt,
    pub progress: indicatif::ProgressBar,
}

/// Runs the plan: sources, source checks, steps, sinks (staged, checked,
/// published).
///
/// # Errors
/// The first failure; staged output is removed and nothing is published.
/// The summary so far is returned alongside for run results.
pub async fn run(plan: &Plan, mut opts: RunOptions) -> std::result::Result<RunSummary, (Error, RunSummary)> {
    let started = Instant::now();
    let mut summary = RunSummary {
        run_id: opts.run_id.clone(),
        pipeline: plan.name.clone(),
        status: "running",
        vars: plan.vars.shown(),
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        seconds: 0.0,
        steps: vec![],
        sinks: vec![],
        checks: vec![],
        error: None,
    };
    let mut staged: Vec<Staged> = Vec::new();
    let result = run_inner(plan, &mut opts, &mut summary, &mut staged).await;
    summary.seconds = started.elapsed().as_secs_f64();
    opts.progress.finish_and_clear();
    match result {
        Ok(()) => {
            summary.status = "success";
            Ok(summary)
        }
        Err(e) => {
            for s in &staged {
                sinks::remove_prefix(s.store.as_ref(), &s.staging).await;
            }
            summary.status = if matches!(e, Error::Interrupted { .. }) {
                "interrupted"
            } else {
                "failed"
            };
            summary.error = Some(plan.vars.mask(&e.to_string()));
            Err((e, summary))
        }
    }
}

async fn run_inner(
    plan: &Plan,
    opts: &mut RunOptions,
    summary: &mut RunSummary,
    staged: &mut Vec<Staged>,
) -> Result<()> {
    let ctx = context(plan)?;
    let pb = opts.progress.clone();
    let total = plan.sources.len() + plan.steps.len() + plan.sinks.len();
    pb.set_length(total as u64);

    // Fail on an unwritable sink before reading any data.
    for sink in &plan.sinks {
        pb.set_message(format!("checking sink location {}", sink.location));
        guarded(&mut opts.interrupt, probe_sink(&ctx, plan, sink, &opts.run_id)).await?;
    }

    // Plan every step against the real schemas (footers only): a pipeline
    // that cannot run fails with exit 2 before any row is read.
    pb.set_message("planning");
    guarded(&mut opts.interrupt, check_with(plan, false, Some(&ctx))).await?;

    for s in &plan.sources {
        pb.set_message(format!("source {}", s.name));
        let span = tracing::info_span!("source", name = %s.name);
        let schema = guarded(
            &mut opts.interrupt,
            crate::sources::register(&ctx, s, &plan.storage).instrument(span.clone()),
        )
        .await?;
        let problems = checks::validate_against(&format!("source \"{}\"", s.name), &s.checks, &schema);
        if !problems.is_empty() {
            return Err(Error::Invalid {
                file: plan.file.display().to_string(),
                problems,
            });
        }
        if !s.checks.is_empty() {
            let df = ctx.table(s.name.as_str()).await.map_err(|e| Error::step(&s.name, e))?;
            let subject = format!("source \"{}\"", s.name);
            let outcomes = guarded(
                &mut opts.interrupt,
                checks::run(&subject, &df, &s.checks).instrument(span),
            )
            .await?;
            let failures = checks::failures(&outcomes);
            summary.checks.extend(outcomes.into_iter().map(|o| CheckReport {
                on: subject.clone(),
                outcome: o,
            }));
            if !failures.is_empty() {
                return Err(Error::Checks { failures });
            }
        }
        pb.inc(1);
    }

    for (i, step) in plan.steps.iter().enumerate() {
        pb.set_message(format!("step {} ({})", step.name, step.kind.name()));
        let span = tracing::info_span!("step", name = %step.name, kind = step.kind.name());
        let t0 = Instant::now();
        tracing::info!(parent: &span, step = %step.name, kind = step.kind.name(), n = i + 1, of = plan.steps.len(), "step started");
        let rows = guarded(&mut opts.interrupt, run_step(&ctx, plan, step).instrument(span.clone())).await?;
        let seconds = t0.elapsed().as_secs_f64();
        match rows {
            Some(r) => tracing::info!(parent: &span, step = %step.name, rows = r, seconds, "step done"),
            None => {
                tracing::info!(parent: &span, step = %step.name, seconds, "step planned (a view: it streams into its consumer)")
            }
        }
        summary.steps.push(StepReport {
            name: step.name.clone(),
            kind: step.kind.name(),
            rows,
            seconds,
        });
        pb.inc(1);
    }

    // Write every sink to staging and check it there.
    let mut failures = Vec::new();
    for sink in &plan.sinks {
        pb.set_message(format!("sink {}", sink.table));
        let span = tracing::info_span!("sink", table = %sink.table);
        let t0 = Instant::now();
        let s = guarded(
            &mut opts.interrupt,
            sinks::stage(&ctx, sink, &opts.run_id, &plan.storage).instrument(span.clone()),
        )
        .await?;
        tracing::info!(parent: &span, sink = %sink.table, rows = s.rows, files = s.files.len(), staging = %s.staging, "sink written to staging");
        let subject = format!("sink \"{}\"", sink.table);
        staged.push(s);
        if !sink.checks.is_empty() {
            let last = staged.last().ok_or_else(|| Error::step("sink", "no staged output"))?;
            let df = staged_table(&ctx, last).await?;
            let outcomes = guarded(
                &mut opts.interrupt,
                checks::run(&subject, &df, &sink.checks).instrument(span),
            )
            .await?;
            failures.extend(checks::failures(&outcomes));
            summary.checks.extend(outcomes.into_iter().map(|o| CheckReport {
                on: subject.clone(),
                outcome: o,
            }));
        }
        summary.sinks.push(SinkReport {
            table: sink.table.clone(),
            url: sink.location.to_string(),
            mode: sink.mode.as_str(),
            rows: staged.last().map_or(0, |s| s.rows),
            files: staged.last().map_or(0, |s| s.files.len()),
            bytes: staged.last().map_or(0, |s| s.files.iter().map(|f| f.bytes).sum()),
            seconds: t0.elapsed().as_secs_f64(),
        });
        pb.inc(1);
    }
    if !failures.is_empty() {
        return Err(Error::Checks { failures });
    }
    // Publish: the last interruption point is before this loop; once
    // publishing starts it runs to the end.
    if let Some(signal) = *opts.interrupt.borrow() {
        return Err(Error::Interrupted { signal });
    }
    let info = publish::RunInfo {
        run_id: opts.run_id.clone(),
        pipeline: plan.name.clone(),
        vars: plan.vars.shown(),
    };
    pb.set_message("publishing");
    let to_publish = std::mem::take(staged);
    for (i, s) in to_publish.iter().enumerate() {
        let t0 = Instant::now();
        match publish::publish(s, &info).await {
            Ok(m) => {
                tracing::info!(sink = %s.sink.table, url = %s.sink.location, rows = m.rows, files = m.files.len(), "published");
                if let Some(r) = summary.sinks.iter_mut().find(|r| r.table == s.sink.table) {
                    r.seconds += t0.elapsed().as_secs_f64();
                }
            }
            Err(e) => {
                // Keep the unpublished ones for cleanup by the caller.
                staged.extend(to_publish.into_iter().skip(i + 1));
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Checks that a sink's location can be written.
async fn probe_sink(ctx: &SessionContext, plan: &Plan, sink: &super::plan::Sink, run_id: &str) -> Result<()> {
    let err = |m: String| Error::Sink {
        sink: sink.table.clone(),
        url: sink.location.to_string(),
        message: m,
    };
    let store = crate::storage::register(ctx, &sink.location, &plan.storage).map_err(&err)?;
    crate::storage::probe_writable(store.as_ref(), &sink.location, run_id)
        .await
        .map_err(err)
}

/// A staged sink as a table (for its checks).
async fn staged_table(ctx: &SessionContext, s: &Staged) -> Result<DataFrame> {
    let err = |m: String| Error::Sink {
        sink: s.sink.table.clone(),
        url: s.sink.location.to_string(),
        message: m,
    };
    let listing = crate::sources::list(s.store.as_ref(), &s.staging).await.map_err(&err)?;
    let table = crate::sources::listing_table(ctx, &listing)
        .await
        .map_err(|e| err(e.to_string()))?;
    ctx.read_table(Arc::new(table)).map_err(|e| err(e.to_string()))
}

/// Runs one step and registers its tables; returns its row count when it
/// was computed (cached).
async fn run_step(ctx: &SessionContext, plan: &Plan, step: &Step) -> Result<Option<u64>> {
    let name = step.name.as_str();
    let outputs: Vec<DataFrame> = match &step.kind {
        StepKind::Sql(sql) => {
            let lp = crate::transform::plan(ctx, sql).await.map_err(|e| Error::Invalid {
                file: plan.file.display().to_string(),
                problems: vec![format!("{}: {}", at(step), with_origin(&e.to_string(), &sql.origin))],
            })?;
            vec![ctx.execute_logical_plan(lp).await.map_err(|e| Error::step(name, e))?]
        }
        kind => {
            // Check the inputs first: a wrong column fails before any fitting.
            let schemas = match kind {
                StepKind::Clv(c) => c.schemas(name, ctx).await,
                StepKind::Segment(s) => s.schemas(name, ctx).await,
                StepKind::Predict(p) => p.schemas(name, ctx).await,
                StepKind::Sql(_) => unreachable!("matched above"),
            };
            if let Err(problems) = schemas {
                return Err(Error::Invalid {
                    file: plan.file.display().to_string(),
                    problems: problems.into_iter().map(|m| with_line(m, step)).collect(),
                });
            }
            match kind {
                StepKind::Clv(c) => c.run(name, ctx).await?,
                StepKind::Segment(s) => s.run(name, ctx).await?,
                StepKind::Predict(p) => p.run(name, ctx).await?,
                StepKind::Sql(_) => unreachable!("matched above"),
            }
        }
    };
    let mut rows = None;
    for (i, (table, df)) in step.outputs.iter().zip(outputs).enumerate() {
        let provider: Arc<dyn TableProvider> = if i == 0 && step.cache {
            let (mem, n) = materialize(df).await.map_err(|e| Error::step(name, e))?;
            rows = Some(n);
            mem
        } else {
            df.into_view()
        };
        ctx.register_table(table.as_str(), provider)
            .map_err(|e| Error::step(name, e))?;
    }
    Ok(rows)
}

/// Computes a plan into memory, keeping its partitioning.
async fn materialize(df: DataFrame) -> datafusion::error::Result<(Arc<dyn TableProvider>, u64)> {
    let task = Arc::new(df.task_ctx());
    let physical = df.create_physical_plan().await?;
    let schema = physical.schema();
    let parts = collect_partitioned(physical, task).await?;
    let rows = parts.iter().flatten().map(|b| b.num_rows() as u64).sum();
    Ok((Arc::new(MemTable::try_new(schema, parts)?), rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::collections::BTreeMap;

    /// A whole run on `memory://` stores: generated sources, a SQL step, a
    /// partitioned sink published by the manifest protocol, then a rerun.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_and_publishes_on_an_in_memory_store() {
        let data = crate::storage::Location::parse("memory://unit-run/data/").unwrap();
        let store = crate::storage::build_store(&data, &BTreeMap::new()).unwrap();
        let opts = crate::generate::GenerateOptions {
            customers: 300,
            seed: 5,
            start: chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
            end: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        };
        crate::generate::generate(store.clone(), &data.path(), &opts)
            .await
            .unwrap();
        let yaml = "name: mem
sources:
  customers: {url: memory://unit-run/data/customers/}
  transactions: {url: memory://unit-run/data/transactions/}
steps:
  - name: spend
    sql: SELECT c.channel, c.customer_id, coalesce(sum(t.amount), 0.0) AS total FROM customers c LEFT JOIN transactions t USING (customer_id) GROUP BY c.channel, c.customer_id
sinks:
  - table: spend
    url: memory://unit-run/out/spend/
    partition_by: [channel]
    checks:
      - unique: customer_id
      - row_count: {min: 300, max: 300}
";
        let spec = config::parse(yaml).unwrap();
        let plan = config::validate::resolve(spec, std::path::Path::new("mem.yaml"), &BTreeMap::new()).unwrap();
        let mut manifests = Vec::new();
        for i in 0..2 {
            let opts = RunOptions {
                run_id: format!("20260101T00000{i}Z-0000000{i}"),
                interrupt: no_interrupt(),
                progress: indicatif::ProgressBar::hidden(),
            };
            let summary = run(&plan, opts).await.map_err(|(e, _)| e).unwrap();
            assert_eq!(summary.sinks[0].rows, 300);
            assert_eq!(summary.checks.iter().filter(|c| c.outcome.passed).count(), 2);
            let sink = &plan.sinks[0].location;
            let m = publish::manifest_of(store.clone(), sink).await.unwrap();
            assert_eq!(m.rows, 300);
            assert!(
                m.files
                    .iter()
                    .all(|f| f.path.starts_with("channel=") && f.path.contains(&format!("part-20260101T00000{i}Z")))
            );
            manifests.push(m);
        }
        // The second run replaced the first: exactly its files remain.
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let listed: Vec<String> = store
            .list(Some(&object_store::path::Path::from("out/spend")))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        let mut want: Vec<String> = manifests[1]
            .files
            .iter()
            .map(|f| format!("out/spend/{}", f.path))
            .collect();
        want.push("out/spend/_SUCCESS".to_string());
        want.sort();
        let mut listed = listed;
        listed.sort();
        assert_eq!(listed, want);
    }
}
