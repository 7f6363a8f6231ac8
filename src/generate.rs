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

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::{Compression, Encoding, ZstdLevel};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;

use chrono::NaiveDate;
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, Exp1, Gamma, LogNormal, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::hash::splitmix64;

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

const US_PER_DAY: i64 = 86_400_000_000;
const US_PER_YEAR: f64 = 365.25 * US_PER_DAY as f64;

/// Signup growth: density ∝ exp(SIGNUP_GROWTH · x) over the window.
const SIGNUP_GROWTH: f64 = 0.6;

const COUNTRIES: [&str; 20] = [
    "US", "GB", "DE", "FR", "CA", "AU", "NL", "SE", "ES", "IT", "BR", "MX", "JP", "IN", "PL", "IE", "BE", "CH", "AT",
    "DK",
];
const GENDERS: [&str; 3] = ["M", "F", "U"];
const GENDER_P: [f64; 3] = [0.48, 0.48, 0.04];
const CHANNELS: [&str; 7] = [
    "organic",
    "paid_search",
    "social",
    "email",
    "referral",
    "affiliate",
    "display",
];
const CHANNEL_P: [f64; 7] = [0.30, 0.22, 0.18, 0.10, 0.08, 0.07, 0.05];
/// Median acquisition cost per channel.
const CHANNEL_CAC: [f64; 7] = [15.0, 45.0, 30.0, 10.0, 20.0, 35.0, 50.0];
const CATEGORIES: [&str; 15] = [
    "electronics",
    "apparel",
    "home",
    "beauty",
    "sports",
    "toys",
    "books",
    "grocery",
    "garden",
    "automotive",
    "health",
    "jewelry",
    "office",
    "pets",
    "music",
];
const KINDS: [&str; 5] = [
    "web_visit",
    "email_open",
    "email_click",
    "support_ticket",
    "app_session",
];
const KIND_P: [f64; 5] = [0.40, 0.22, 0.10, 0.05, 0.23];
const SUPPORT_TICKET: usize = 3;
/// Log-normal duration in seconds per kind: (median, sigma).
const KIND_DUR: [(f64, f64); 5] = [(90.0, 0.9), (15.0, 0.7), (30.0, 0.8), (600.0, 0.8), (240.0, 0.9)];

// BG/NBD hyper-parameters.
const LAMBDA_SHAPE: f64 = 1.5;
const LAMBDA_SCALE: f64 = 10.0; // purchases per year while alive
const DROP_A: f64 = 3.0;
const DROP_B: f64 = 50.0;
// Interactions per year while engaged.
const IX_SHAPE: f64 = 2.0;
const IX_SCALE: f64 = 6.7;
const IX_TAIL_DAYS: f64 = 60.0;
const QUANTITY_MEAN: f64 = 0.6;

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

/// Arrow schema of `customers/`.
pub fn customers_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("signup_date", DataType::Date32, false),
        Field::new("country", DataType::Utf8, false),
        Field::new("age", DataType::Int32, false),
        Field::new("gender", DataType::Utf8, false),
        Field::new("income", DataType::Float64, false),
        Field::new("acquisition_cost", DataType::Float64, false),
        Field::new("channel", DataType::Utf8, false),
    ]))
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Arrow schema of `transactions/`.
pub fn transactions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("transaction_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new("transaction_ts", ts_type(), false),
        Field::new("amount", DataType::Float64, false),
        Field::new("quantity", DataType::Int32, false),
        Field::new("product_category", DataType::Utf8, false),
    ]))
}

/// Arrow schema of `interactions/`.
pub fn interactions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("interaction_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new("interaction_ts", ts_type(), false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("duration_s", DataType::Int32, false),
    ]))
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

async fn run(
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

    let props = [
        writer_props(&["customer_id"]),
        writer_props(&["transaction_id", "customer_id", "transaction_ts"]),
        writer_props(&["interaction_id", "customer_id", "interaction_ts"]),
    ];

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

/// Deletes every `*.parquet` object under `dir` (recursively), so that a
/// rerun replaces rather than mixes.
async fn delete_parquet_under(store: &dyn ObjectStore, dir: &Path) -> Result<(), GenerateError> {
    let listed: Vec<_> = match store.list(Some(dir)).try_collect().await {
        Ok(v) => v,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(source) => {
            return Err(GenerateError::List {
                path: dir.to_string(),
                source,
            });
        }
    };
    let mut stale: Vec<Path> = listed
        .into_iter()
        .map(|m| m.location)
        .filter(|p| p.as_ref().ends_with(".parquet"))
        .collect();
    stale.sort();
    for path in stale {
        tracing::debug!(path = %path, "deleting stale part file");
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => {
                return Err(GenerateError::Delete {
                    path: path.to_string(),
                    source,
                });
            }
        }
    }
    Ok(())
}

