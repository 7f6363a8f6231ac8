//! Integration tests: one binary, a module per area. CLI tests run the real
//! `crmflow` binary and assert exit codes and messages word for word.

mod azure;
mod ballista;
mod bench_job;
mod check_kinds;
mod checks;
mod cli_errors;
mod clv_models;
mod commands;
mod common;
mod delta;
mod faults;
mod features;
mod gcs;
mod generate;
mod memory;
mod ops;
mod outputs;
mod predict_sample;
mod publish;
mod quarantine;
mod report;
mod rfm;
mod run_control;
mod s3;
mod sources;
mod stages;
