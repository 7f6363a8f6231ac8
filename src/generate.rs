//! TEMPORARY interface placeholder: replaced by the real generator module.
#![allow(dead_code, unused_variables)]
pub struct GenerateOptions { pub customers: u64, pub seed: u64, pub start: chrono::NaiveDate, pub end: chrono::NaiveDate }
pub struct GenerateSummary { pub customers: u64, pub transactions: u64, pub interactions: u64, pub files: Vec<(String, u64)> }
#[derive(thiserror::Error, Debug)]
pub enum GenerateError { #[error("not built")] NotBuilt }
pub async fn generate(store: std::sync::Arc<dyn object_store::ObjectStore>, prefix: &object_store::path::Path, opts: &GenerateOptions) -> Result<GenerateSummary, GenerateError> { Err(GenerateError::NotBuilt) }