fn writer_props(delta_columns: &[&str]) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    // Ids and timestamps are (mostly) increasing: delta encoding is smaller
    // and faster than a dictionary that would overflow anyway.
    for c in delta_columns {
        let col = ColumnPath::from(*c);
        b = b
            .set_column_dictionary_enabled(col.clone(), false)
            .set_column_encoding(col, Encoding::DELTA_BINARY_PACKED);
    }
    b.build()
}

/// Writes table `t` (index into [`TABLES`]) of `chunk` to `path`, returning
/// the row count. `id_base` is the global id of the row before the first.
async fn write_table(
    store: Arc<dyn ObjectStore>,
    path: Path,
    props: WriterProperties,
    chunk: &Chunk,
    t: usize,
    id_base: u64,
) -> Result<u64, GenerateError> {
    let schema = match t {
        0 => customers_schema(),
        1 => transactions_schema(),
        _ => interactions_schema(),
    };
    let rows = chunk.rows(t);
    let werr = |source| GenerateError::Write {
        path: path.to_string(),
        source,
    };
    // parquet 59.2 deprecated `ParquetObjectWriter` in favour of passing
    // object_store's `BufWriter` (an `AsyncWrite`) to `AsyncArrowWriter`
    // directly; small files go up with one put, large ones as multipart.
    let sink = BufWriter::new(store, path.clone());
    let mut writer = AsyncArrowWriter::try_new(sink, Arc::clone(&schema), Some(props)).map_err(werr)?;
    let mut start = 0;
    while start < rows {
        let end = (start + ROW_GROUP_ROWS).min(rows);
        let batch = chunk
            .batch(t, &schema, start..end, id_base)
            .map_err(|source| GenerateError::Arrow {
                path: path.to_string(),
                source,
            })?;
        writer.write(&batch).await.map_err(werr)?;
        start = end;
    }
    writer.close().await.map_err(werr)?;
    Ok(rows as u64)
}

/// Cumulative distribution for inverse-CDF sampling from a small table.
#[derive(Debug, Clone)]
struct Cdf(Vec<f64>);

impl Cdf {
    fn new(weights: &[f64]) -> Self {
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut c: Vec<f64> = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        if let Some(last) = c.last_mut() {
            *last = f64::INFINITY; // never fall off the end through rounding
        }
        Cdf(c)
    }

    fn zipf(n: usize, s: f64) -> Self {
        let w: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
        Cdf::new(&w)
    }

    /// Poisson(mean) truncated at a negligible tail.
    fn poisson(mean: f64) -> Self {
        let mut w = Vec::new();
        let mut p = (-mean).exp();
        let mut k = 0.0;
        while w.len() < 64 && (w.len() as f64) < mean + 10.0 * mean.sqrt() + 10.0 {
            w.push(p);
            k += 1.0;
            p *= mean / k;
        }
        Cdf::new(&w)
    }

    #[inline]
    fn sample<R: Rng>(&self, rng: &mut R) -> u8 {
        let u: f64 = rng.r#gen();
        let mut i = 0;
        while u >= self.0[i] {
            i += 1;
        }
        i as u8
    }
}

/// Everything that does not change between chunks.
struct Model {
    seed: u64,
    customers: u64,
    chunk_customers: u64,
    start_day: i64,
    n_days: i64,
    end_us: i64,
    country: Cdf,
    gender: Cdf,
    channel: Cdf,
    category: Cdf,
    quantity: Cdf,
    kind_alive: Cdf,
    kind_dropped: Cdf,
    income: LogNormal<f64>,
    cac_factor: LogNormal<f64>,
    lambda: Gamma<f64>,
    drop: Beta<f64>,
    spend_mean: Gamma<f64>,
    amount: Gamma<f64>,
    ix_rate: Gamma<f64>,
    dur_mu: [f64; 5],
    dur_sigma: [f64; 5],
}

