//! Running a pipeline: [`plan`] is the resolved, ordered pipeline;
//! [`exec`] registers sources, runs steps and publishes sinks.

pub mod exec;
pub mod plan;
