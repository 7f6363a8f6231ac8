//! `crmflow generate`: deterministic synthetic CRM data (customers,
//! transactions, interactions) written as Parquet through `object_store`.
//!
//! This is the streaming Rust counterpart of `shared/bench/gen.py` and tells
//! the same story:
//!
//! * **Signups** grow over the window `[start, end)` with density ∝ e^{0.6x}
//!   (x = fraction of the window). Customer ids `1..=N` follow signup order:
//!   customer i takes the stratified quantile u_i = (i − 1 + U_i)/N, so any
//!   chunk of ids can be generated on its own and signup days are
//!   non-decreasing in id.
//! * **Purchases** follow BG/NBD "buy till you die" (Fader, Hardie & Lee
//!   2005): the first purchase is at a random time on the signup day; while
//!   alive the customer buys as a Poisson process with rate
//!   λ ~ Gamma(1.5, scale 10) per year; after every purchase (the first one
//!   included, as in gen.py) it drops out for good with probability
//!   p ~ Beta(3, 50). Nothing happens at or after `end`. Spend: per-customer
//!   mean ~ Gamma(3, 20)·(income/52000)^0.3, each amount ~ Gamma(4, mean/4)
//!   rounded to cents and ≥ 0.01; quantity 1 + Poisson(0.6); category
//!   Zipf(0.8) over 15 categories.
//! * **Interactions**: rate ρ ~ Gamma(2, 6.7)·(λ/15)^0.3 per year, from the
//!   first purchase until `end` (still alive) or until last purchase +
//!   Exp(mean 60 days) (dropped out). Kinds web_visit / email_open /
//!   email_click / support_ticket / app_session with probabilities
//!   0.40 / 0.22 / 0.10 / 0.05 / 0.23 and log-normal durations.
//!   **Deviation from gen.py (deliberate signal):** for customers who drop
//!   out, the support_ticket weight is multiplied by
//!   [`DROPOUT_TICKET_FACTOR`] (2.0) before renormalising, i.e. about 9.5 %
//!   of their interactions are tickets instead of 5 %, so that a
//!   satisfaction score built from tickets vs. engagement carries a modest
//!   churn signal.
//!
//! About 10 transactions and 10 interactions per customer come out.
//!
//! Streaming and determinism: customers are cut into chunks of
//! [`CHUNK_CUSTOMERS`]; chunk k has its own Xoshiro256++ generator seeded
//! from (seed, k) and becomes `part-<k:05>.parquet` in each of
//! `customers/`, `transactions/` and `interactions/`. Chunks are generated
//! on blocking threads (at most [`GEN_AHEAD`] ahead of the writer) and
//! written in chunk order, which assigns the global `transaction_id` and
//! `interaction_id` counters (from 1). Rows within a chunk are ordered by
//! (customer_id, timestamp). Same N and seed give byte-identical files
//! (on the same platform: the samplers use the system `ln`/`exp`),
//! whatever the number of threads.
//!
//! Layout: this file holds the public API and the driver loop; `schema`
//! validates the options and defines the three Arrow schemas,
//! `model` is the simulation (distributions, per-chunk seeding), `batch`
//! holds a generated chunk and builds record batches from it, and `io`
//! writes Parquet through `object_store`.

use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::error::ArrowError;
use datafusion::parquet::errors::ParquetError;
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path;

mod batch;
mod io;
mod model;
mod schema;
#[cfg(test)]
mod tests;

pub use schema::{customers_schema, interactions_schema, transactions_schema};

use io::{delete_parquet_under, table_props, write_table};
use model::Model;

/// Customers per chunk, i.e. per `part-K.parquet` of each table. Part of the
/// output's definition: changing it changes the data for a given seed.
pub const CHUNK_CUSTOMERS: u64 = 100_000;
/// Rows per Parquet row group.
pub const ROW_GROUP_ROWS: usize = 131_072;
/// Chunks generated ahead of the one being written.
pub const GEN_AHEAD: usize = 2;
/// Default seed (the one gen.py uses).
pub const DEFAULT_SEED: u64 = 20_261_124;
/// Multiplier of the support_ticket share for customers who drop out.
pub const DROPOUT_TICKET_FACTOR: f64 = 2.0;

/// The three table directories under the output prefix.
pub const TABLES: [&str; 3] = ["customers", "transactions", "interactions"];

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Number of customers (ids 1..=customers).
    pub customers: u64,
    /// Seed; the same customers and seed give byte-identical output.
    pub seed: u64,
    /// First day of the observation window.
    pub start: NaiveDate,
    /// End of the window, exclusive.
    pub end: NaiveDate,
}

