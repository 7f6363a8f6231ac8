//! The session configuration: where crmflow departs from DataFusion's
//! defaults (batch size, spill reservations, join kind, optimizer rules),
//! each pinned by a unit test in the parent module.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::prelude::SessionConfig;

use super::{EngineKind, Settings, ballista};

/// The memory limit per partition from which batches are 32K rows.
const LARGE_BATCH_LIMIT_PER_PARTITION: u64 = 512 << 20;

/// The session config of `settings` (for Ballista: Ballista's, carrying the
/// storage options to every node).
pub(super) fn session_config(settings: &Settings, storage: &BTreeMap<String, String>) -> SessionConfig {
    let mut config = match settings.kind {
        EngineKind::Local => SessionConfig::new()
            .with_information_schema(false)
            .with_create_default_catalog_and_schema(true),
        EngineKind::Ballista => {
            ballista::base_config().with_option_extension(ballista::StorageOptions(storage.clone()))
        }
    };
    if let Some(n) = settings.target_partitions {
        config = config.with_target_partitions(n);
    }
    // Batches of 32K rows, not DataFusion's 8K: fewer, larger batches
    // through the aggregates and joins of a nightly job (the SPEC job at a
    // million customers 0.97 of the time, the demo 0.91, the same peak RSS;
    // the demo at 10M under a 2 GiB limit 136.4 s against 150.8 s; README
    // "Performance"). A multiple of the sinks' row group (131,072). Under a
    // limit of less than 512 MiB a partition DataFusion's 8K stays: every
    // operator holds a few batches per partition outside what spilling can
    // free, which larger batches would take from a small limit.
    let parts = config.target_partitions().max(1) as u64;
    if settings
        .memory_limit
        .is_none_or(|limit| limit >= parts * LARGE_BATCH_LIMIT_PER_PARTITION)
    {
        config = config.with_batch_size(32 * 1024);
    }
    if let Some(limit) = settings.memory_limit {
        // Each sort partition reserves this much up front to merge its
        // spill files (DataFusion's default, 10 MiB, is more than a small
        // limit holds): an eighth of a partition's share, at most 10 MiB.
        let reserve = (limit / (8 * parts)).min(10 * 1024 * 1024);
        config.options_mut().execution.sort_spill_reservation_bytes = reserve as usize;
        // Hash joins cannot spill: their build sides (a whole table per
        // join on one partition's share) are what exhausted a 2 GiB limit on
        // the demo at 10M customers. Sort-merge joins sort their inputs,
        // and sorts spill.
        config.options_mut().optimizer.prefer_hash_join = false;
    }
    config
}

/// DataFusion's logical optimizer rules that crmflow leaves out: the
/// pushdown of struct field access towards the scans. It moves
/// `get_field(score, 'clv')` below the projection that computes `score`,
/// so a scoring function returning a struct ran once per field read (three
/// times in the demo's customer_scores, 25 s of its 1M-row sink).
pub const SKIPPED_OPTIMIZER_RULES: [&str; 2] = ["extract_leaf_expressions", "push_down_leaf_projections"];

/// `rules` without [`SKIPPED_OPTIMIZER_RULES`], in their order.
pub fn optimizer_rules(
    rules: Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>>,
) -> Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>> {
    rules
        .into_iter()
        .filter(|r| !SKIPPED_OPTIMIZER_RULES.contains(&r.name()))
        .collect()
}
