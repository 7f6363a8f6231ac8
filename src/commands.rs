//! What each subcommand does, from parsed arguments to output: `run`,
//! `validate`, `plan`, `generate`, and the Ballista cluster nodes
//! `scheduler` and `executor` (which run until stopped). `main.rs` parses, calls [`dispatch`] and
//! maps the error to an exit code. stdout gets only what was asked for (the
//! plan, the validate line, the one-line JSON run summary); stderr logs and
//! the human summary.

use std::io::Write;

use indicatif::ProgressBar;

use crate::cli::{
    Cli, Command, ExecutorArgs, GenerateArgs, LogFormat, PipelineArgs, RunArgs, SchedulerArgs, ValidateArgs,
};
use crate::error::{Error, Result};
use crate::runner::{check, exec, plan, report, resolve};

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
    }
}

fn load(args: &PipelineArgs) -> Result<plan::Plan> {
    let spec = crate::config::load(&args.pipeline)?;
    resolve::resolve(spec, &args.pipeline, &args.overrides())
}

async fn run(args: RunArgs, progress: ProgressBar, text_logs: bool) -> Result<()> {
    let mut plan = load(&args.pipeline)?;
    if !args.select.is_empty() {
        plan = plan::select(plan, &args.select)?;
    }
    let run_id = crate::runner::run_id();
    tracing::info!(pipeline = %plan.name, run_id = %run_id, steps = plan.steps.len(), sinks = plan.sinks.len(), "run started");
    let (tx, rx) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        if let Some(signal) = wait_for_signal().await {
            tracing::warn!(signal, "interrupted: stopping; nothing half-written will be published");
            let _ = tx.send(Some(signal));
            // Keep the channel open until the process exits.
            std::future::pending::<()>().await;
        }
    });
    let opts = exec::RunOptions {
        run_id,
        interrupt: rx,
        progress,
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
    let json = serde_json::to_string(&summary).map_err(|e| Error::Output {
        path: "the run summary".into(),
        cause: e.to_string().into(),
    })?;
    let json = crate::vars::mask(&json);
    if let Some(path) = &args.run_results {
        std::fs::write(path, format!("{json}\n")).map_err(|e| Error::Output {
            path: format!("run results to {}", path.display()),
            cause: e.into(),
        })?;
    }
    println!("{json}");
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
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
