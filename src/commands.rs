//! What each subcommand does, from parsed arguments to output: `run`,
//! `validate`, `plan`, `generate`, and the Ballista cluster nodes
//! `scheduler` and `executor` (which run until stopped). `main.rs` parses, calls [`dispatch`] and
//! maps the error to an exit code. stdout gets only what was asked for (the
//! plan, the validate line, the one-line JSON run summary); stderr logs and
//! the human summary.

use std::io::Write;

use indicatif::ProgressBar;

use crate::cli::{
    Cli, Command, ExecutorArgs, GcArgs, GenerateArgs, LogFormat, PipelineArgs, RunArgs, SchedulerArgs, ValidateArgs,
};
use crate::error::{Error, Result};
use crate::runner::{backfill, check, exec, gc, plan, report, resolve, select};
use crate::storage::Location;

/// Runs the parsed command.
///
/// # Errors
/// The command's failure; [`Error::exit_code`] gives the process exit code.
pub async fn dispatch(cli: Cli, progress: ProgressBar) -> Result<()> {
    let text_logs = cli.log_format == LogFormat::Text;
    match cli.command {
        Command::Run(args) => run(args, progress, text_logs).await,
        Command::Validate(args) => validate(args).await,
        Command::Plan(args) => print_plan(args).await,
        Command::Generate(args) => generate(args).await,
        Command::Scheduler(args) => scheduler(args).await,
        Command::Executor(args) => executor(args).await,
        Command::Gc(args) => collect_garbage(args).await,
    }
}

fn load(args: &PipelineArgs) -> Result<plan::Plan> {
    let spec = crate::config::load(&args.pipeline)?;
    resolve::resolve(spec, &args.pipeline, &args.overrides())
}

/// The `--run-results` file, opened (created, emptied) before anything
/// else, so that a path that cannot be written fails with exit 2 before a
/// byte is read, instead of after a run has published.
struct ResultsFile {
    path: std::path::PathBuf,
    file: std::fs::File,
}

impl ResultsFile {
    fn open(path: &std::path::Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::RunResults {
                path: path.display().to_string(),
                cause: e.into(),
            })?;
        Ok(ResultsFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Writes `json` as the file's whole content. A failure now (a full
    /// disk) is logged, never turned into an exit code: the run's outcome
    /// stands, and its summary is still the last stdout line.
    fn write(&mut self, json: &str) {
        use std::io::{Seek, SeekFrom};
        let result = (|| {
            self.file.set_len(0)?;
            self.file.seek(SeekFrom::Start(0))?;
            self.file.write_all(format!("{json}\n").as_bytes())?;
            self.file.sync_all()
        })();
        if let Err(e) = result {
            tracing::error!(path = %self.path.display(), "the run results could not be written: {e}; the run's outcome and exit code are unchanged");
        }
    }
}

/// The summary of a run whose pipeline or command line is invalid (exit 2
/// before a plan exists), for the run results file.
fn invalid_summary(args: &RunArgs, run_id: &str, error: &Error) -> report::RunSummary {
    let pipeline = crate::config::load(&args.pipeline.pipeline)
        .map(|spec| spec.name)
        .unwrap_or_default();
    report::RunSummary {
        run_id: run_id.to_string(),
        pipeline,
        status: report::RunStatus::Invalid,
        vars: args.pipeline.overrides(),
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        seconds: 0.0,
        steps: vec![],
        sinks: vec![],
        checks: vec![],
        published: vec![],
        not_published: vec![],
        spill: None,
        error: Some(error.render()),
    }
}

fn summary_json(summary: &report::RunSummary) -> String {
    let json = serde_json::to_string(summary).unwrap_or_else(|e| {
        // Plain structs and maps with string keys: this cannot fail, but a
        // summary must come out whatever happens.
        serde_json::json!({"run_id": summary.run_id, "status": summary.status.as_str(), "error": e.to_string()})
            .to_string()
    });
    crate::vars::mask(&json)
}

/// The `--report` location, parsed.
fn cli_report(args: &RunArgs) -> Result<Option<Location>> {
    args.report
        .as_deref()
        .map(Location::parse)
        .transpose()
        .map_err(|m| Error::Usage(format!("--report: {m}")))
}

/// Why a plan could not be prepared: the report location itself is wrong
/// (then no report is written), or anything else.
enum Unprepared {
    Report(Error),
    Other(Error),
}

impl From<Error> for Unprepared {
    fn from(e: Error) -> Self {
        Unprepared::Other(e)
    }
}

impl Unprepared {
    fn error(self) -> Error {
        match self {
            Unprepared::Report(e) | Unprepared::Other(e) => e,
        }
    }
}

/// The plan of a run: resolved with `overrides`, the `--report` location
/// (which wins over `report:`) checked against every sink of the pipeline,
/// restricted to the selection, deferred tables checked.
async fn prepare(
    args: &RunArgs,
    overrides: &std::collections::BTreeMap<String, String>,
    report: Option<&Location>,
) -> std::result::Result<plan::Plan, Unprepared> {
    let spec = crate::config::load(&args.pipeline.pipeline)?;
    let mut plan = resolve::resolve(spec, &args.pipeline.pipeline, overrides)?;
    if let Some(r) = report {
        let problems = resolve::report_problems(r, &plan.sinks);
        if !problems.is_empty() {
            return Err(Unprepared::Report(Error::invalid(
                args.pipeline.pipeline.display(),
                problems,
            )));
        }
        plan.report = Some(r.clone());
    }
    if args.select.is_empty() {
        return Ok(plan);
    }
    let plan = select::select(plan, &select::parse(&args.select), args.defer)?;
    select::check_deferred(&plan).await?;
    Ok(plan)
}

/// Fires with the signal's name on SIGINT or SIGTERM.
fn interrupt() -> exec::Interrupt {
    let (tx, rx) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        if let Some(signal) = wait_for_signal().await {
            tracing::warn!(signal, "interrupted: stopping; nothing half-written will be published");
            let _ = tx.send(Some(signal));
            // Keep the channel open until the process exits.
            std::future::pending::<()>().await;
        }
    });
    rx
}

