//! Logs and progress on stderr: `tracing` events as text or one JSON object
//! per line (`--log-format`), filtered by `--log`/`CRMFLOW_LOG`, written
//! through the progress bar (shown only on a terminal, for `run`) so the two
//! never garble each other; every line is masked for secrets.

use std::io::{IsTerminal, Write};

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
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter_of(cli)).unwrap_or_else(|_| EnvFilter::new("info"));
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
