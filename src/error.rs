//! The library's one error type and its mapping to process exit codes.
//!
//! Every failure a user can see is a variant here, carrying the thing it is
//! about (the pipeline file, source, step, sink or check) as context fields,
//! so that messages name what to fix. `main.rs` prints the error with its
//! chain of causes and exits with [`Error::exit_code`]:
//! 0 success, 1 the run failed, 2 the pipeline or command line is invalid,
//! 130/143 interrupted by SIGINT/SIGTERM. Never 99 (Airflow reads it as "skip").

use std::fmt;

/// A crmflow failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline file (or the command line) is invalid; nothing was read or
    /// written. Holds every problem found, not only the first.
    #[error("invalid pipeline {file}: {}", Problems(.problems))]
    Invalid {
        /// The pipeline file, as given on the command line.
        file: String,
        /// One line per problem, each starting with the thing it is about.
        problems: Vec<String>,
    },

    /// A command-line usage error found after clap's own parsing.
    #[error("{0}")]
    Usage(String),

    /// A source could not be read.
    #[error("source \"{source_name}\" ({url}): {message}")]
    Source {
        source_name: String,
        url: String,
        message: String,
    },

    /// A step failed while running.
    #[error("step \"{step}\": {message}")]
    Step { step: String, message: String },

    /// A sink could not be written or published.
    #[error("sink \"{sink}\" ({url}): {message}")]
    Sink { sink: String, url: String, message: String },

    /// One or more `error` checks failed; nothing was published.
    #[error("{}", Problems(.failures))]
    Checks { failures: Vec<String> },

    /// Object storage could not be configured or reached.
    #[error("storage {url}: {message}")]
    Storage { url: String, message: String },

    /// `crmflow generate` failed.
    #[error("generate: {0}")]
    Generate(String),

    /// The run was interrupted by a signal; nothing half-written was published.
    #[error("interrupted by {signal}; nothing was published")]
    Interrupted { signal: &'static str },
}

impl Error {
    /// The process exit code for this error (see the module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Invalid { .. } | Error::Usage(_) => 2,
            Error::Interrupted { signal } => {
                if *signal == "SIGTERM" {
                    143
                } else {
                    130
                }
            }
            _ => 1,
        }
    }

    /// A step failure from anything displayable (DataFusion, a fit, ...).
    pub fn step(step: &str, message: impl fmt::Display) -> Self {
        Error::Step {
            step: step.to_string(),
            message: message.to_string(),
        }
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Renders a list of problems, one per line (a single one stays on one line).
struct Problems<'a>(&'a [String]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => f.write_str(one),
            many => {
                write!(f, "{} problems:", many.len())?;
                for p in many {
                    write!(f, "\n  - {}", p.replace('\n', "\n    "))?;
                }
                Ok(())
            }
        }
    }
}
