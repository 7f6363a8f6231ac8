//! Logs and progress on stderr: `tracing` events as text or one JSON object
//! per line (`--log-format`), filtered by `--log`/`CRMFLOW_LOG`, written
//! through the progress bar (shown only on a terminal, for `run`) so the two
//! never garble each other; every line is masked for secrets.
//!
//! With `--log-format json` every line on stderr is one JSON object with
//! unique keys, whatever happens: command-line errors (which clap finds
//! before there is a [`Cli`], so `main.rs` asks [`json_requested`] first)
//! go through [`usage_error`], and a panic through the hook of
//! [`install_panic_hook`], which names the run it happened in.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{Cli, Command, LogFormat};

/// The progress bar of `run` on an interactive terminal; hidden otherwise.
pub fn progress_bar(cli: &Cli) -> ProgressBar {
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
        let masked = crate::vars::mask(&String::from_utf8_lossy(buf));
        self.0.suspend(|| std::io::stderr().write_all(masked.as_bytes()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The `--log` filter, with Ballista's own logs (through the `log` crate)
/// kept to warnings unless asked for by name or the command is a cluster
/// node: a run's client, or its in-process cluster, would otherwise log
/// every job and task.
fn filter_of(cli: &Cli) -> String {
    let node = matches!(cli.command, Command::Scheduler(_) | Command::Executor(_));
    if node || cli.log.contains("ballista") {
        return cli.log.clone();
    }
    format!(
        "{},ballista=warn,ballista_core=warn,ballista_scheduler=warn,ballista_executor=warn",
        cli.log
    )
}

/// Installs the global subscriber (once; later calls do nothing).
pub fn init(cli: &Cli, progress: &ProgressBar) {
    init_with(cli.log_format, &filter_of(cli), progress);
}

/// Installs the global subscriber for `format` and the level filter `log`
/// (once; later calls do nothing).
fn init_with(format: LogFormat, log: &str, progress: &ProgressBar) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(log).unwrap_or_else(|_| EnvFilter::new("info"));
    let pb = progress.clone();
    let writer = move || LogWriter(pb.clone());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
}

/// Whether the command line asks for JSON logs (`--log-format json` or
/// `--log-format=json`, the last one winning, options only: not after
/// `--`). Read from the raw arguments so that an error clap finds while
/// parsing them is JSON too.
pub fn json_requested(args: impl IntoIterator<Item = OsString>) -> bool {
    let mut json = false;
    let mut args = args.into_iter().skip(1);
    while let Some(a) = args.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--log-format" {
            match args.next() {
                Some(v) => json = v == "json",
                None => break,
            }
        } else if let Some(v) = a.strip_prefix("--log-format=") {
            json = v == "json";
        }
    }
    json
}

/// Reports a command-line error clap found: its own text in text mode, one
/// JSON `ERROR` event with `exit_code` 2 in JSON mode (`message` is the
/// error, `detail` clap's whole text with the usage line and tips).
pub fn usage_error(e: &clap::Error, json: bool) {
    if !json {
        let _ = e.print();
        return;
    }
    init_with(LogFormat::Json, "info", &ProgressBar::hidden());
    let text = e.render().to_string();
    let text = text.trim();
    let first = text.split("\n\n").next().unwrap_or(text);
    let message = first.strip_prefix("error: ").unwrap_or(first);
    tracing::error!(exit_code = 2, detail = text, "{message}");
}

/// The id of the run this process is doing, for the panic hook.
static RUN_ID: OnceLock<String> = OnceLock::new();

/// Records the run id (once per process), so that a panic names its run.
pub fn set_run_id(id: &str) {
    let _ = RUN_ID.set(id.to_string());
}

/// Replaces Rust's panic message (plain text on stderr) with an `ERROR`
/// event through the subscriber: in JSON mode it is one JSON object like
/// every other line, naming the run id, the place and, with
/// `RUST_BACKTRACE=1`, the backtrace. The panic is then caught by the run
/// (`runner::exec`) or by `main.rs` and reported as exit 1.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = crate::error::panic_message(info.payload());
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace =
            (backtrace.status() == std::backtrace::BacktraceStatus::Captured).then(|| backtrace.to_string());
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        tracing::error!(
            run_id = RUN_ID.get().map(String::as_str),
            location = location.as_deref(),
            thread = thread.as_str(),
            backtrace = backtrace.as_deref(),
            "panicked: {message}"
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::json_requested;

    fn args(a: &[&str]) -> Vec<std::ffi::OsString> {
        std::iter::once("crmflow")
            .chain(a.iter().copied())
            .map(Into::into)
            .collect()
    }

    #[test]
    fn json_is_found_before_parsing() {
        assert!(json_requested(args(&["--log-format", "json", "run", "--bogus"])));
        assert!(json_requested(args(&["run", "p.yaml", "--log-format=json"])));
        assert!(!json_requested(args(&[
            "run",
            "--log-format",
            "json",
            "--log-format",
            "text"
        ])));
        assert!(!json_requested(args(&["run", "--", "--log-format", "json"])));
        assert!(!json_requested(args(&["run", "--log-format"])));
        assert!(!json_requested(args(&["run", "p.yaml"])));
    }
}
