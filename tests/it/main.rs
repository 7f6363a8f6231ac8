//! Integration tests: one binary, a module per area. CLI tests run the real
//! `crmflow` binary and assert exit codes and messages word for word.

mod ballista;
mod bench_job;
mod check_kinds;
mod checks;
mod cli_errors;
mod commands;
mod common;
mod faults;
mod features;
mod generate;
mod ops;
mod outputs;
mod predict_sample;
mod publish;
mod s3;
mod sources;
mod stages;
