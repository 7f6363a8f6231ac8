//! The library's one error type, the problems of an invalid pipeline, and
//! the mapping to process exit codes.
//!
//! Every failure a user can see is a variant of [`Error`], carrying the
//! thing it is about (the pipeline file, source, step, sink) as fields and
//! the underlying failure as its `source` ([`Cause`]), so a caller can walk
//! the chain. [`render`] prints the chain on one line, the way `main.rs`
//! shows it. An invalid pipeline holds every [`Problem`] found, each about
//! one subject (`step "x"`, `sink "y"`, `engine`, ...) with the YAML line
//! where the parser gives one; [`Problem`]'s `Display` is the one place a
//! problem is rendered. Exit codes ([`Error::exit_code`]): 0 success, 1 the
//! run failed (a caught panic included: never Rust's 101), 2 the pipeline or
//! command line is invalid (an unwritable `--run-results` included), 130/143
//! interrupted by SIGINT/SIGTERM. Never 99 (Airflow reads it as "skip").

use std::fmt;

/// One problem of an invalid pipeline: what it is about, where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The thing it is about, as shown: `step "scores"`, `sink "features"`,
    /// `source "tx"`, `engine`, `--var as_of`; empty for a problem of the
    /// whole file (a YAML syntax error, a cycle).
    pub subject: String,
    /// The line of the subject in the pipeline file, when known.
    pub line: Option<u64>,
    pub message: String,
}

impl Problem {
    /// A problem about `subject`.
    pub fn new(subject: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            subject: subject.into(),
            line: None,
            message: message.into(),
        }
    }

    /// A problem of the whole file.
    pub fn general(message: impl Into<String>) -> Self {
        Problem::new("", message)
    }

    /// A problem about step `name`.
    pub fn step(name: &str, message: impl Into<String>) -> Self {
        Problem::new(format!("step \"{name}\""), message)
    }

    /// A problem about the sink of table `table`.
    pub fn sink(table: &str, message: impl Into<String>) -> Self {
        Problem::new(format!("sink \"{table}\""), message)
    }

    /// A problem about source `name`.
    pub fn source(name: &str, message: impl Into<String>) -> Self {
        Problem::new(format!("source \"{name}\""), message)
    }

    /// The same problem, placed at `line` (0 means unknown).
    pub fn at(mut self, line: Option<u64>) -> Self {
        self.line = line.filter(|l| *l > 0);
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.subject.is_empty(), self.line) {
            (true, _) => f.write_str(&self.message),
            (false, Some(l)) => write!(f, "{} (line {l}): {}", self.subject, self.message),
            (false, None) => write!(f, "{}: {}", self.subject, self.message),
        }
    }
}

/// What went wrong underneath an [`Error`]: a message of crmflow's own, or
/// the library error itself (kept, not flattened, so its chain survives).
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error("{0}")]
    Message(String),
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error(transparent)]
    ObjectStore(#[from] object_store::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<String> for Cause {
    fn from(s: String) -> Self {
        Cause::Message(s)
    }
}

impl From<&str> for Cause {
    fn from(s: &str) -> Self {
        Cause::Message(s.to_string())
    }
}

