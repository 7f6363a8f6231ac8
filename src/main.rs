//! The `crmflow` binary: parse the command line, call the library, and map
//! the outcome to an exit code (0 ok, 1 run failed, 2 invalid pipeline or
//! command line, 130/143 interrupted). What each command does is
//! `crmflow::commands`.

use std::process::ExitCode;

use clap::Parser;
use crmflow::cli::{Cli, LogFormat};

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
    let progress = crmflow::logging::progress_bar(&cli);
    crmflow::logging::init(&cli, &progress);
    let json_logs = cli.log_format == LogFormat::Json;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("crmflow: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(crmflow::commands::dispatch(cli, progress));
    // An interrupted step may still be computing on a worker: do not wait
    // for it (nothing of it is published).
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            let message = crmflow::vars::mask(&e.render());
            if json_logs {
                tracing::error!(exit_code = code, "{message}");
            } else {
                eprintln!("crmflow: error: {message}");
            }
            ExitCode::from(code)
        }
    }
}
