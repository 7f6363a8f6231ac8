//! The `crmflow` binary: parse the command line, call the library, and map
//! the outcome to an exit code (0 ok, 1 run failed, 2 invalid pipeline or
//! command line, 130/143 interrupted). What each command does is
//! `crmflow::commands`. A panic is logged (with the run id) and exits 1,
//! never Rust's 101; with `--log-format json` every error, clap's included,
//! is one JSON object on stderr.

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;

use clap::Parser;
use crmflow::cli::{Cli, LogFormat};

fn main() -> ExitCode {
    let json_requested = crmflow::logging::json_requested(std::env::args_os());
    fewer_malloc_arenas();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print and succeed; usage errors exit 2.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            crmflow::logging::usage_error(&e, json_requested);
            return ExitCode::from(2);
        }
    };
    let progress = crmflow::logging::progress_bar(&cli);
    crmflow::logging::init(&cli, &progress);
    crmflow::logging::install_panic_hook();
    let json_logs = cli.log_format == LogFormat::Json;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            report(&format!("cannot start the async runtime: {e}"), 1, json_logs);
            return ExitCode::from(1);
        }
    };
    // A run catches its own panics (so it still cleans up and writes its
    // summary); this catches the rest. The hook has logged it already.
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(crmflow::commands::dispatch(cli, progress))
    }))
    .unwrap_or_else(|payload| {
        Err(crmflow::Error::Panic {
            message: crmflow::error::panic_message(payload.as_ref()),
        })
    });
    // An interrupted step may still be computing on a worker: do not wait
    // for it (nothing of it is published).
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            report(&crmflow::vars::mask(&e.render()), code, json_logs);
            ExitCode::from(code)
        }
    }
}

/// The error line on stderr: an `ERROR` event with `exit_code` in JSON
/// mode, `crmflow: error: ...` otherwise.
fn report(message: &str, code: u8, json_logs: bool) {
    if json_logs {
        tracing::error!(exit_code = code, "{message}");
    } else {
        eprintln!("crmflow: error: {message}");
    }
}
/// glibc gives each thread that allocates its own arena (up to 8 per core);
/// the arrays of a query freed on one thread stay mapped in its arena, and
/// the peak RSS of a run grows by a fifth. One arena per core keeps it near
/// the memory actually live; fewer serialize the engine's threads on the
/// arena locks (the demo at a million customers on 2 cores: 19.9 s with two
/// arenas, 22.6 s with one, the same peak RSS; mimalloc instead: 19.1 s and
/// half as much memory again). Unless `MALLOC_ARENA_MAX` says otherwise.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fewer_malloc_arenas() {
    unsafe extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    const M_ARENA_MAX: std::ffi::c_int = -8;
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let arenas = cores.clamp(1, 64) as std::ffi::c_int;
    // SAFETY: mallopt only sets an allocator parameter; it is called before
    // any other thread exists.
    unsafe {
        mallopt(M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fewer_malloc_arenas() {}