impl Model {
    fn new(opts: &GenerateOptions, chunk_customers: u64) -> Result<Self, GenerateError> {
        if opts.customers == 0 {
            return Err(GenerateError::InvalidOptions(
                "the number of customers must be at least 1".into(),
            ));
        }
        if opts.customers > i64::MAX as u64 / 1024 {
            return Err(GenerateError::InvalidOptions(format!(
                "{} customers is too many",
                opts.customers
            )));
        }
        if opts.start >= opts.end {
            return Err(GenerateError::InvalidOptions(format!(
                "the window start {} must be before its end {}",
                opts.start, opts.end
            )));
        }
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
        let start_day = opts.start.signed_duration_since(epoch).num_days();
        let end_day = opts.end.signed_duration_since(epoch).num_days();
        if start_day < i32::MIN as i64 / 2 || end_day > i32::MAX as i64 / 2 {
            return Err(GenerateError::InvalidOptions("the window is out of range".into()));
        }
        let mut kind_dropped = KIND_P;
        kind_dropped[SUPPORT_TICKET] *= DROPOUT_TICKET_FACTOR;
        Ok(Model {
            seed: opts.seed,
            customers: opts.customers,
            chunk_customers,
            start_day,
            n_days: end_day - start_day,
            end_us: end_day * US_PER_DAY,
            country: Cdf::zipf(COUNTRIES.len(), 0.9),
            gender: Cdf::new(&GENDER_P),
            channel: Cdf::new(&CHANNEL_P),
            category: Cdf::zipf(CATEGORIES.len(), 0.8),
            quantity: Cdf::poisson(QUANTITY_MEAN),
            kind_alive: Cdf::new(&KIND_P),
            kind_dropped: Cdf::new(&kind_dropped),
            income: c(LogNormal::new(52_000f64.ln(), 0.6).ok()),
            cac_factor: c(LogNormal::new(0.0, 0.5).ok()),
            lambda: c(Gamma::new(LAMBDA_SHAPE, LAMBDA_SCALE).ok()),
            drop: c(Beta::new(DROP_A, DROP_B).ok()),
            spend_mean: c(Gamma::new(3.0, 20.0).ok()),
            amount: c(Gamma::new(4.0, 1.0).ok()),
            ix_rate: c(Gamma::new(IX_SHAPE, IX_SCALE).ok()),
            dur_mu: KIND_DUR.map(|(m, _)| m.ln()),
            dur_sigma: KIND_DUR.map(|(_, s)| s),
        })
    }

    fn rng(&self, chunk: u64) -> Xoshiro256PlusPlus {
        let s = splitmix64(splitmix64(self.seed) ^ splitmix64(chunk.wrapping_add(0x0063_726d_666c_6f77)));
        Xoshiro256PlusPlus::seed_from_u64(s)
    }

    /// Generates chunk `k` (customers `k·chunk+1 ..`), self-contained.
    fn chunk(&self, k: u64) -> Chunk {
        let mut rng = self.rng(k);
        let first = k * self.chunk_customers; // 0-based index of the first customer
        let n = (self.customers - first).min(self.chunk_customers) as usize;
        let mut ch = Chunk::with_capacity(k, first as i64 + 1, n);
        let n_total = self.customers as f64;
        let g_norm = SIGNUP_GROWTH.exp_m1();
        let ix_ref = (LAMBDA_SHAPE * LAMBDA_SCALE).recip();
        let ix_tail_us = IX_TAIL_DAYS * US_PER_DAY as f64;

        for j in 0..n {
            let cid = first as i64 + j as i64 + 1;
            // --- customer ---
            let u = ((first + j as u64) as f64 + rng.r#gen::<f64>()) / n_total;
            let frac = (u * g_norm).ln_1p() / SIGNUP_GROWTH;
            let day_off = ((self.n_days as f64 * frac).floor() as i64).clamp(0, self.n_days - 1);
            let day = self.start_day + day_off;
            let birth_us = day * US_PER_DAY + rng.gen_range(0..US_PER_DAY);
            let country = self.country.sample(&mut rng);
            let z: f64 = StandardNormal.sample(&mut rng);
            let age = (40.0 + 13.0 * z).round().clamp(18.0, 90.0) as i32;
            let gender = self.gender.sample(&mut rng);
            let income = round2(self.income.sample(&mut rng));
            let channel = self.channel.sample(&mut rng);
            let acq = round2(CHANNEL_CAC[channel as usize] * self.cac_factor.sample(&mut rng));
            ch.c_signup.push(day as i32);
            ch.c_country.push(country);
            ch.c_age.push(age);
            ch.c_gender.push(gender);
            ch.c_income.push(income);
            ch.c_acq.push(acq);
            ch.c_channel.push(channel);

            // --- purchases: BG/NBD ---
            let lambda = self.lambda.sample(&mut rng);
            let p_drop = self.drop.sample(&mut rng);
            let mean_amt = self.spend_mean.sample(&mut rng) * (income / 52_000.0).powf(0.3);
            let amt_scale = mean_amt / 4.0;
            let gap_scale = US_PER_YEAR / lambda;
            let mut t = birth_us;
            let alive = loop {
                ch.t_customer.push(cid);
                ch.t_ts.push(t);
                ch.t_amount
                    .push(round2(self.amount.sample(&mut rng) * amt_scale).max(0.01));
                ch.t_qty.push(1 + self.quantity.sample(&mut rng) as i32);
                ch.t_cat.push(self.category.sample(&mut rng));
                if rng.r#gen::<f64>() < p_drop {
                    break false;
                }
                let e: f64 = Exp1.sample(&mut rng);
                let step = (e * gap_scale).round().max(1.0);
                if step >= (self.end_us - t) as f64 {
                    break true;
                }
                t += step as i64;
            };
            let last_tx = t;
            ch.c_alive.push(alive);

            // --- interactions ---
            let engaged_end = if alive {
                self.end_us
            } else {
                let e: f64 = Exp1.sample(&mut rng);
                let tail = (e * ix_tail_us).round();
                if tail >= (self.end_us - last_tx) as f64 {
                    self.end_us
                } else {
                    last_tx + tail as i64
                }
            };
            let rho = self.ix_rate.sample(&mut rng) * (lambda * ix_ref).powf(0.3);
            let kinds = if alive { &self.kind_alive } else { &self.kind_dropped };
            let gap_scale = US_PER_YEAR / rho;
            let mut t = birth_us;
            loop {
                let e: f64 = Exp1.sample(&mut rng);
                let step = (e * gap_scale).round().max(1.0);
                if step >= (engaged_end - t) as f64 {
                    break;
                }
                t += step as i64;
                let kind = kinds.sample(&mut rng);
                let z: f64 = StandardNormal.sample(&mut rng);
                let k = kind as usize;
                let dur = (self.dur_mu[k] + self.dur_sigma[k] * z)
                    .exp()
                    .round()
                    .clamp(1.0, 86_400.0);
                ch.i_customer.push(cid);
                ch.i_ts.push(t);
                ch.i_kind.push(kind);
                ch.i_dur.push(dur as i32);
            }
        }
        ch.shrink_to_fit();
        ch
    }
}

