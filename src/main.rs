//! The `crmflow` binary: parse the command line, call the library, print,
//! and map the outcome to an exit code (0 ok, 1 run failed, 2 invalid
//! pipeline or command line, 130/143 interrupted). stderr carries logs,
//! progress and errors; stdout only what was asked for (`plan`, `validate`,
//! and the one-line JSON summary at the end of `run` that Airflow takes as
//! XCom).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use crmflow::cli::{Cli, Command, GenerateArgs, LogFormat, PipelineArgs, RunArgs, ValidateArgs};
use crmflow::runner::{exec, plan};
use crmflow::{Error, config};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print and succeed; usage errors exit 2.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let progress = progress_bar(&cli);
    init_logging(&cli, &progress);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("crmflow: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let json_logs = cli.log_format == LogFormat::Json;
    let result = runtime.block_on(dispatch(cli, progress));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.downcast_ref::<Error>().map_or(1, Error::exit_code);
            let message = crmflow::config::vars::mask(&format!("{e:#}"));
            if json_logs {
                tracing::error!(exit_code = code, "{message}");
            } else {
                eprintln!("crmflow: error: {message}");
            }
            ExitCode::from(code)
        }
    }
}

async fn dispatch(cli: Cli, progress: ProgressBar) -> anyhow::Result<()> {
    let text_logs = cli.log_format == LogFormat::Text;
    match cli.command {
        Command::Run(args) => run(args, progress, text_logs).await,
        Command::Validate(args) => validate(args).await,
        Command::Plan(args) => print_plan(args).await,
        Command::Generate(args) => generate(args).await,
    }
}

fn resolve(args: &PipelineArgs) -> Result<plan::Plan, Error> {
    let spec = config::load(&args.pipeline)?;
    config::validate::resolve(spec, &args.pipeline, &args.overrides())
}

