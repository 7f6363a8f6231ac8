//! The command line, as in `PIPELINE.md`: `run`, `validate`, `plan`,
//! `generate`, `gc`, and the cluster nodes `scheduler` and `executor`. Parsed by
//! clap (derive); `main.rs` dispatches.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// YAML-declared batch pipelines for CRM analytics on Apache DataFusion.
#[derive(Debug, Parser)]
#[command(name = "crmflow", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Log level filter (e.g. `info`, `debug`, `crmflow=debug,datafusion=info`);
    /// the environment variable CRMFLOW_LOG does the same.
    #[arg(long, global = true, env = "CRMFLOW_LOG", default_value = "info")]
    pub log: String,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline: read sources, run steps, publish sinks.
    Run(RunArgs),
    /// Check a pipeline against the real source schemas (footers only, no rows).
    Validate(ValidateArgs),
    /// Print the step graph, each table's schema and each SQL step's plan.
    Plan(PipelineArgs),
    /// Write deterministic synthetic customers, transactions and interactions.
    Generate(GenerateArgs),
    /// Run a Ballista scheduler for `engine: {kind: ballista, url: df://HOST:PORT}`.
    Scheduler(SchedulerArgs),
    /// Run a Ballista executor that takes tasks from a scheduler.
    Executor(ExecutorArgs),
    /// Remove the staging that dead runs left beside the pipeline's sinks.
    Gc(GcArgs),
}

/// The pipeline file and its vars.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// The pipeline YAML file.
    pub pipeline: PathBuf,

    /// Override a var: `--var as_of=2026-11-24` (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
}

impl PipelineArgs {
    /// The `--var` overrides as a map (the last of a repeated key wins).
    pub fn overrides(&self) -> BTreeMap<String, String> {
        self.vars.iter().cloned().collect()
    }
}

/// `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,

    /// Also check that every sink location can be written (puts and deletes
    /// a small probe object).
    #[arg(long)]
    pub check_storage: bool,
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,

    /// Run only these steps and write only the sinks of their tables:
    /// `STEP`, `+STEP` (with every step it reads), `STEP+` (with every step
    /// that reads it); comma-separated or repeated. Unselected steps a
    /// selected one reads are computed too, unless --defer.
    #[arg(long = "select", value_name = "STEP")]
    pub select: Vec<String>,

    /// Read the tables of unselected steps that selected steps read from
    /// their sinks' published output instead of computing them.
    #[arg(long, requires = "select")]
    pub defer: bool,

    /// Stop at the first failing step (by default only the steps that read
    /// it are skipped and independent ones still run).
    #[arg(long)]
    pub fail_fast: bool,

    /// One run per value of a var, in order: `as_of=2026-11-01..2026-11-24`
    /// (dates, both ends included).
    #[arg(long, value_name = "VAR=FROM..TO")]
    pub backfill: Option<String>,

    /// The step between backfill values: `Nd` days or `Nmo` months.
    #[arg(long, value_name = "1d|7d|1mo", default_value = "1d", requires = "backfill")]
    pub every: String,

    /// Backfill: rerun values whose sinks already hold this pipeline's
    /// output for them.
    #[arg(long, requires = "backfill")]
    pub force: bool,

    /// Backfill: go on with the next values after a value fails.
    #[arg(long, requires = "backfill")]
    pub keep_going: bool,

    /// Also write the run's results (the JSON summary) to this file.
    #[arg(long, value_name = "PATH")]
    pub run_results: Option<PathBuf>,

    /// Write the HTML run report (one self-contained file) to this path or
    /// URL, after a success and after a failure (instead of `report:`).
    #[arg(long, value_name = "PATH.html")]
    pub report: Option<String>,
}

/// `gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,

    /// Only staging of runs that started at least this long ago
    /// (`30m`, `1h`, `2d`, `0s`).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub older_than: String,

    /// Print what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of customers.
    #[arg(long)]
    pub customers: u64,

    /// Random seed: the same seed gives byte-identical files.
    #[arg(long, default_value_t = 20261124)]
    pub seed: u64,

    /// Output directory or URL (customers/, transactions/, interactions/ below it).
    #[arg(long)]
    pub out: String,

    /// First day of the observation window.
    #[arg(long, default_value = "2023-11-25")]
    pub start: chrono::NaiveDate,

    /// Day after the last day of the window (exclusive).
    #[arg(long, default_value = "2026-11-25")]
    pub end: chrono::NaiveDate,
}

/// `scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on (gRPC, for clients and executors).
    #[arg(long, default_value = "0.0.0.0:50050", value_name = "HOST:PORT")]
    pub bind: std::net::SocketAddr,

    /// Host name executors and clients reach this scheduler at (default: the
    /// bind address).
    #[arg(long, value_name = "HOST")]
    pub external_host: Option<String>,

    /// Seconds without a heartbeat (executors send one every 2 s) after
    /// which an executor is taken as dead and its tasks and shuffle output
    /// are run again elsewhere.
    #[arg(long, default_value_t = 180, value_name = "SECONDS")]
    pub executor_timeout: u64,
}

/// `executor`.
#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler, `HOST:PORT`.
    #[arg(long, value_name = "HOST:PORT")]
    pub scheduler: String,

    /// Address the executor's Arrow Flight service listens on (shuffle and
    /// result fetches from other executors and the client).
    #[arg(long, default_value = "0.0.0.0:50051", value_name = "HOST:PORT")]
    pub bind: std::net::SocketAddr,

    /// Port (on the --bind host) of the gRPC service the scheduler pushes
    /// tasks to (default: the --bind port + 1).
    #[arg(long, value_name = "PORT")]
    pub grpc_port: Option<u16>,

    /// Host name the scheduler, other executors and clients reach this
    /// executor at (default: the address the scheduler sees).
    #[arg(long, value_name = "HOST")]
    pub external_host: Option<String>,

    /// Tasks run at once (default: the number of cores).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub concurrent_tasks: usize,

    /// Directory for shuffle files (default: a new temporary directory).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,

    /// Memory for all tasks together, e.g. `8GiB`; past it, operators spill
    /// to the work directory (default: a share of the machine's memory).
    #[arg(long, value_name = "SIZE")]
    pub memory_limit: Option<String>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("\"{s}\" is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("\"{s}\" has an empty KEY"));
    }
    Ok((k.to_string(), v.to_string()))
}