/// Unwraps a distribution built from constant, valid parameters.
fn c<T>(d: Option<T>) -> T {
    d.expect("constant distribution parameters are valid")
}

#[inline]
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One chunk of generated rows, kept compact (small codes for strings)
/// until it is written one row group at a time.
struct Chunk {
    index: u64,
    first_customer_id: i64,
    c_signup: Vec<i32>,
    c_country: Vec<u8>,
    c_age: Vec<i32>,
    c_gender: Vec<u8>,
    c_income: Vec<f64>,
    c_acq: Vec<f64>,
    c_channel: Vec<u8>,
    /// Still alive at the window end (not written; used by tests).
    c_alive: Vec<bool>,
    t_customer: Vec<i64>,
    t_ts: Vec<i64>,
    t_amount: Vec<f64>,
    t_qty: Vec<i32>,
    t_cat: Vec<u8>,
    i_customer: Vec<i64>,
    i_ts: Vec<i64>,
    i_kind: Vec<u8>,
    i_dur: Vec<i32>,
}

impl Chunk {
    fn with_capacity(index: u64, first_customer_id: i64, n: usize) -> Self {
        let rows = n * 12;
        Chunk {
            index,
            first_customer_id,
            c_signup: Vec::with_capacity(n),
            c_country: Vec::with_capacity(n),
            c_age: Vec::with_capacity(n),
            c_gender: Vec::with_capacity(n),
            c_income: Vec::with_capacity(n),
            c_acq: Vec::with_capacity(n),
            c_channel: Vec::with_capacity(n),
            c_alive: Vec::with_capacity(n),
            t_customer: Vec::with_capacity(rows),
            t_ts: Vec::with_capacity(rows),
            t_amount: Vec::with_capacity(rows),
            t_qty: Vec::with_capacity(rows),
            t_cat: Vec::with_capacity(rows),
            i_customer: Vec::with_capacity(rows),
            i_ts: Vec::with_capacity(rows),
            i_kind: Vec::with_capacity(rows),
            i_dur: Vec::with_capacity(rows),
        }
    }

    /// Gives back the over-reserved row capacity (cheap for large vectors).
    fn shrink_to_fit(&mut self) {
        self.t_customer.shrink_to_fit();
        self.t_ts.shrink_to_fit();
        self.t_amount.shrink_to_fit();
        self.t_qty.shrink_to_fit();
        self.t_cat.shrink_to_fit();
        self.i_customer.shrink_to_fit();
        self.i_ts.shrink_to_fit();
        self.i_kind.shrink_to_fit();
        self.i_dur.shrink_to_fit();
    }

    fn rows(&self, table: usize) -> usize {
        match table {
            0 => self.c_signup.len(),
            1 => self.t_ts.len(),
            _ => self.i_ts.len(),
        }
    }