async fn run(args: RunArgs, progress: ProgressBar, text_logs: bool) -> anyhow::Result<()> {
    let mut plan = resolve(&args.pipeline)?;
    if !args.select.is_empty() {
        plan = plan::select(plan, &args.select)?;
    }
    let run_id = run_id();
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
    let outcome = exec::run(&plan, opts).await;
    let (summary, error) = match outcome {
        Ok(s) => (s, None),
        Err((e, s)) => (s, Some(e)),
    };
    // With JSON logs stderr stays machine-readable: the summary is the
    // JSON line on stdout.
    if text_logs {
        print_summary(&summary);
    }
    let json = crmflow::config::vars::mask(&serde_json::to_string(&summary).context("serializing the run summary")?);
    if let Some(path) = &args.run_results {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing run results to {}", path.display()))?;
    }
    println!("{json}");
    match error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

async fn validate(args: ValidateArgs) -> anyhow::Result<()> {
    let plan = resolve(&args.pipeline)?;
    let checked = exec::check(&plan, args.check_storage).await?;
    let args = args.pipeline;
    println!(
        "{}: pipeline \"{}\" is valid: {} sources, {} steps, {} sinks, {} tables planned",
        args.pipeline.display(),
        plan.name,
        plan.sources.len(),
        plan.steps.len(),
        plan.sinks.len(),
        checked.tables.len()
    );
    Ok(())
}

async fn print_plan(args: PipelineArgs) -> anyhow::Result<()> {
    let plan = resolve(&args)?;
    let checked = exec::check(&plan, false).await?;
    let mut out = String::new();
    use std::fmt::Write as _;
    writeln!(out, "pipeline {} ({})", plan.name, args.pipeline.display())?;
    writeln!(out, "\nsources:")?;
    for s in &plan.sources {
        writeln!(out, "  {} <- {}", s.name, s.location)?;
    }
    writeln!(out, "\nsteps, in run order:")?;
    for (i, s) in plan.steps.iter().enumerate() {
        let extra: Vec<&str> = s.outputs.iter().skip(1).map(String::as_str).collect();
        writeln!(
            out,
            "  {}. {} [{}{}] <- {}{}",
            i + 1,
            s.name,
            s.kind.name(),
            if s.cache { ", cached" } else { "" },
            if s.inputs.is_empty() {
                "-".to_string()
            } else {
                s.inputs.join(", ")
            },
            if extra.is_empty() {
                String::new()
            } else {
                format!("; also makes {}", extra.join(", "))
            }
        )?;
    }
    writeln!(out, "\nsinks:")?;
    for s in &plan.sinks {
        let parts = if s.partition_by.is_empty() {
            String::new()
        } else {
            format!(" partitioned by {}", s.partition_by.join(", "))
        };
        writeln!(out, "  {} -> {} ({}{parts})", s.table, s.location, s.mode.as_str())?;
    }
    for t in &checked.tables {
        writeln!(out, "\ntable {} ({}):", t.name, t.kind)?;
        for f in t.schema.fields() {
            writeln!(
                out,
                "  {}: {}{}",
                f.name(),
                f.data_type(),
                if f.is_nullable() { "" } else { " not null" }
            )?;
        }
        if let Some(lp) = &t.plan {
            writeln!(out, "  logical plan:")?;
            for line in lp.display_indent().to_string().lines() {
                writeln!(out, "    {line}")?;
            }
        }
    }
    std::io::stdout()
        .lock()
        .write_all(crmflow::config::vars::mask(&out).as_bytes())?;
    Ok(())
}

async fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let location = crmflow::storage::Location::parse(&args.out)
        .map_err(|m| Error::Usage(format!("--out {}: {m}", args.out)))?
        .as_dir();
    let store = crmflow::storage::build_store(&location, &Default::default()).map_err(|m| Error::Storage {
        url: location.to_string(),
        message: m,
    })?;
    if args.end <= args.start {
        return Err(Error::Usage(format!("--end {} must be after --start {}", args.end, args.start)).into());
    }
    let opts = crmflow::generate::GenerateOptions {
        customers: args.customers,
        seed: args.seed,
        start: args.start,
        end: args.end,
    };
    let t0 = std::time::Instant::now();
    let summary = crmflow::generate::generate(store, &location.path(), &opts)
        .await
        .map_err(|e| Error::Generate(e.to_string()))?;
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

/// `20261125T080000Z-3f2a9c1b`: sortable, unique enough per sink.
fn run_id() -> String {
    let now = chrono::Utc::now();
    let noise =
        crmflow::hash::splitmix64(u64::from(std::process::id()) ^ now.timestamp_nanos_opt().unwrap_or(0) as u64);
    format!("{}-{:08x}", now.format("%Y%m%dT%H%M%SZ"), noise as u32)
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

fn print_summary(s: &exec::RunSummary) {
    use std::fmt::Write as _;
    let mut e = String::new();
    let _ = writeln!(
        e,
        "\nrun {} of {}: {} in {:.2}s",
        s.run_id, s.pipeline, s.status, s.seconds
    );
    if !s.steps.is_empty() {
        let _ = writeln!(e, "  {:<28} {:<8} {:>12} {:>9}", "step", "kind", "rows", "seconds");
        for st in &s.steps {
            let rows = st.rows.map_or("(view)".to_string(), |r| r.to_string());
            let _ = writeln!(e, "  {:<28} {:<8} {:>12} {:>9.3}", st.name, st.kind, rows, st.seconds);
        }
    }
    if !s.sinks.is_empty() {
        let _ = writeln!(
            e,
            "  {:<28} {:<8} {:>12} {:>9}  location",
            "sink", "files", "rows", "seconds"
        );
        for sk in &s.sinks {
            let _ = writeln!(
                e,
                "  {:<28} {:<8} {:>12} {:>9.3}  {}",
                sk.table, sk.files, sk.rows, sk.seconds, sk.url
            );
        }
    }
    let failed: Vec<_> = s.checks.iter().filter(|c| !c.outcome.passed).collect();
    if !s.checks.is_empty() {
        let _ = writeln!(e, "  checks: {} run, {} failed", s.checks.len(), failed.len());
    }
    if s.status == "success" && !s.sinks.is_empty() {
        let _ = writeln!(e, "  published {} sinks", s.sinks.len());
    } else if s.status != "success" {
        let _ = writeln!(e, "  nothing was published; previous outputs are untouched");
    }
    let _ = std::io::stderr()
        .lock()
        .write_all(crmflow::config::vars::mask(&e).as_bytes());
}

fn progress_bar(cli: &Cli) -> ProgressBar {
    let interactive =
        std::io::stderr().is_terminal() && cli.log_format == LogFormat::Text && matches!(cli.command, Command::Run(_));
    if !interactive {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

/// Logs go to stderr through the progress bar (which hides itself while a
/// line is written).
#[derive(Clone)]
struct LogWriter(ProgressBar);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let masked = crmflow::config::vars::mask(&String::from_utf8_lossy(buf));
        self.0.suspend(|| std::io::stderr().write_all(masked.as_bytes()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn init_logging(cli: &Cli, progress: &ProgressBar) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let pb = progress.clone();
    let writer = move || LogWriter(pb.clone());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
}
