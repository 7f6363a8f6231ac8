//! crmflow: YAML-declared batch pipelines for CRM analytics on Apache
//! DataFusion.
//!
//! The flow of a run, module by module:
//!
//! - [`cli`]: the command line (clap), parsed in `main.rs`.
//! - [`config`]: the pipeline file as written ([`config::load`]), its vars
//!   ([`config::vars`]) and its resolution into a checked, ordered
//!   [`runner::plan::Plan`] ([`config::validate`]). Nothing after it reads YAML.
//! - [`storage`]: locations as URLs and the object stores behind them.
//! - [`sources`]: Parquet files and directories registered as tables.
//! - [`transform`]: SQL steps (vars bound as literals, references found by
//!   DataFusion's parser).
//! - [`stages`]: the analytics step kinds, `clv`, `segment` and `predict`.
//! - [`checks`]: data checks on sources and sinks.
//! - [`sinks`]: Parquet written to staging, checked, then published.
//! - [`runner`]: the executor; [`generate`]: synthetic CRM data.
//! - [`error`]: the error type and exit codes.

pub mod checks;
pub mod cli;
pub mod config;
pub mod error;
pub mod generate;
pub mod hash;
pub mod runner;
pub mod sinks;
pub mod sources;
pub mod stages;
pub mod storage;
pub mod transform;

pub use error::{Error, Result};