    /// Rows `r` of table `table` as a batch; ids are `id_base + row + 1`.
    fn batch(
        &self,
        table: usize,
        schema: &SchemaRef,
        r: Range<usize>,
        id_base: u64,
    ) -> Result<RecordBatch, ArrowError> {
        fn strings(codes: &[u8], names: &[&str]) -> ArrayRef {
            Arc::new(StringArray::from_iter_values(codes.iter().map(|&c| names[c as usize])))
        }
        fn ts(v: &[i64]) -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(v.to_vec()).with_timezone("UTC"))
        }
        let ids = |base: i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(
                (r.start as i64..r.end as i64).map(|i| base + i + 1),
            ))
        };
        let columns: Vec<ArrayRef> = match table {
            0 => vec![
                ids(self.first_customer_id - 1),
                Arc::new(Date32Array::from(self.c_signup[r.clone()].to_vec())),
                strings(&self.c_country[r.clone()], &COUNTRIES),
                Arc::new(Int32Array::from(self.c_age[r.clone()].to_vec())),
                strings(&self.c_gender[r.clone()], &GENDERS),
                Arc::new(Float64Array::from(self.c_income[r.clone()].to_vec())),
                Arc::new(Float64Array::from(self.c_acq[r.clone()].to_vec())),
                strings(&self.c_channel[r.clone()], &CHANNELS),
            ],
            1 => vec![
                ids(id_base as i64),
                Arc::new(Int64Array::from(self.t_customer[r.clone()].to_vec())),
                ts(&self.t_ts[r.clone()]),
                Arc::new(Float64Array::from(self.t_amount[r.clone()].to_vec())),
                Arc::new(Int32Array::from(self.t_qty[r.clone()].to_vec())),
                strings(&self.t_cat[r.clone()], &CATEGORIES),
            ],
            _ => vec![
                ids(id_base as i64),
                Arc::new(Int64Array::from(self.i_customer[r.clone()].to_vec())),
                ts(&self.i_ts[r.clone()]),
                strings(&self.i_kind[r.clone()], &KINDS),
                Arc::new(Int32Array::from(self.i_dur[r.clone()].to_vec())),
            ],
        };
        RecordBatch::try_new(Arc::clone(schema), columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use object_store::memory::InMemory;
    use std::collections::BTreeMap;

    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Date32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};

    fn mem() -> Arc<dyn ObjectStore> {
        Arc::new(InMemory::new())
    }

    /// All objects under `prefix` as path → bytes, sorted by path.
    async fn dump(store: &Arc<dyn ObjectStore>, prefix: &Path) -> BTreeMap<String, Vec<u8>> {
        let metas: Vec<_> = store.list(Some(prefix)).try_collect().await.unwrap();
        let mut out = BTreeMap::new();
        for m in metas {
            let b = store.get(&m.location).await.unwrap().bytes().await.unwrap();
            out.insert(m.location.to_string(), b.to_vec());
        }
        out
    }

    /// Reads every part file of `table` in part order into batches.
    async fn read_table(store: &Arc<dyn ObjectStore>, prefix: &Path, table: &str) -> Vec<RecordBatch> {
        let dir = prefix.clone().join(table);
        let mut paths: Vec<Path> = store
            .list(Some(&dir))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .unwrap();
        paths.sort();
        let mut batches = Vec::new();
        for p in paths {
            let b = store.get(&p).await.unwrap().bytes().await.unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(b).unwrap().build().unwrap();
            for batch in reader {
                batches.push(batch.unwrap());
            }
        }
        batches
    }

    fn col_i64(batches: &[RecordBatch], name: &str) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                b.column_by_name(name)
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    fn col_ts(batches: &[RecordBatch], name: &str) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                b.column_by_name(name)
                    .unwrap()
                    .as_primitive::<TimestampMicrosecondType>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    fn col_f64(batches: &[RecordBatch], name: &str) -> Vec<f64> {
        batches
            .iter()
            .flat_map(|b| {
                b.column_by_name(name)
                    .unwrap()
                    .as_primitive::<Float64Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    fn col_i32(batches: &[RecordBatch], name: &str) -> Vec<i32> {
        batches
            .iter()
            .flat_map(|b| {
                b.column_by_name(name)
                    .unwrap()
                    .as_primitive::<Int32Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    fn col_date(batches: &[RecordBatch], name: &str) -> Vec<i32> {
        batches
            .iter()
            .flat_map(|b| {
                b.column_by_name(name)
                    .unwrap()
                    .as_primitive::<Date32Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    fn col_str(batches: &[RecordBatch], name: &str) -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| {
                b.column_by_name(name)
                    .unwrap()
                    .as_string::<i32>()
                    .iter()
                    .map(|s| s.unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn epoch_day(d: NaiveDate) -> i64 {
        d.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
            .num_days()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deterministic_for_a_seed_and_different_across_seeds() {
        let prefix = Path::from("out");
        let (a, b, c) = (mem(), mem(), mem());
        let opts = GenerateOptions::new(1_300, 7);
        // Several chunks, so that parallel generation and ordering are exercised.
        let sa = run(a.clone(), &prefix, &opts, 300, &|_| {}).await.unwrap();
        let sb = run(b.clone(), &prefix, &opts, 300, &|_| {}).await.unwrap();
        let _ = run(c.clone(), &prefix, &GenerateOptions::new(1_300, 8), 300, &|_| {})
            .await
            .unwrap();
        assert_eq!(sa, sb);
        assert_eq!(sa.files.len(), 15);
        let (da, db, dc) = (
            dump(&a, &prefix).await,
            dump(&b, &prefix).await,
            dump(&c, &prefix).await,
        );
        assert_eq!(da.len(), 15);
        assert_eq!(da, db, "same seed must give identical bytes");
        let keys: Vec<_> = da.keys().collect();
        assert_eq!(keys, dc.keys().collect::<Vec<_>>());
        for k in keys {
            assert_ne!(da[k], dc[k], "{k} is the same for two seeds");
        }
    }

    #[tokio::test]
    async fn schemas_are_exact() {
        let store = mem();
        let prefix = Path::from("s");
        generate(store.clone(), &prefix, &GenerateOptions::new(50, 1))
            .await
            .unwrap();
        let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let expected: [(&str, Vec<(&str, DataType)>); 3] = [
            (
                "customers",
                vec![
                    ("customer_id", DataType::Int64),
                    ("signup_date", DataType::Date32),
                    ("country", DataType::Utf8),
                    ("age", DataType::Int32),
                    ("gender", DataType::Utf8),
                    ("income", DataType::Float64),
                    ("acquisition_cost", DataType::Float64),
                    ("channel", DataType::Utf8),
                ],
            ),
            (
                "transactions",
                vec![
                    ("transaction_id", DataType::Int64),
                    ("customer_id", DataType::Int64),
                    ("transaction_ts", utc.clone()),
                    ("amount", DataType::Float64),
                    ("quantity", DataType::Int32),
                    ("product_category", DataType::Utf8),
                ],
            ),
            (
                "interactions",
                vec![
                    ("interaction_id", DataType::Int64),
                    ("customer_id", DataType::Int64),
                    ("interaction_ts", utc.clone()),
                    ("kind", DataType::Utf8),
                    ("duration_s", DataType::Int32),
                ],
            ),
        ];
        for (table, cols) in expected {
            let p = prefix.clone().join(table).join("part-00000.parquet");
            let bytes = store.get(&p).await.unwrap().bytes().await.unwrap();
            let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
            let schema = builder.schema().clone();
            let got: Vec<(String, DataType, bool)> = schema
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
                .collect();
            let want: Vec<(String, DataType, bool)> =
                cols.into_iter().map(|(n, t)| (n.to_string(), t, false)).collect();
            assert_eq!(got, want, "schema of {table}");
            let md = builder.metadata();
            assert!(md.num_row_groups() >= 1);
            let cc = md.row_group(0).column(0);
            assert_eq!(cc.compression(), Compression::ZSTD(ZstdLevel::default()));
            assert!(cc.statistics().is_some(), "statistics written");
        }
    }

    /// Expected transactions per customer under the model, from the BG/NBD
    /// closed form (Fader, Hardie & Lee 2005, eq. 9) adapted to dropout being
    /// possible right after the first purchase: E[X(t)] = b/(a−1) ·
    /// [1 − (α/(α+t))^r · ₂F₁(r, b+1; a+b; t/(α+t))], with r, α the shape and
    /// rate of λ, averaged over the signup distribution (t = time from
    /// signup to the window end, in years), plus the first purchase.
    fn expected_tx_per_customer(n_days: i64) -> f64 {
        let (r, alpha, a, b) = (LAMBDA_SHAPE, 1.0 / LAMBDA_SCALE, DROP_A, DROP_B);
        let hyp2f1 = |aa: f64, bb: f64, cc: f64, z: f64| {
            let (mut s, mut term) = (1.0, 1.0);
            for k in 0..200_000 {
                let k = k as f64;
                term *= (aa + k) * (bb + k) / ((cc + k) * (k + 1.0)) * z;
                s += term;
                if term.abs() < 1e-13 * s {
                    break;
                }
            }
            s
        };
        let ex =
            |t: f64| b / (a - 1.0) * (1.0 - (alpha / (alpha + t)).powf(r) * hyp2f1(r, b + 1.0, a + b, t / (alpha + t)));
        let years = n_days as f64 * US_PER_DAY as f64 / US_PER_YEAR;
        let m = 4_000;
        let g = SIGNUP_GROWTH;
        let mean: f64 = (0..m)
            .map(|i| {
                let u = (i as f64 + 0.5) / m as f64;
                let frac = (u * g.exp_m1()).ln_1p() / g;
                ex(years * (1.0 - frac))
            })
            .sum::<f64>()
            / m as f64;
        1.0 + mean
    }

    #[tokio::test]
    async fn invariants_hold() {
        let n = 2_000u64;
        let opts = GenerateOptions::new(n, 42);
        let store = mem();
        let prefix = Path::from("inv");
        // Chunks of 700 customers: ids must also run on across chunks.
        let summary = run(store.clone(), &prefix, &opts, 700, &|_| {}).await.unwrap();
        assert_eq!(summary.files.len(), 9);
        let cust = read_table(&store, &prefix, "customers").await;
        let tx = read_table(&store, &prefix, "transactions").await;
        let ix = read_table(&store, &prefix, "interactions").await;
        assert_eq!(summary.customers, n);

        // customers: ids 1..n, signup days non-decreasing and in the window
        let cid = col_i64(&cust, "customer_id");
        assert_eq!(cid, (1..=n as i64).collect::<Vec<_>>());
        let signup = col_date(&cust, "signup_date");
        let (d0, d1) = (epoch_day(opts.start), epoch_day(opts.end));
        assert!(signup.windows(2).all(|w| w[0] <= w[1]), "signup days decrease");
        assert!(signup.iter().all(|&d| (d0..d1).contains(&(d as i64))));
        // growth: the second half of the window has more signups than the first
        let mid = (d0 + d1) / 2;
        let late = signup.iter().filter(|&&d| d as i64 >= mid).count() as f64 / n as f64;
        assert!((0.55..0.65).contains(&late), "share of late signups {late}");
        let age = col_i32(&cust, "age");
        assert!(age.iter().all(|a| (18..=90).contains(a)));
        assert!(col_str(&cust, "gender").iter().all(|g| GENDERS.contains(&g.as_str())));
        assert!(col_str(&cust, "channel").iter().all(|g| CHANNELS.contains(&g.as_str())));
        assert!(
            col_str(&cust, "country")
                .iter()
                .all(|g| COUNTRIES.contains(&g.as_str()))
        );

        // transactions
        let tid = col_i64(&tx, "transaction_id");
        assert_eq!(tid.len() as u64, summary.transactions);
        assert_eq!(tid, (1..=tid.len() as i64).collect::<Vec<_>>());
        let tcust = col_i64(&tx, "customer_id");
        let tts = col_ts(&tx, "transaction_ts");
        let end_us = d1 * US_PER_DAY;
        let mut first_seen = vec![false; n as usize + 1];
        let mut prev: Option<(i64, i64)> = None;
        for (&c, &t) in tcust.iter().zip(&tts) {
            assert!((1..=n as i64).contains(&c));
            let day = signup[(c - 1) as usize] as i64;
            assert!(t >= day * US_PER_DAY, "transaction before signup");
            assert!(t < end_us, "transaction at/after the end");
            if !first_seen[c as usize] {
                first_seen[c as usize] = true;
                assert_eq!(t.div_euclid(US_PER_DAY), day, "first purchase not on signup day");
            }
            if let Some(p) = prev {
                assert!(p < (c, t), "rows not ordered by (customer, ts)");
            }
            prev = Some((c, t));
        }
        assert!(first_seen[1..].iter().all(|&s| s), "a customer has no transaction");
        for a in col_f64(&tx, "amount") {
            assert!(a >= 0.01, "amount {a}");
            assert_eq!(round2(a), a, "amount {a} has more than 2 decimals");
        }
        assert!(col_i32(&tx, "quantity").iter().all(|&q| q >= 1));
        assert!(
            col_str(&tx, "product_category")
                .iter()
                .all(|c| CATEGORIES.contains(&c.as_str()))
        );

        // transactions per customer within 4 standard errors of the model's mean
        let mut per = vec![0f64; n as usize];
        for &c in &tcust {
            per[(c - 1) as usize] += 1.0;
        }
        let mean = per.iter().sum::<f64>() / n as f64;
        let var = per.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
        let se = (var / n as f64).sqrt();
        let want = expected_tx_per_customer(d1 - d0);
        assert!((9.0..11.5).contains(&want), "model mean {want}");
        assert!((mean - want).abs() < 4.0 * se, "mean {mean} vs model {want} ± 4·{se}");

        // interactions
        let iid = col_i64(&ix, "interaction_id");
        assert_eq!(iid, (1..=iid.len() as i64).collect::<Vec<_>>());
        assert_eq!(iid.len() as u64, summary.interactions);
        let per_ix = iid.len() as f64 / n as f64;
        assert!((5.0..20.0).contains(&per_ix), "interactions per customer {per_ix}");
        let icust = col_i64(&ix, "customer_id");
        let its = col_ts(&ix, "interaction_ts");
        for (&c, &t) in icust.iter().zip(&its) {
            assert!(t >= signup[(c - 1) as usize] as i64 * US_PER_DAY && t < end_us);
        }
        assert!(col_str(&ix, "kind").iter().all(|k| KINDS.contains(&k.as_str())));
        assert!(col_i32(&ix, "duration_s").iter().all(|d| (1..=86_400).contains(d)));

        // files and row counts
        let total: u64 = summary.files.iter().map(|f| f.1).sum();
        assert_eq!(total, n + summary.transactions + summary.interactions);
    }

    #[test]
    fn dropped_out_customers_file_more_tickets() {
        let model = Model::new(&GenerateOptions::new(40_000, 3), 40_000).unwrap();
        let ch = model.chunk(0);
        let (mut n, mut tickets) = ([0f64; 2], [0f64; 2]); // [alive, dropped]
        for (c, k) in ch.i_customer.iter().zip(&ch.i_kind) {
            let g = usize::from(!ch.c_alive[(c - ch.first_customer_id) as usize]);
            n[g] += 1.0;
            tickets[g] += f64::from(u8::from(*k as usize == SUPPORT_TICKET));
        }
        let share = [tickets[0] / n[0], tickets[1] / n[1]];
        let alive_share = ch.c_alive.iter().filter(|&&a| a).count() as f64 / 40_000.0;
        assert!((0.1..0.6).contains(&alive_share), "alive at end {alive_share}");
        assert!(
            (share[0] - KIND_P[SUPPORT_TICKET]).abs() < 0.01,
            "alive ticket share {}",
            share[0]
        );
        // The dropped-out customers' ticket share is about doubled
        // (0.05 -> 0.095), not more.
        let ratio = share[1] / share[0];
        assert!(
            (1.6..2.4).contains(&ratio),
            "ticket share dropped/alive {} / {} = {ratio}",
            share[1],
            share[0]
        );
    }

    #[tokio::test]
    async fn rerun_with_fewer_customers_leaves_no_stale_parts() {
        let store = mem();
        let prefix = Path::from("data/crm");
        let big = run(store.clone(), &prefix, &GenerateOptions::new(1_000, 5), 300, &|_| {})
            .await
            .unwrap();
        assert_eq!(big.files.len(), 12);
        // a stray parquet file and an unrelated object
        let stray = prefix.clone().join("customers").join("old").join("x.parquet");
        let notes = prefix.clone().join("customers").join("notes.txt");
        store.put(&stray, b"junk".to_vec().into()).await.unwrap();
        store.put(&notes, b"keep".to_vec().into()).await.unwrap();
        let small = run(store.clone(), &prefix, &GenerateOptions::new(250, 5), 300, &|_| {})
            .await
            .unwrap();
        assert_eq!(small.files.len(), 3);
        let left: Vec<String> = dump(&store, &prefix).await.into_keys().collect();
        let mut want: Vec<String> = small.files.iter().map(|f| f.0.clone()).collect();
        want.push(notes.to_string());
        want.sort();
        assert_eq!(left, want);
        // and the small run equals a fresh small run
        let fresh = mem();
        run(fresh.clone(), &prefix, &GenerateOptions::new(250, 5), 300, &|_| {})
            .await
            .unwrap();
        let mut a = dump(&store, &prefix).await;
        a.remove(&notes.to_string());
        assert_eq!(a, dump(&fresh, &prefix).await);
    }

    #[tokio::test]
    async fn rejects_bad_options() {
        let store = mem();
        let p = Path::from("x");
        assert!(matches!(
            generate(store.clone(), &p, &GenerateOptions::new(0, 1)).await,
            Err(GenerateError::InvalidOptions(_))
        ));
        let mut o = GenerateOptions::new(10, 1);
        o.end = o.start;
        assert!(matches!(
            generate(store, &p, &o).await,
            Err(GenerateError::InvalidOptions(_))
        ));
    }

    #[test]
    fn progress_is_reported_per_chunk() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        rt.block_on(run(mem(), &Path::from("p"), &GenerateOptions::new(700, 1), 300, &|d| {
            seen.lock().unwrap().push(d)
        }))
        .unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![300, 600, 700]);
    }
}