impl GenerateOptions {
    /// Options with the default window [2023-11-25, 2026-11-25).
    pub fn new(customers: u64, seed: u64) -> Self {
        GenerateOptions {
            customers,
            seed,
            // Constant dates that exist: `from_ymd_opt` cannot return None.
            start: NaiveDate::from_ymd_opt(2023, 11, 25).expect("valid date"),
            end: NaiveDate::from_ymd_opt(2026, 11, 25).expect("valid date"),
        }
    }
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions::new(10_000, DEFAULT_SEED)
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GenerateSummary {
    /// Rows written to `customers/`.
    pub customers: u64,
    /// Rows written to `transactions/`.
    pub transactions: u64,
    /// Rows written to `interactions/`.
    pub interactions: u64,
    /// Every file written (store path) with its row count, sorted by path.
    pub files: Vec<(String, u64)>,
}

/// Why generation failed; store errors name the object path.
#[derive(thiserror::Error, Debug)]
pub enum GenerateError {
    #[error("invalid generate options: {0}")]
    InvalidOptions(String),
    #[error("cannot list {path}: {source}")]
    List {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("cannot delete {path}: {source}")]
    Delete {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: ParquetError,
    },
    #[error("cannot build a record batch for {path}: {source}")]
    Arrow {
        path: String,
        #[source]
        source: ArrowError,
    },
    #[error("generator task failed: {0}")]
    Task(String),
}

/// Generates the three tables under `prefix` (see the module docs).
pub async fn generate(
    store: Arc<dyn ObjectStore>,
    prefix: &Path,
    opts: &GenerateOptions,
) -> Result<GenerateSummary, GenerateError> {
    generate_with_progress(store, prefix, opts, &|_| {}).await
}

/// [`generate`], calling `progress` with the number of customers written so
/// far after each chunk.
pub async fn generate_with_progress(
    store: Arc<dyn ObjectStore>,
    prefix: &Path,
    opts: &GenerateOptions,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<GenerateSummary, GenerateError> {
    run(store, prefix, opts, CHUNK_CUSTOMERS, progress).await
}

/// The driver: [`generate_with_progress`] with chunks of `chunk_customers`
/// (tests use small chunks to exercise several of them; the output for a
/// seed depends on it).
pub(super) async fn run(
    store: Arc<dyn ObjectStore>,
    prefix: &Path,
    opts: &GenerateOptions,
    chunk_customers: u64,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<GenerateSummary, GenerateError> {
    let model = Arc::new(Model::new(opts, chunk_customers)?);
    let n_chunks = opts.customers.div_ceil(chunk_customers);
    tracing::info!(
        customers = opts.customers,
        seed = opts.seed,
        chunks = n_chunks,
        prefix = %prefix,
        "generating synthetic CRM data"
    );

    let dirs: Vec<Path> = TABLES.iter().map(|t| prefix.clone().join(*t)).collect();
    for dir in &dirs {
        delete_parquet_under(store.as_ref(), dir).await?;
    }

    let props = table_props();

    let mut chunks = futures::stream::iter(0..n_chunks)
        .map(|k| {
            let model = Arc::clone(&model);
            tokio::task::spawn_blocking(move || model.chunk(k))
        })
        .buffered(GEN_AHEAD);

    let mut summary = GenerateSummary::default();
    let (mut tx_base, mut ix_base) = (0u64, 0u64);
    while let Some(chunk) = chunks.next().await {
        let chunk = Arc::new(chunk.map_err(|e| GenerateError::Task(e.to_string()))?);
        let file = format!("part-{:05}.parquet", chunk.index);
        let paths: Vec<Path> = dirs.iter().map(|d| d.clone().join(file.as_str())).collect();
        let bases = [0, tx_base, ix_base];
        let mut handles = Vec::with_capacity(3);
        for t in 0..3 {
            let (store, path, props, chunk) = (
                Arc::clone(&store),
                paths[t].clone(),
                props[t].clone(),
                Arc::clone(&chunk),
            );
            let base = bases[t];
            handles.push(tokio::spawn(async move {
                write_table(store, path, props, &chunk, t, base).await
            }));
        }
        // Wait for all three before reporting an error, so that no writer
        // is left running behind the caller's back.
        let mut results = Vec::with_capacity(3);
        for h in handles {
            results.push(h.await);
        }
        let mut rows = [0u64; 3];
        for (t, r) in results.into_iter().enumerate() {
            rows[t] = r.map_err(|e| GenerateError::Task(e.to_string()))??;
            summary.files.push((paths[t].to_string(), rows[t]));
        }
        summary.customers += rows[0];
        summary.transactions += rows[1];
        summary.interactions += rows[2];
        tx_base += rows[1];
        ix_base += rows[2];
        tracing::debug!(
            chunk = chunk.index,
            customers = rows[0],
            transactions = rows[1],
            interactions = rows[2],
            "chunk written"
        );
        drop(chunk);
        progress(summary.customers);
    }
    summary.files.sort();
    tracing::debug!(
        customers = summary.customers,
        transactions = summary.transactions,
        interactions = summary.interactions,
        files = summary.files.len(),
        "generated"
    );
    Ok(summary)
}
