//! crmflow: YAML-declared batch pipelines for CRM analytics on Apache
//! DataFusion.
//!
//! Layers, each importing only the ones below it:
//!
//! 1. [`commands`] (what each subcommand does; `main.rs` only parses and
//!    maps exit codes), [`cli`] (clap), [`logging`].
//! 2. [`runner`]: resolution of the file into a [`runner::plan::Plan`]
//!    ([`runner::resolve`]), the planning pass ([`runner::check`]), the run
//!    ([`runner::exec`]) and its reports ([`runner::report`]).
//! 3. [`config`]: the pipeline file as written ([`config::load`]).
//! 4. [`stages`] (the analytics step kinds, dispatched in one place),
//!    [`transform`] (SQL steps), [`sources`], [`sinks`], [`checks`],
//!    [`generate`] (synthetic data).
//! 5. [`engine`] (the execution context and everything tied to it),
//!    [`storage`] (locations and object stores), and the small shared
//!    modules [`vars`], [`hash`], [`error`], [`failpoint`].

pub mod checks;
pub mod cli;
pub mod commands;
pub mod config;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod generate;
pub mod hash;
pub mod logging;
pub mod runner;
pub mod sinks;
pub mod sources;
pub mod stages;
pub mod storage;
pub mod transform;
pub mod vars;

pub use error::{Error, Result};