async fn run(args: RunArgs, progress: ProgressBar, text_logs: bool) -> Result<()> {
    let mut results = args.run_results.as_deref().map(ResultsFile::open).transpose()?;
    if let Some(spec) = args.backfill.clone() {
        return run_backfill(args, &spec, results, progress, text_logs).await;
    }
    let run_id = crate::runner::run_id();
    crate::logging::set_run_id(&run_id);
    let report = cli_report(&args)?;
    let plan = match prepare(&args, &args.pipeline.overrides(), report.as_ref()).await {
        Ok(plan) => plan,
        Err(why) => {
            let bad_report = matches!(why, Unprepared::Report(_));
            let e = why.error();
            let summary = invalid_summary(&args, &run_id, &e);
            if let Some(r) = &mut results {
                r.write(&summary_json(&summary));
            }
            // The report of a pipeline that does not load: the error (not
            // where the report itself may not go).
            if let Some(loc) = report.as_ref().filter(|_| !bad_report) {
                let html = crate::vars::mask(&crate::runner::html::render(&summary, &Default::default()));
                let store = crate::storage::build_store(loc, &Default::default());
                exec::write_report(loc, store, html).await;
            }
            return Err(e);
        }
    };
    tracing::info!(pipeline = %plan.name, run_id = %run_id, steps = plan.steps.len(), sinks = plan.sinks.len(), "run started");
    let opts = exec::RunOptions {
        run_id,
        interrupt: interrupt(),
        progress,
        fail_fast: args.fail_fast,
    };
    let (summary, error) = match exec::run(std::sync::Arc::new(plan), opts).await {
        Ok(s) => (s, None),
        Err((e, s)) => (s, Some(e)),
    };
    // With JSON logs stderr stays machine-readable: the summary is the
    // JSON line on stdout.
    if text_logs {
        let _ = std::io::stderr()
            .lock()
            .write_all(crate::vars::mask(&report::render_summary(&summary)).as_bytes());
    }
    // Nothing from here on changes the exit code: the run has published
    // (or not) already.
    let json = summary_json(&summary);
    if let Some(r) = &mut results {
        r.write(&json);
    }
    if let Err(e) = writeln!(std::io::stdout().lock(), "{json}") {
        tracing::error!("the run summary could not be written to stdout: {e}");
    }
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// With `report:` in the pipeline, each value of a backfill writes its own
/// report: two values may not resolve it to the same location.
fn report_per_value(plans: &[plan::Plan], var: &str, spec: &str) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for p in plans {
        if let Some(r) = &p.report
            && !seen.insert(r.url().to_string())
        {
            return Err(Error::Usage(format!(
                "report: {r} is the same for several values of --backfill {spec}: put ${{{var}}} in its path, \
                 so that each value writes its own report"
            )));
        }
    }
    Ok(())
}

