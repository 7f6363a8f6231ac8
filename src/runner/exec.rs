//! Running a [`Plan`]: sinks probed, every step planned
//! ([`super::check`]), sources registered and checked, steps in order (a
//! span per step), sinks staged, checked and published.
//!
//! A step read by one consumer stays a lazy view that streams into it; a
//! step read by several (or `cache: true`) is materialized once by the
//! engine. Nothing is published until every sink has been written and
//! checked; an interruption before that leaves every previous output as it
//! was, and so does a panic (a bug): it is caught here, the staging is
//! removed and the locks released as for any error, and the run fails.
//!
//! Span fields are named apart from the span's own name (`step{step=..,
//! step_kind=..}`, `source{source=..}`), so a JSON log line never holds the
//! key `name` twice.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use datafusion::catalog::TableProvider;
use datafusion::prelude::DataFrame;
use futures::FutureExt;
use tokio::sync::watch;
use tracing::Instrument;

use super::check;
use super::plan::{Plan, Step, StepKind};
use super::report::{CheckReport, RunStatus, RunSummary, SinkReport};
use super::story::Story;
use crate::checks;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::sinks::{self, Staged, lock, publish};
use crate::stages::Stage;
use crate::storage::Location;
use object_store::ObjectStore;

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
pub(super) async fn guarded<T>(
    interrupt: &mut Interrupt,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
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

/// Options of a run.
pub struct RunOptions {
    pub run_id: String,
    pub interrupt: Interrupt,
    pub progress: indicatif::ProgressBar,
    /// Stop at the first failing step (else only its dependants are skipped).
    pub fail_fast: bool,
}

/// What a run has to undo if it fails: staging registered before its first
/// byte is written, and the sink locks it holds. Also what the HTML report
/// needs at the end: its store and the stage stories so far.
#[derive(Default)]
struct Undo {
    staging: Vec<(Arc<dyn ObjectStore>, Location)>,
    locks: Vec<lock::Held>,
    report_store: Option<Arc<dyn ObjectStore>>,
    story: Story,
}

impl Undo {
    async fn remove_staging(&mut self) {
        for (store, loc) in &self.staging {
            sinks::remove_prefix(store.as_ref(), loc).await;
        }
    }

    async fn release(&mut self) {
        for held in self.locks.drain(..).rev() {
            lock::release(&held).await;
        }
    }
}

/// Runs the plan: sinks probed and locked, sources, source checks, steps,
/// sinks (staged, checked, published in two phases).
///
/// # Errors
/// The first failure, with the summary so far for run results: before
/// publishing, every staged output is removed and nothing is published;
/// during the commit phase, the error and the summary name the sinks that
/// were published and those that were not.
pub async fn run(plan: Arc<Plan>, mut opts: RunOptions) -> std::result::Result<RunSummary, (Error, RunSummary)> {
    let started = Instant::now();
    let mut summary = RunSummary {
        run_id: opts.run_id.clone(),
        pipeline: plan.name.clone(),
        status: RunStatus::Running,
        vars: plan.vars.shown(),
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        seconds: 0.0,
        steps: vec![],
        sinks: vec![],
        checks: vec![],
        published: vec![],
        not_published: vec![],
        spill: None,
        error: None,
    };
    let mut undo = Undo::default();
    let mut engine = None;
    let result = AssertUnwindSafe(run_inner(&plan, &mut opts, &mut summary, &mut undo, &mut engine))
        .catch_unwind()
        .await
        .unwrap_or_else(|payload| {
            Err(Error::Panic {
                message: crate::error::panic_message(payload.as_ref()),
            })
        });
    // What the engine materialized for the run (Ballista's scratch) goes,
    // whatever the outcome.
    if let Some(engine) = engine {
        summary.spill = engine.spilled();
        engine.finish().await;
    }
    if result.is_err() && !undo.staging.is_empty() {
        undo.remove_staging().await;
        // A write the failure cut short may still be finishing on a blocking
        // thread (local disk): look once more after it had time to land.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        undo.remove_staging().await;
    }
    undo.release().await;
    for sink in &plan.sinks {
        sinks::staging::tidy(&sink.location, &sink.staging_root);
    }
    summary.seconds = started.elapsed().as_secs_f64();
    opts.progress.finish_and_clear();
    let result = match result {
        Ok(()) => {
            summary.status = RunStatus::Success;
            Ok(summary)
        }
        Err(e) => {
            summary.status = match e.exit_code() {
                2 => RunStatus::Invalid,
                130 | 143 => RunStatus::Interrupted,
                _ => RunStatus::Failed,
            };
            summary.error = Some(plan.vars.mask(&e.render()));
            Err((e, summary))
        }
    };
    if let Some(loc) = &plan.report {
        let s = match &result {
            Ok(s) | Err((_, s)) => s,
        };
        let html = plan.vars.mask(&super::html::render(s, &undo.story));
        let store = match undo.report_store.take() {
            Some(store) => Ok(store),
            None => crate::storage::build_store(loc, &plan.storage),
        };
        write_report(loc, store, html).await;
    }
    result
}

/// Writes the HTML report in one put (a local file appears whole: it is
/// written aside and renamed; an object store replaces the object at
/// once). A failure now is logged: the run's outcome stands.
pub async fn write_report(loc: &Location, store: std::result::Result<Arc<dyn ObjectStore>, String>, html: String) {
    use object_store::ObjectStoreExt;
    let written = match store {
        Ok(store) => store
            .put(&loc.path(), object_store::PutPayload::from(html.into_bytes()))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match written {
        Ok(()) => tracing::info!(report = %loc, "report written"),
        Err(e) => {
            tracing::error!(report = %loc, "the report could not be written: {e}; the run's outcome is unchanged")
        }
    }
}

/// Puts and deletes a probe object beside the report, so that a report
/// that cannot be written fails the run before any data is read.
async fn probe_report(store: &Arc<dyn ObjectStore>, loc: &Location, run_id: &str) -> std::result::Result<(), String> {
    use object_store::ObjectStoreExt;
    let probe = object_store::path::Path::from(format!("{}.probe-{run_id}", loc.path()));
    store
        .put(&probe, object_store::PutPayload::from_static(b""))
        .await
        .map_err(|e| e.to_string())?;
    store.delete(&probe).await.map_err(|e| e.to_string())
}

async fn run_inner(
    plan: &Arc<Plan>,
    opts: &mut RunOptions,
    summary: &mut RunSummary,
    undo: &mut Undo,
    slot: &mut Option<Engine>,
) -> Result<()> {
    let started = Engine::start(
        &plan.engine,
        plan.storage.clone(),
        crate::stages::functions(),
        &opts.run_id,
    );
    let engine = slot.insert(guarded(&mut opts.interrupt, started).await?).clone();
    let ctx = engine.context();
    let pb = opts.progress.clone();
    let total = plan.sources.len() + plan.steps.len() + plan.sinks.len();
    pb.set_length(total as u64);

    // Fail on an unwritable or locked sink before reading any data; once a
    // sink is ours, what dead runs left of it goes.
    let me = lock::Lease::mine(&opts.run_id, &plan.name);
    for sink in &plan.sinks {
        pb.set_message(format!("checking sink location {}", sink.location));
        guarded(&mut opts.interrupt, sinks::probe(&engine, sink, &opts.run_id)).await?;
        let store = engine
            .register_store(&sink.location)
            .map_err(|m| Error::sink(&sink.table, &sink.location, m))?;
        let held = lock::acquire(store.clone(), &sink.location, &me)
            .await
            .map_err(|m| Error::sink(&sink.table, &sink.location, m))?;
        if let Some(dead) = &held.took_over {
            tracing::warn!(sink = %sink.table, dead_run = %dead.run_id, "took over the lock of a run that is no longer alive");
        }
        undo.locks.push(held);
        for done in
            sinks::staging::remove_leftovers(store.as_ref(), &sink.location, &sink.staging_root, &opts.run_id).await
        {
            tracing::info!(sink = %sink.table, "{done} (left by a run that is no longer alive)");
        }
    }
    let _heartbeat = AbortOnDrop(heartbeat(undo.locks.clone()));
    if let Some(loc) = &plan.report {
        let err = |m: String| Error::Storage {
            url: loc.to_string(),
            cause: format!("the report cannot be written there: {m}").into(),
        };
        let store = engine.register_store(loc).map_err(err)?;
        guarded(&mut opts.interrupt, async {
            probe_report(&store, loc, &opts.run_id).await.map_err(err)
        })
        .await?;
        undo.report_store = Some(store);
    }

    // Plan every step against the real schemas (footers only): a pipeline
    // that cannot run fails with exit 2 before any row is read.
    pb.set_message("planning");
    guarded(&mut opts.interrupt, check::check_before_run(plan, &engine)).await?;

    // Every source first: a source's `relationships` check may read another.
    for s in &plan.sources {
        pb.set_message(format!("source {}", s.name));
        let span = tracing::info_span!("source", source = %s.name);
        let schema = guarded(
            &mut opts.interrupt,
            crate::sources::register(&engine, s).instrument(span.clone()),
        )
        .await?;
        let problems = checks::validate_against(&format!("source \"{}\"", s.name), &s.checks, &schema);
        if !problems.is_empty() {
            return Err(Error::invalid(plan.file.display(), problems));
        }
    }
    for s in &plan.sources {
        if !s.checks.is_empty() {
            let span = tracing::info_span!("source", source = %s.name);
            let df = ctx.table(s.name.as_str()).await.map_err(|e| Error::step(&s.name, e))?;
            let subject = format!("source \"{}\"", s.name);
            let outcomes = guarded(
                &mut opts.interrupt,
                checks::run(&subject, &df, &s.checks, ctx).instrument(span),
            )
            .await?;
            let mut outcomes = outcomes;
            let failures = checks::failures(&outcomes);
            if failures.is_empty() {
                super::quarantine::apply(&engine, s, &mut outcomes, &opts.run_id).await?;
            }
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

    let steps = super::steps::run(plan, &engine, opts, summary, &mut undo.story).await?;
    let skip_sinks = opts.fail_fast && !steps.failures.is_empty();

    // Write every sink to staging and check it there. Each staging location
    // is registered for removal before its first byte is written.
    let mut failures = Vec::new();
    let mut staged: Vec<Staged> = Vec::new();
    for sink in plan.sinks.iter().filter(|_| !skip_sinks) {
        if let Some(failed) = steps.missing.get(&sink.table) {
            tracing::warn!(sink = %sink.table, "sink not written: its table depends on failed step \"{failed}\"");
            continue;
        }
        pb.set_message(format!("sink {}", sink.table));
        let span = tracing::info_span!("sink", table = %sink.table);
        let t0 = Instant::now();
        let err = |m: String| Error::sink(&sink.table, &sink.location, m);
        let store = engine.register_store(&sink.location).map_err(err)?;
        let staging = sinks::staging_location(sink, &opts.run_id)
            .ok_or_else(|| err("the location has no parent to stage in".into()))?;
        undo.staging.push((store, staging.clone()));
        let s = guarded(
            &mut opts.interrupt,
            sinks::stage(&engine, sink, &staging).instrument(span.clone()),
        )
        .await?;
        tracing::info!(parent: &span, sink = %sink.table, rows = s.rows, files = s.files.len(), staging = %s.staging, "sink written to staging");
        if sink.format == crate::config::Format::Delta {
            guarded(&mut opts.interrupt, async {
                sinks::delta::preflight(&s).await.map_err(err)
            })
            .await?;
        }
        let subject = format!("sink \"{}\"", sink.table);
        if !sink.checks.is_empty() {
            let df = staged_table(&engine, &s).await?;
            let outcomes = guarded(
                &mut opts.interrupt,
                checks::run(&subject, &df, &sink.checks, ctx).instrument(span),
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
            rows: s.rows,
            files: s.files.len(),
            bytes: s.files.iter().map(|f| f.bytes).sum(),
            seconds: t0.elapsed().as_secs_f64(),
        });
        staged.push(s);
        pb.inc(1);
    }
    if !steps.failures.is_empty() {
        return Err(super::steps::failed(steps.failures, failures));
    }
    if !failures.is_empty() {
        return Err(Error::Checks { failures });
    }
    // Still ours? A run that lost a lock (it stalled past its expiry and
    // another run took over) must not publish.
    for (sink, held) in plan.sinks.iter().zip(&undo.locks) {
        lock::refresh(held)
            .await
            .map_err(|m| Error::sink(&sink.table, &sink.location, m))?;
    }

    let staged_point = async {
        crate::failpoint::hit("run::staged", "")
            .await
            .map_err(|e| Error::step("publish", e))
    };
    guarded(&mut opts.interrupt, staged_point).await?;
    pb.set_message("publishing");
    let info = publish::RunInfo {
        run_id: opts.run_id.clone(),
        pipeline: plan.name.clone(),
        pipeline_hash: plan.hash.clone(),
        vars: plan.vars.shown(),
    };
    publish_all(&engine, staged, &info, opts, summary).await
}

/// A sink ready for the commit phase.
enum Ready {
    /// Parquet: phase one of the manifest protocol done.
    Files(Box<publish::Prepared>),
    /// Delta: staged and checked; its commit is one delta-rs write.
    Delta(Box<Staged>),
}

impl Ready {
    fn table(&self) -> &str {
        match self {
            Ready::Files(p) => &p.staged.sink.table,
            Ready::Delta(s) => &s.sink.table,
        }
    }

    async fn abort(self) {
        match self {
            Ready::Files(p) => publish::abort(*p).await,
            Ready::Delta(s) => sinks::remove_prefix(s.store.as_ref(), &s.staging).await,
        }
    }

    /// Commits the sink, logging what became visible.
    async fn commit(&self, engine: &Engine, info: &publish::RunInfo) -> std::result::Result<(), publish::CommitError> {
        match self {
            Ready::Files(p) => publish::commit(p).await.map(|()| {
                tracing::info!(sink = %p.staged.sink.table, url = %p.staged.sink.location, rows = p.manifest.rows, files = p.manifest.files.len(), "published");
            }),
            Ready::Delta(s) => match sinks::delta::commit(engine, s, info).await {
                Ok(c) if c.skipped => {
                    tracing::info!(sink = %s.sink.table, url = %s.sink.location, version = c.version, "Delta table left at its version: nothing to commit (append of these vars committed before, or no rows)");
                    Ok(())
                }
                Ok(c) => {
                    tracing::info!(sink = %s.sink.table, url = %s.sink.location, rows = s.rows, version = c.version, "published (Delta commit)");
                    Ok(())
                }
                Err(m) => Err(publish::CommitError {
                    published: false,
                    error: Error::sink(&s.sink.table, &s.sink.location, m),
                }),
            },
        }
    }
}

/// Two-phase publishing (see [`publish`]): prepare every sink, then commit
/// them one by one; what was and was not published goes into the summary.
async fn publish_all(
    engine: &Engine,
    staged: Vec<Staged>,
    info: &publish::RunInfo,
    opts: &mut RunOptions,
    summary: &mut RunSummary,
) -> Result<()> {
    let mut prepared = Vec::new();
    let mut failed = None;
    for s in staged {
        if let Some(signal) = *opts.interrupt.borrow() {
            failed = Some(Error::Interrupted { signal });
            break;
        }
        if s.sink.format == crate::config::Format::Delta {
            prepared.push(Ready::Delta(Box::new(s)));
            continue;
        }
        let t0 = Instant::now();
        match publish::prepare(s, info).await {
            Ok(p) => {
                add_seconds(summary, &p.staged.sink.table, t0);
                prepared.push(Ready::Files(Box::new(p)));
            }
            Err((e, _)) => {
                failed = Some(e);
                break;
            }
        }
    }
    if failed.is_none()
        && let Err(e) = crate::failpoint::hit("publish::prepared", "").await
    {
        failed = Some(Error::step("publish", e));
    }
    if let Some(e) = failed {
        for p in prepared {
            p.abort().await;
        }
        return Err(e);
    }
    // Delta sinks first: their commit writes their data files, the step
    // most likely to fail, so that a failure there leaves the most sinks
    // unpublished rather than some published.
    prepared.sort_by_key(|p| matches!(p, Ready::Files(_)));
    // The commit phase runs to its end: an interrupt now would only leave
    // fewer sinks published.
    let mut rest = prepared.into_iter();
    while let Some(p) = rest.next() {
        let table = p.table().to_string();
        let t0 = Instant::now();
        match p.commit(engine, info).await {
            Ok(()) => {
                add_seconds(summary, &table, t0);
                summary.published.push(table);
            }
            Err(c) => {
                if c.published {
                    summary.published.push(table.clone());
                } else {
                    summary.not_published.push(table.clone());
                    p.abort().await;
                }
                for other in rest {
                    summary.not_published.push(other.table().to_string());
                    other.abort().await;
                }
                return Err(Error::Publish {
                    published: summary.published.clone(),
                    not_published: summary.not_published.clone(),
                    cause: Box::new(c.error),
                });
            }
        }
    }
    Ok(())
}

fn add_seconds(summary: &mut RunSummary, table: &str, t0: Instant) {
    if let Some(r) = summary.sinks.iter_mut().find(|r| r.table == table) {
        r.seconds += t0.elapsed().as_secs_f64();
    }
}

/// Aborts a task when dropped (on every way out of the run).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Refreshes the run's sink leases until aborted.
fn heartbeat(locks: Vec<lock::Held>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(lock::REFRESH).await;
            for held in &locks {
                if let Err(m) = lock::refresh(held).await {
                    tracing::warn!("{m}");
                }
            }
        }
    })
}

/// Deregisters the tables of steps `..=done` that no later step and no
/// sink reads, so that cached results nothing reads any more are freed (a
/// view still read keeps what it reads alive).
pub(super) fn release_unread(engine: &Engine, plan: &Plan, done: usize) {
    let needed: std::collections::HashSet<&str> = plan.steps[done + 1..]
        .iter()
        .flat_map(|s| s.inputs.iter().map(String::as_str))
        .chain(plan.sinks.iter().map(|s| s.table.as_str()))
        .chain(
            plan.sinks
                .iter()
                .flat_map(|s| s.checks.iter())
                .filter_map(|c| match &c.kind {
                    checks::CheckKind::Relationships(r) => Some(r.to_table.as_str()),
                    _ => None,
                }),
        )
        .collect();
    for step in &plan.steps[..=done] {
        for table in &step.outputs {
            if !needed.contains(table.as_str()) {
                let _ = engine.context().deregister_table(table.as_str());
            }
        }
    }
}

/// A staged sink as a table (for its checks).
async fn staged_table(engine: &Engine, s: &Staged) -> Result<DataFrame> {
    let err = |m: String| Error::sink(&s.sink.table, &s.sink.location, m);
    let listing = crate::sources::list(s.store.as_ref(), &s.staging).await.map_err(err)?;
    let table = crate::sources::listing_table(engine.context(), &listing)
        .await
        .map_err(|e| Error::sink(&s.sink.table, &s.sink.location, e))?;
    engine
        .context()
        .read_table(Arc::new(table))
        .map_err(|e| Error::sink(&s.sink.table, &s.sink.location, e))
}

/// Runs one step and registers its tables; returns its row count when it
/// was computed (cached).
pub(super) async fn run_step(engine: &Engine, plan: &Plan, step: &Step) -> Result<Option<u64>> {
    let name = step.name.as_str();
    let ctx = engine.context();
    crate::failpoint::hit("run::step", name)
        .await
        .map_err(|e| Error::step(name, e))?;
    // Check the inputs first (a wrong column fails before any fitting); the
    // planning pass already did, against the same schemas.
    let (_, lp) = check::schemas(step, engine)
        .await
        .map_err(|problems| Error::invalid(plan.file.display(), problems))?;
    let outputs: Vec<DataFrame> = match (&step.kind, lp) {
        (StepKind::Sql(_), Some(lp)) => vec![ctx.execute_logical_plan(lp).await.map_err(|e| Error::step(name, e))?],
        (StepKind::Sql(_), None) => return Err(Error::step(name, "the SQL step has no plan")),
        (StepKind::Stage(stage), _) => stage.run(name, engine).await?,
    };
    let mut rows = None;
    for (i, (table, df)) in step.outputs.iter().zip(outputs).enumerate() {
        let provider: Arc<dyn TableProvider> = if i == 0 && step.cache {
            let (mem, n) = engine.materialize(df).await.map_err(|e| Error::step(name, e))?;
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
        let plan =
            Arc::new(super::super::resolve::resolve(spec, std::path::Path::new("mem.yaml"), &BTreeMap::new()).unwrap());
        let mut manifests = Vec::new();
        for i in 0..2 {
            let opts = RunOptions {
                run_id: format!("20260101T00000{i}Z-0000000{i}"),
                interrupt: no_interrupt(),
                progress: indicatif::ProgressBar::hidden(),
                fail_fast: false,
            };
            let summary = run(plan.clone(), opts).await.map_err(|(e, _)| e).unwrap();
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
