//! Integration tests: one binary, a module per area. CLI tests run the real
//! `crmflow` binary and assert exit codes and messages word for word.

mod bench_job;
mod cli_errors;
mod common;
mod features;
mod generate;
mod predict_sample;
mod publish;
mod s3;
mod sources;
mod stages;