fn masked_json(value: &impl serde::Serialize) -> String {
    crate::vars::mask(&serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")))
}

/// `run --backfill`: every value's plan first (an invalid one fails before
/// anything runs), then one run per value; a JSON line per value on stdout
/// and the backfill summary as the last line (and in `--run-results`).
async fn run_backfill(
    args: RunArgs,
    spec: &str,
    mut results: Option<ResultsFile>,
    progress: ProgressBar,
    text_logs: bool,
) -> Result<()> {
    let prepared = async {
        if args.report.is_some() {
            return Err(Error::Usage(format!(
                "--report writes the report of one run and --backfill {spec} makes one run per value: give one \
                 (a report: in the pipeline with ${{var}} in its path writes one report per value)"
            )));
        }
        let range = backfill::parse(spec, &args.every)?;
        if let Some((k, _)) = args.pipeline.vars.iter().find(|(k, _)| *k == range.var) {
            return Err(Error::Usage(format!(
                "--var {k} and --backfill {spec} both set \"{k}\": give one"
            )));
        }
        let mut plans = Vec::new();
        for v in &range.values {
            let mut overrides = args.pipeline.overrides();
            overrides.insert(range.var.clone(), v.clone());
            plans.push(prepare(&args, &overrides, None).await.map_err(Unprepared::error)?);
        }
        report_per_value(&plans, &range.var, spec)?;
        Ok((range, plans))
    };
    let (range, plans) = match prepared.await {
        Ok(p) => p,
        Err(e) => {
            if let Some(r) = &mut results {
                let run_id = crate::runner::run_id();
                r.write(&summary_json(&invalid_summary(&args, &run_id, &e)));
            }
            return Err(e);
        }
    };
    tracing::info!(var = %range.var, values = range.values.len(), every = %range.every, "backfill started");
    let opts = backfill::Options {
        force: args.force,
        keep_going: args.keep_going,
        fail_fast: args.fail_fast,
        interrupt: interrupt(),
        progress,
    };
    let var = range.var.clone();
    let mut report_value = |v: &backfill::ValueResult, so_far: &backfill::Summary| {
        let line = crate::vars::mask(&v.line(&var));
        if text_logs {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        } else {
            tracing::info!(value = %v.value, status = v.status.as_str(), "{line}");
        }
        let _ = writeln!(std::io::stdout().lock(), "{}", masked_json(v));
        if let Some(r) = &mut results {
            r.write(&masked_json(so_far));
        }
    };
    let (summary, error) = backfill::run(&range, plans, opts, &mut report_value).await;
    let json = masked_json(&summary);
    if text_logs {
        let _ = writeln!(
            std::io::stderr().lock(),
            "backfill {} every {}: {} in {:.2}s: {} succeeded, {} skipped, {} failed, {} not run",
            summary.backfill,
            summary.every,
            summary.status.as_str(),
            summary.seconds,
            summary.succeeded,
            summary.skipped,
            summary.failed,
            summary.not_run
        );
    }
    if let Some(r) = &mut results {
        r.write(&json);
    }
    if let Err(e) = writeln!(std::io::stdout().lock(), "{json}") {
        tracing::error!("the backfill summary could not be written to stdout: {e}");
    }
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn collect_garbage(args: GcArgs) -> Result<()> {
    let older_than = gc::parse_duration(&args.older_than)?;
    let plan = load(&args.pipeline)?;
    let found = gc::gc(&plan, older_than, args.dry_run).await?;
    let mut text = String::new();
    for f in &found {
        text.push_str(&f.line());
        text.push('\n');
    }
    let gone = found
        .iter()
        .filter(|f| matches!(f.action, gc::Action::Removed | gc::Action::WouldRemove))
        .count();
    text.push_str(&format!(
        "gc: {} {gone} staging directories of pipeline \"{}\" ({} kept)\n",
        if args.dry_run { "would remove" } else { "removed" },
        plan.name,
        found.len() - gone
    ));
    std::io::stdout()
        .lock()
        .write_all(crate::vars::mask(&text).as_bytes())
        .map_err(|e| Error::Output {
            path: "stdout".into(),
            cause: e.into(),
        })
}

async fn validate(args: ValidateArgs) -> Result<()> {
    let plan = load(&args.pipeline)?;
    let checked = check::check(&plan, args.check_storage).await?;
    println!(
        "{}: pipeline \"{}\" is valid: {} sources, {} steps, {} sinks, {} tables planned",
        args.pipeline.pipeline.display(),
        plan.name,
        plan.sources.len(),
        plan.steps.len(),
        plan.sinks.len(),
        checked.tables.len()
    );
    Ok(())
}

async fn print_plan(args: PipelineArgs) -> Result<()> {
    let plan = load(&args)?;
    let checked = check::check(&plan, false).await?;
    let text = crate::vars::mask(&report::render_plan(&plan, &checked));
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| Error::Output {
            path: "the plan to stdout".into(),
            cause: e.into(),
        })
}

async fn generate(args: GenerateArgs) -> Result<()> {
    let location = crate::storage::Location::parse(&args.out)
        .map_err(|m| Error::Usage(format!("--out {}: {m}", args.out)))?
        .as_dir();
    let store = crate::storage::build_store(&location, &Default::default()).map_err(|m| Error::Storage {
        url: location.to_string(),
        cause: m.into(),
    })?;
    if args.end <= args.start {
        return Err(Error::Usage(format!(
            "--end {} must be after --start {}",
            args.end, args.start
        )));
    }
    let opts = crate::generate::GenerateOptions {
        customers: args.customers,
        seed: args.seed,
        start: args.start,
        end: args.end,
    };
    let t0 = std::time::Instant::now();
    let summary = crate::generate::generate(store, &location.path(), &opts)
        .await
        .map_err(|e| Error::Generate(e.to_string().into()))?;
    tracing::info!(
        customers = summary.customers,
        transactions = summary.transactions,
        interactions = summary.interactions,
        files = summary.files.len(),
        seconds = t0.elapsed().as_secs_f64(),
        out = %location,
        "generated"
    );
    Ok(())
}

async fn scheduler(args: SchedulerArgs) -> Result<()> {
    let beat = crate::engine::ballista::HEARTBEAT_SECONDS;
    if args.executor_timeout <= beat {
        return Err(Error::Usage(format!(
            "--executor-timeout {}: must be longer than the executors' heartbeat interval ({beat} s)",
            args.executor_timeout
        )));
    }
    let opts = crate::engine::ballista::SchedulerOptions {
        bind: args.bind,
        external_host: args.external_host,
        executor_timeout_seconds: args.executor_timeout,
    };
    tracing::info!(bind = %args.bind, "Ballista scheduler starting (crmflow's functions and object stores registered)");
    crate::engine::ballista::serve_scheduler(&opts, crate::stages::functions())
        .await
        .map_err(|m| Error::Engine(format!("scheduler on {}: {m}", args.bind).into()))
}

async fn executor(args: ExecutorArgs) -> Result<()> {
    let (host, port) = args
        .scheduler
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| Error::Usage(format!("--scheduler {}: expected HOST:PORT", args.scheduler)))?;
    let memory_limit = match &args.memory_limit {
        Some(m) => {
            Some(crate::runner::resolve::parse_bytes(m).map_err(|e| Error::Usage(format!("--memory-limit {m}: {e}")))?)
        }
        None => None,
    };
    if let Some(dir) = &args.work_dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::Usage(format!("--work-dir {}: {e}", dir.display())))?;
    }
    let opts = crate::engine::ballista::ExecutorOptions {
        scheduler_host: host,
        scheduler_port: port,
        bind: args.bind,
        grpc_port: match args.grpc_port {
            Some(p) => p,
            None => args
                .bind
                .port()
                .checked_add(1)
                .ok_or_else(|| Error::Usage(format!("--bind {}: give --grpc-port too", args.bind)))?,
        },
        external_host: args.external_host,
        concurrent_tasks: args.concurrent_tasks,
        work_dir: args.work_dir.map(|d| d.display().to_string()),
        memory_limit,
        connect_timeout_seconds: 60,
    };
    tracing::info!(scheduler = %args.scheduler, bind = %args.bind, "Ballista executor starting (crmflow's functions and object stores registered)");
    crate::engine::ballista::serve_executor(&opts, crate::stages::functions())
        .await
        .map_err(|m| Error::Engine(format!("executor on {}: {m}", args.bind).into()))
}

async fn wait_for_signal() -> Option<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).ok()?;
    let mut term = signal(SignalKind::terminate()).ok()?;
    tokio::select! {
        _ = int.recv() => Some("SIGINT"),
        _ = term.recv() => Some("SIGTERM"),
    }
}