/// A crmflow failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline file (or the command line) is invalid; nothing was read or
    /// written. Holds every problem found, not only the first.
    #[error("invalid pipeline {file}: {}", Problems(.problems))]
    Invalid {
        /// The pipeline file, as given on the command line.
        file: String,
        problems: Vec<Problem>,
    },

    /// A command-line usage error found after clap's own parsing.
    #[error("{0}")]
    Usage(String),

    /// A source could not be read.
    #[error("source \"{source_name}\" ({url})")]
    Source {
        source_name: String,
        url: String,
        #[source]
        cause: Cause,
    },

    /// A step failed while running.
    #[error("step \"{step}\"")]
    Step {
        step: String,
        #[source]
        cause: Cause,
    },

    /// A sink could not be written or published.
    #[error("sink \"{sink}\" ({url})")]
    Sink {
        sink: String,
        url: String,
        #[source]
        cause: Cause,
    },

    /// One or more `error` checks failed; nothing was published.
    #[error("{}", Lines(.failures))]
    Checks { failures: Vec<String> },

    /// Several steps (and possibly checks) failed in one run, each with its
    /// message; nothing was published.
    #[error("{}", Lines(.failures))]
    Failures { failures: Vec<String> },

    /// Object storage could not be configured or reached.
    #[error("storage {url}")]
    Storage {
        url: String,
        #[source]
        cause: Cause,
    },

    /// `crmflow generate` failed.
    #[error("generate")]
    Generate(#[source] Cause),

    /// Publishing stopped part way through the commit phase: some sinks
    /// are published, the others keep their previous output.
    #[error("{}", publish_message(.published, .not_published))]
    Publish {
        published: Vec<String>,
        not_published: Vec<String>,
        #[source]
        cause: Box<Error>,
    },

    /// A file the command was asked to write (e.g. `--run-results`).
    #[error("writing {path}")]
    Output {
        path: String,
        #[source]
        cause: Cause,
    },

    /// The `--run-results` file cannot be written: found before the run
    /// starts, so nothing was read or written (exit 2).
    #[error("--run-results {path}: cannot be written")]
    RunResults {
        path: String,
        #[source]
        cause: Cause,
    },

    /// The code panicked (a bug): caught, reported as a failed run; nothing
    /// staged was published.
    #[error("panicked: {message}")]
    Panic { message: String },

    /// The engine could not be set up.
    #[error("engine")]
    Engine(#[source] Cause),

    /// Values of a backfill failed (each value's publish is its own: the
    /// values reported successful are published, a failed one is not).
    #[error("{message}")]
    Backfill { message: String, code: u8 },

    /// The run was interrupted by a signal; nothing half-written was published.
    #[error("interrupted by {signal}; nothing was published")]
    Interrupted { signal: &'static str },
}

impl Error {
    /// The process exit code for this error (see the module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Invalid { .. } | Error::Usage(_) | Error::RunResults { .. } => 2,
            Error::Backfill { code, .. } => *code,
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

    /// A step failure.
    pub fn step(step: &str, cause: impl Into<Cause>) -> Self {
        Error::Step {
            step: step.to_string(),
            cause: cause.into(),
        }
    }

    /// A sink failure.
    pub fn sink(sink: &str, url: impl fmt::Display, cause: impl Into<Cause>) -> Self {
        Error::Sink {
            sink: sink.to_string(),
            url: url.to_string(),
            cause: cause.into(),
        }
    }

    /// A source failure.
    pub fn source(name: &str, url: impl fmt::Display, cause: impl Into<Cause>) -> Self {
        Error::Source {
            source_name: name.to_string(),
            url: url.to_string(),
            cause: cause.into(),
        }
    }

    /// An invalid pipeline.
    pub fn invalid(file: impl fmt::Display, problems: Vec<Problem>) -> Self {
        Error::Invalid {
            file: file.to_string(),
            problems,
        }
    }

    /// The whole chain on one line ([`render`]).
    pub fn render(&self) -> String {
        render(self)
    }
}

fn publish_message(published: &[String], not_published: &[String]) -> String {
    let list = |v: &[String]| v.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    if published.is_empty() {
        format!(
            "publishing failed; nothing was published (not published: {}; previous outputs are untouched)",
            list(not_published)
        )
    } else {
        format!(
            "publishing failed part way: published {}; not published {} (their previous outputs are untouched; rerun the pipeline to publish them)",
            list(published),
            list(not_published)
        )
    }
}

/// An error and its causes on one line, `outer: inner: innermost`. Library
/// errors often repeat their cause in their own message (DataFusion's
/// `Arrow error: X` has the source `X`); a cause already shown is not
/// repeated.
pub fn render(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() && !out.contains(text.trim()) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// The message of a panic's payload (`panic!` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Renders problems, one per line (a single one stays on one line).
struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(Problem::to_string).collect();
        Lines(&lines).fmt(f)
    }
}

/// Renders messages, one per line (a single one stays on one line).
struct Lines<'a>(&'a [String]);

impl fmt::Display for Lines<'_> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_render_with_subject_and_line() {
        assert_eq!(
            Problem::step("scores", "table \"x\" is missing")
                .at(Some(7))
                .to_string(),
            "step \"scores\" (line 7): table \"x\" is missing"
        );
        assert_eq!(Problem::sink("f", "bad").at(Some(0)).to_string(), "sink \"f\": bad");
        assert_eq!(Problem::general("steps form a cycle").to_string(), "steps form a cycle");
        let e = Error::invalid("p.yaml", vec![Problem::new("engine", "a"), Problem::general("b")]);
        assert_eq!(
            e.to_string(),
            "invalid pipeline p.yaml: 2 problems:\n  - engine: a\n  - b"
        );
    }

    #[test]
    fn the_chain_is_rendered_once() {
        let df = datafusion::error::DataFusionError::ArrowError(
            Box::new(datafusion::arrow::error::ArrowError::ComputeError("overflow".into())),
            None,
        );
        let e = Error::step("features", df);
        assert_eq!(e.render(), "step \"features\": Arrow error: Compute error: overflow");
        assert_eq!(Error::step("x", "boom").render(), "step \"x\": boom");
        // The cause is kept as the error's source.
        assert!(std::error::Error::source(&e).is_some());
    }
}
