//! Running a pipeline: [`resolve`] turns the file as written into a
//! [`plan::Plan`] (resolved, ordered, defaults filled), [`check`] plans every
//! step against the real schemas without reading rows, [`exec`] registers
//! sources, runs steps and publishes sinks, and [`report`] renders what
//! happened.

pub mod backfill;
pub mod check;
pub mod exec;
pub mod gc;
pub mod html;
pub mod plan;
pub mod quarantine;
pub mod report;
pub mod resolve;
pub mod select;
pub mod steps;
pub mod story;
pub mod svg;

/// A run id, `20261125T080000Z-3f2a9c1b`: sortable, unique enough per sink.
pub fn run_id() -> String {
    let now = chrono::Utc::now();
    let noise = crate::hash::splitmix64(u64::from(std::process::id()) ^ now.timestamp_nanos_opt().unwrap_or(0) as u64);
    format!("{}-{:08x}", now.format("%Y%m%dT%H%M%SZ"), noise as u32)
}
