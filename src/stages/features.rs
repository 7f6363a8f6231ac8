//! The feature matrix a stage fits on: read from a table through
//! DataFusion, nulls handled by policy, optionally a deterministic sample,
//! in a deterministic row order; and its z-scoring ([`Standardizer`]).
//!
//! Only this matrix (or its sample) is brought into memory: scoring applies
//! the fitted model as an expression inside the plan.

use datafusion::arrow::array::{Array, AsArray, Float64Array};
use datafusion::common::stats::Precision;
use datafusion::logical_expr::{Expr, lit};
use datafusion::physical_plan::execute_stream;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::prelude::{SessionContext, coalesce};
use futures::StreamExt;
use ndarray::Array2;
use serde::Deserialize;

use crate::engine::expr::{column, f64_col};
use crate::error::{Error, Result};

/// What to do with null feature values.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NullPolicy {
    /// Fail, naming the column and the count.
    #[default]
    Error,
    /// Leave the row out of fitting; its prediction is null.
    Drop,
    /// Replace by the column mean of the fitting rows.
    Mean,
}

/// A feature matrix brought into memory for fitting.
#[derive(Debug)]
pub struct Features {
    /// Rows × features, as f64, nulls handled per the policy.
    pub x: Array2<f64>,
    /// The label per row, when one was asked for.
    pub y: Option<Vec<f64>>,
    /// The stable hash of each row's id (for splits).
    pub hashes: Vec<u64>,
    /// Rows of the table (before dropping or sampling).
    pub table_rows: usize,
    /// Rows kept by the sample (all rows without one).
    pub sampled: usize,
    /// Of those, rows left out as holdout rows.
    pub held_out: usize,
    /// Rows dropped for nulls (after the holdout was left out).
    pub dropped: usize,
    /// Column means used to fill nulls (policy `mean`), per feature.
    pub fill: Option<Vec<f64>>,
}

/// What [`collect_features`] reads.
pub struct FeatureRequest<'a> {
    pub step: &'a str,
    pub table: &'a str,
    pub id: &'a str,
    pub features: &'a [String],
    pub label: Option<&'a str>,
    /// A Boolean column marking holdout rows (true): they are left out, as
    /// with `holdout`, which it replaces.
    pub holdout_column: Option<&'a str>,
    pub nulls: NullPolicy,
    /// Keep at most this many rows: those with the smallest id hashes
    /// under `sample_seed`.
    pub sample: Option<usize>,
    /// The seed of the row hashes returned (what splits use).
    pub seed: u64,
    /// The seed of the sample's hashes. A stage whose rows are also split
    /// by `seed` (the holdout of `predict`) samples with another seed, so
    /// that the sample is independent of the split.
    pub sample_seed: u64,
    /// Leave out the rows whose hash under `seed` is in this holdout
    /// fraction (they are not fitted on).
    pub holdout: Option<f64>,
}

/// Streams `table` once and keeps the id hash, features and label of each
/// row: all rows, or a deterministic sample (the `sample` rows with the
/// smallest id hash under `sample_seed`, kept in a bounded heap so memory
/// stays bounded).
///
/// # Errors
/// Nulls under policy `error` (with the count per column), a null label,
/// non-finite values, or a query failure.
pub async fn collect_features(ctx: &SessionContext, req: &FeatureRequest<'_>) -> Result<Features> {
    let step = req.step;
    let df = ctx.table(req.table).await.map_err(|e| Error::step(step, e))?;
    let mut exprs = vec![column(req.id).alias("__id")];
    for (i, f) in req.features.iter().enumerate() {
        exprs.push(f64_col(f).alias(format!("__f{i}")));
    }
    if let Some(label) = req.label {
        exprs.push(f64_col(label).alias("__y"));
    }
    if let Some(h) = req.holdout_column {
        exprs.push(column(h).alias("__h"));
    }
    let df = df.select(exprs).map_err(|e| Error::step(step, e))?;
    let d = req.features.len();
    let plan = df.create_physical_plan().await.map_err(|e| Error::step(step, e))?;
    // Kept rows, each one record (see [`Kept`]). A sample replaces rows in
    // place. Room for them all at once where the plan knows its row count
    // (a materialized table does): no copies as the records grow.
    let mut kept = Kept::new(d);
    if let Ok(stats) = StatisticsContext::new().compute(plan.as_ref(), &StatisticsArgs::new())
        && let Precision::Exact(rows) = stats.num_rows
    {
        kept.reserve(req.sample.map_or(rows, |n| n.min(rows)));
    }
    let mut stream = execute_stream(plan, ctx.task_ctx()).map_err(|e| Error::step(step, e))?;
    let mut heap: std::collections::BinaryHeap<(u64, usize)> = std::collections::BinaryHeap::new();
    let mut nulls = vec![0usize; d];
    let mut label_nulls = 0usize;
    let mut flag_nulls = 0usize;
    let mut table_rows = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| Error::step(step, e))?;
        let hashes = crate::hash::key_hashes(batch.column(0).as_ref(), req.seed);
        let sample_hashes = match req.sample {
            Some(_) if req.sample_seed != req.seed => {
                Some(crate::hash::key_hashes(batch.column(0).as_ref(), req.sample_seed))
            }
            _ => None,
        };
        let cols: Vec<&Float64Array> = (0..d).map(|i| batch.column(i + 1).as_primitive()).collect();
        let ys: Option<&Float64Array> = req.label.map(|_| batch.column(d + 1).as_primitive());
        let flag_at = d + 1 + usize::from(req.label.is_some());
        let flags: Option<&datafusion::arrow::array::BooleanArray> =
            req.holdout_column.map(|_| batch.column(flag_at).as_boolean());
        for (j, c) in cols.iter().enumerate() {
            nulls[j] += c.null_count();
        }
        if let Some(y) = ys {
            label_nulls += y.null_count();
        }
        if let Some(f) = flags {
            flag_nulls += f.null_count();
        }
        table_rows += batch.num_rows();
        let row = Row { cols: &cols, ys, flags };
        match req.sample {
            None => {
                for (r, &h) in hashes.iter().enumerate() {
                    kept.push(h, &row, r);
                }
            }
            Some(n) => {
                let sample_hashes = sample_hashes.as_deref().unwrap_or(&hashes);
                for (r, (&h, &sh)) in hashes.iter().zip(sample_hashes).enumerate() {
                    if kept.len() < n {
                        heap.push((sh, kept.len()));
                        kept.push(h, &row, r);
                    } else if let Some(mut top) = heap.peek_mut()
                        && sh < top.0
                    {
                        // Replace the largest kept sample hash in place
                        // (one sift down, where a pop and a push took two).
                        let at = top.1;
                        *top = (sh, at);
                        drop(top);
                        kept.set(at, h, &row, r);
                    }
                }
            }
        }
    }
    if table_rows == 0 {
        return Err(Error::step(
            step,
            format!("table \"{}\" is empty: nothing to fit on", req.table),
        ));
    }
    if let Some(label) = req.label
        && label_nulls > 0
    {
        return Err(Error::step(
            step,
            format!(
                "label \"{label}\" of \"{}\" is null in {label_nulls} of {table_rows} rows",
                req.table
            ),
        ));
    }
    if let Some(h) = req.holdout_column
        && flag_nulls > 0
    {
        return Err(Error::step(
            step,
            format!(
                "holdout column \"{h}\" of \"{}\" is null in {flag_nulls} of {table_rows} rows",
                req.table
            ),
        ));
    }
    if req.nulls == NullPolicy::Error {
        let bad: Vec<String> = req
            .features
            .iter()
            .zip(&nulls)
            .filter(|(_, n)| **n > 0)
            .map(|(f, n)| format!("\"{f}\" has {n} nulls"))
            .collect();
        if !bad.is_empty() {
            return Err(Error::step(
                step,
                format!(
                    "null feature values in \"{}\" ({table_rows} rows): {}; set nulls: drop or nulls: mean to fit anyway",
                    req.table,
                    bad.join(", ")
                ),
            ));
        }
    }
    // Rows in (id hash, values, label, flag) order: a parallel scan delivers
    // batches in any order, and fits (k-means++ picks rows by position)
    // must not depend on it. Sorted by hash first (fast, on primitives);
    // rows with equal hashes (the same id twice) by the rest.
    let order = sorted_by_hash((0..kept.len()).map(|i| kept.hash(i)).collect());
    let mut order: Vec<usize> = order.into_iter().map(|(_, i)| i).collect();
    let mut at = 0;
    while at < order.len() {
        let h = kept.hash(order[at]);
        let mut end = at + 1;
        while end < order.len() && kept.hash(order[end]) == h {
            end += 1;
        }
        if end - at > 1 {
            order[at..end].sort_unstable_by(|&a, &b| kept.cmp(a, b));
        }
        at = end;
    }
    // Holdout rows are evaluated in the plan, not fitted on: leave them out.
    let sampled = order.len();
    match (req.holdout_column, req.holdout) {
        (Some(_), _) => order.retain(|&i| !kept.flag(i)),
        (None, Some(f)) => order.retain(|&i| !in_holdout(kept.hash(i), f)),
        (None, None) => {}
    }
    let held_out = sampled - order.len();
    let fill = match req.nulls {
        NullPolicy::Mean => {
            // The mean of the fitting rows.
            let mut sums = vec![0.0; d];
            let mut counts = vec![0usize; d];
            for &i in &order {
                for j in 0..d {
                    if kept.valid(i, j) {
                        sums[j] += kept.val(i, j);
                        counts[j] += 1;
                    }
                }
            }
            Some(
                sums.iter()
                    .zip(&counts)
                    .map(|(s, c)| if *c > 0 { s / *c as f64 } else { 0.0 })
                    .collect::<Vec<f64>>(),
            )
        }
        _ => None,
    };
    let before = order.len();
    if req.nulls == NullPolicy::Drop {
        order.retain(|&i| (0..d).all(|j| kept.valid(i, j)));
    }
    let dropped = before - order.len();
    if order.is_empty() && dropped > 0 {
        return Err(Error::step(
            step,
            format!("no rows of \"{}\" are left to fit on after dropping nulls", req.table),
        ));
    }
    let (x, y, hashes) = kept
        .gather(
            &order,
            fill.as_deref(),
            req.label.is_some(),
            super::btyd::fit::fit_threads(),
        )
        .map_err(|(j, v)| {
            Error::step(
                step,
                format!("feature \"{}\" has a non-finite value ({v})", req.features[j]),
            )
        })?;
    Ok(Features {
        x,
        y,
        hashes,
        table_rows,
        sampled,
        held_out,
        dropped,
        fill,
    })
}

/// One batch's columns, as [`Kept`] reads a row from them.
struct Row<'a> {
    cols: &'a [&'a Float64Array],
    ys: Option<&'a Float64Array>,
    flags: Option<&'a datafusion::arrow::array::BooleanArray>,
}

/// Rows from which [`Kept::gather`] runs on all cores.
const GATHER_PARALLEL_ROWS: usize = 1 << 15;

/// `(hash, index)` pairs in ascending order, as `sort_unstable` orders them:
/// counted into buckets by the hashes' top bits (buckets in order), then
/// each bucket (a few pairs: the hashes are uniform) sorted. Linear time
/// for the id hashes; equal hashes all land in one bucket, sorted as before.
fn sorted_by_hash(hashes: Vec<u64>) -> Vec<(u64, usize)> {
    let n = hashes.len();
    let bits = (usize::BITS - n.leading_zeros()).saturating_sub(2).clamp(1, 20);
    let bucket = |h: u64| (h >> (64 - bits)) as usize;
    let mut starts = vec![0usize; (1 << bits) + 1];
    for &h in &hashes {
        starts[bucket(h) + 1] += 1;
    }
    for b in 1..starts.len() {
        starts[b] += starts[b - 1];
    }
    let mut at = starts.clone();
    let mut out = vec![(0u64, 0usize); n];
    for (i, &h) in hashes.iter().enumerate() {
        let b = bucket(h);
        out[at[b]] = (h, i);
        at[b] += 1;
    }
    for w in starts.windows(2) {
        if w[1] - w[0] > 1 {
            out[w[0]..w[1]].sort_unstable();
        }
    }
    out
}

/// The rows kept for fitting, flat (see [`collect_features`]).
struct Kept {
    /// Features a row.
    d: usize,
    /// Row i is `records[i * stride..(i + 1) * stride]`: its hash, its
    /// label's bits, a word of flags (bit 0 the label is valid, bit 1 the
    /// holdout flag), [`Kept::w`] words of the features' validity bits, then the
    /// `d` features' bits. One record a row, so that reading the rows in
    /// hash order (at random) reads a few adjacent cache lines a row, not
    /// one line in each of five arrays.
    records: Vec<u64>,
}

impl Kept {
    fn new(d: usize) -> Kept {
        Kept { d, records: Vec::new() }
    }

    /// Words of validity bits a row.
    fn w(&self) -> usize {
        self.d.div_ceil(64)
    }

    fn stride(&self) -> usize {
        3 + self.w() + self.d
    }

    fn len(&self) -> usize {
        self.records.len() / self.stride()
    }

    fn record(&self, i: usize) -> &[u64] {
        let s = self.stride();
        &self.records[i * s..(i + 1) * s]
    }

    fn hash(&self, i: usize) -> u64 {
        self.records[i * self.stride()]
    }

    fn flag(&self, i: usize) -> bool {
        Kept::flag_in(self.record(i))
    }

    fn valid(&self, i: usize, j: usize) -> bool {
        Kept::valid_in(self.record(i), j)
    }

    fn val(&self, i: usize, j: usize) -> f64 {
        Kept::val_in(self.record(i), self.w(), j)
    }

    fn valid_in(rec: &[u64], j: usize) -> bool {
        rec[3 + j / 64] >> (j % 64) & 1 != 0
    }

    fn val_in(rec: &[u64], w: usize, j: usize) -> f64 {
        f64::from_bits(rec[3 + w + j])
    }

    fn y_in(rec: &[u64]) -> Option<f64> {
        (rec[2] & 1 != 0).then(|| f64::from_bits(rec[1]))
    }

    fn flag_in(rec: &[u64]) -> bool {
        rec[2] & 2 != 0
    }

    /// Writes row `r` of `row` into `rec`.
    fn fill(rec: &mut [u64], w: usize, h: u64, row: &Row, r: usize) {
        rec[0] = h;
        let y = row.ys.and_then(|c| c.is_valid(r).then(|| c.value(r)));
        rec[1] = y.map_or(0, f64::to_bits);
        rec[2] = u64::from(y.is_some()) | u64::from(row.flags.is_some_and(|f| f.is_valid(r) && f.value(r))) << 1;
        rec[3..3 + w].fill(0);
        for (j, c) in row.cols.iter().enumerate() {
            rec[3 + j / 64] |= u64::from(c.is_valid(r)) << (j % 64);
            rec[3 + w + j] = c.value(r).to_bits();
        }
    }

    /// Room for `rows` more records.
    fn reserve(&mut self, rows: usize) {
        self.records.reserve(rows.saturating_mul(self.stride()));
    }

    /// The rows `order` (record indices) as the fitting matrix (nulls
    /// replaced by `fill`, else NaN), with their labels (if `labels`) and
    /// hashes, on `threads` threads for many rows (each its contiguous run
    /// of output rows: the same matrix for any thread count). In hash order
    /// the records are read at random: each is one record, a few adjacent
    /// cache lines.
    ///
    /// # Errors
    /// `(feature, value)` of the first non-finite value (in output order).
    #[allow(clippy::type_complexity)]
    fn gather(
        &self,
        order: &[usize],
        fill: Option<&[f64]>,
        labels: bool,
        threads: usize,
    ) -> std::result::Result<(Array2<f64>, Option<Vec<f64>>, Vec<u64>), (usize, f64)> {
        let (n, d, w) = (order.len(), self.d, self.w());
        let mut x = vec![0.0; n * d];
        let mut y = vec![0.0; if labels { n } else { 0 }];
        let mut hashes = vec![0u64; n];
        let fill_part = |order: &[usize], x: &mut [f64], y: &mut [f64], hashes: &mut [u64]| {
            for (r, &i) in order.iter().enumerate() {
                let rec = self.record(i);
                for j in 0..d {
                    let v = match (Kept::valid_in(rec, j), fill) {
                        (true, _) => Kept::val_in(rec, w, j),
                        (false, Some(f)) => f[j],
                        (false, None) => f64::NAN,
                    };
                    if !v.is_finite() {
                        return Err((j, v));
                    }
                    x[r * d + j] = v;
                }
                if labels {
                    // A label is never null here (nulls are refused first).
                    y[r] = Kept::y_in(rec).unwrap_or(f64::NAN);
                }
                hashes[r] = rec[0];
            }
            Ok(())
        };
        let threads = if n < GATHER_PARALLEL_ROWS { 1 } else { threads };
        let per = n.div_ceil(threads.max(1)).max(1);
        let results: Vec<std::result::Result<(), (usize, f64)>> = if threads <= 1 {
            vec![fill_part(order, &mut x, &mut y, &mut hashes)]
        } else {
            let y_per = if labels { per } else { 0 };
            std::thread::scope(|s| {
                let mut ys = y.chunks_mut(y_per.max(1));
                let handles: Vec<_> = order
                    .chunks(per)
                    .zip(x.chunks_mut(per * d.max(1)))
                    .zip(hashes.chunks_mut(per))
                    .map(|((o, xp), hp)| {
                        let yp: &mut [f64] = if labels { ys.next().unwrap_or_default() } else { &mut [] };
                        let fill_part = &fill_part;
                        s.spawn(move || fill_part(o, xp, yp, hp))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect()
            })
        };
        // The first part's error is the first row's.
        results.into_iter().collect::<std::result::Result<Vec<()>, _>>()?;
        let x = Array2::from_shape_vec((n, d), x).map_err(|_| (0, f64::NAN))?;
        Ok((x, labels.then_some(y), hashes))
    }

    fn push(&mut self, h: u64, row: &Row, r: usize) {
        let s = self.stride();
        let at = self.records.len();
        self.records.resize(at + s, 0);
        let w = self.w();
        Kept::fill(&mut self.records[at..], w, h, row, r);
    }

    fn set(&mut self, at: usize, h: u64, row: &Row, r: usize) {
        let s = self.stride();
        let w = self.w();
        Kept::fill(&mut self.records[at * s..(at + 1) * s], w, h, row, r);
    }

    /// Rows by values (nulls as NaN, total order), then label, then flag.
    fn cmp(&self, a: usize, b: usize) -> std::cmp::Ordering {
        let (ra, rb, w) = (self.record(a), self.record(b), self.w());
        let value = |rec: &[u64], j: usize| {
            if Kept::valid_in(rec, j) {
                Kept::val_in(rec, w, j)
            } else {
                f64::NAN
            }
        };
        (0..self.d)
            .map(|j| value(ra, j).total_cmp(&value(rb, j)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| {
                Kept::y_in(ra)
                    .unwrap_or(f64::NAN)
                    .total_cmp(&Kept::y_in(rb).unwrap_or(f64::NAN))
            })
            .then_with(|| Kept::flag_in(ra).cmp(&Kept::flag_in(rb)))
    }
}

/// Per-feature mean and population standard deviation (ddof = 0): the
/// z-scoring every stage fits on; part of the fitted model.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    pub means: Vec<f64>,
    pub stds: Vec<f64>,
}

impl Standardizer {
    /// Fits on the rows of `x`.
    ///
    /// # Errors
    /// A constant column, named (it cannot be standardized and carries no
    /// information).
    pub fn fit(step: &str, x: &Array2<f64>, names: &[String]) -> Result<Standardizer> {
        let n = x.nrows() as f64;
        let mut means = Vec::with_capacity(x.ncols());
        let mut stds = Vec::with_capacity(x.ncols());
        for (j, name) in names.iter().enumerate() {
            let c = x.column(j);
            let m = c.sum() / n;
            let var = c.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n;
            let s = var.sqrt();
            if !(s > 1e-12 * m.abs().max(1.0)) {
                return Err(Error::step(
                    step,
                    format!(
                        "feature \"{name}\" is constant ({m}) on the fitting rows: it cannot be standardized; remove it"
                    ),
                ));
            }
            means.push(m);
            stds.push(s);
        }
        Ok(Standardizer { means, stds })
    }

    /// `x` z-scored.
    pub fn transform(&self, x: &Array2<f64>) -> Array2<f64> {
        self.transform_into(x.clone())
    }

    /// `x` z-scored in place.
    pub fn transform_into(&self, mut z: Array2<f64>) -> Array2<f64> {
        for (j, (m, s)) in self.means.iter().zip(&self.stds).enumerate() {
            z.column_mut(j).mapv_inplace(|v| (v - m) / s);
        }
        z
    }

    /// The z-score of feature `j` as an expression over the input column.
    pub fn expr(&self, j: usize, x: Expr) -> Expr {
        (x - lit(self.means[j])) / lit(self.stds[j])
    }
}

/// The feature columns as the model reads them, in original units, with
/// nulls filled by `fill` (policy `mean`) when given.
pub fn feature_exprs(features: &[String], fill: Option<&[f64]>) -> Vec<Expr> {
    features
        .iter()
        .enumerate()
        .map(|(j, f)| match fill {
            Some(fill) => coalesce(vec![f64_col(f), lit(fill[j])]),
            None => f64_col(f),
        })
        .collect()
}

/// The name of the key-hash function in the engine's registry.
pub const KEY_HASH: &str = "crmflow_key_hash";

/// `crmflow_key_hash(key, seed)`: [`crate::hash::key_hashes`] as a stateless
/// scalar function (UInt64), so a plan can select the same rows the fit
/// did (e.g. the holdout of `predict`) wherever it runs.
pub fn key_hash_udf() -> datafusion::logical_expr::ScalarUDF {
    datafusion::logical_expr::ScalarUDF::from(KeyHash {
        signature: datafusion::logical_expr::Signature::any(2, datafusion::logical_expr::Volatility::Immutable),
    })
}

/// Whether a key hash falls in the holdout of fraction `f`: the first
/// `f` of the hash range, the rule of [`in_holdout`], as an expression.
pub fn holdout_expr(id: &str, seed: u64, f: f64) -> Expr {
    datafusion::logical_expr::cast(
        key_hash_udf().call(vec![column(id), lit(seed)]),
        datafusion::arrow::datatypes::DataType::Float64,
    )
    .lt(lit(f * 18_446_744_073_709_551_616.0))
}

/// Whether a row with id hash `h` is in the holdout of fraction `f`.
pub fn in_holdout(h: u64, f: f64) -> bool {
    (h as f64) < f * 18_446_744_073_709_551_616.0
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct KeyHash {
    signature: datafusion::logical_expr::Signature,
}

impl datafusion::logical_expr::ScalarUDFImpl for KeyHash {
    fn name(&self) -> &str {
        KEY_HASH
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(
        &self,
        _args: &[datafusion::arrow::datatypes::DataType],
    ) -> datafusion::error::Result<datafusion::arrow::datatypes::DataType> {
        Ok(datafusion::arrow::datatypes::DataType::UInt64)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        use datafusion::logical_expr::ColumnarValue;
        let seed = match &args.args[1] {
            ColumnarValue::Scalar(v) => match v.cast_to(&datafusion::arrow::datatypes::DataType::UInt64)? {
                datafusion::common::ScalarValue::UInt64(Some(s)) => s,
                other => return datafusion::common::exec_err!("{KEY_HASH}: the seed must be a number, got {other}"),
            },
            ColumnarValue::Array(_) => return datafusion::common::exec_err!("{KEY_HASH}: the seed must be a literal"),
        };
        let keys = args.args[0].to_array(args.number_rows)?;
        let hashes = crate::hash::key_hashes(keys.as_ref(), seed);
        Ok(ColumnarValue::Array(std::sync::Arc::new(
            datafusion::arrow::array::UInt64Array::from(hashes),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    /// 70 features (two words of validity bits a row) with nulls in both
    /// words, a label and a holdout column, over three batches: the rows
    /// come back in id-hash order with their own values, nulls filled with
    /// the mean of the fitting rows, the label and hashes beside them, and
    /// the holdout rows left out; then a sample keeps the smallest sample
    /// hashes, `drop` leaves out every row with a null and `error` counts
    /// them.
    #[tokio::test]
    async fn rows_come_back_whole_in_hash_order_across_validity_words() {
        let d = 70;
        let n = 60i64;
        // Nulls only in rows of ids divisible by 3: for even ids in both
        // validity words, for most odd ones (3, 9, 15, ...) in the second only.
        let value = |id: i64, j: usize| {
            if id % 3 == 0 && (id + j as i64) % 7 == 0 && (j >= 64 || id % 2 == 0) {
                None
            } else {
                Some(id as f64 * 100.0 + j as f64)
            }
        };
        let holdout = |id: i64| id % 5 == 0;
        let mut fields = vec![Field::new("id", DataType::Int64, false)];
        fields.extend((0..d).map(|j| Field::new(format!("f{j}"), DataType::Float64, true)));
        fields.push(Field::new("y", DataType::Float64, false));
        fields.push(Field::new("h", DataType::Boolean, false));
        let schema = Arc::new(Schema::new(fields));
        let batch = |ids: std::ops::Range<i64>| {
            let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(ids.clone()))];
            cols.extend((0..d).map(|j| {
                Arc::new(Float64Array::from(
                    ids.clone().map(|id| value(id, j)).collect::<Vec<_>>(),
                )) as ArrayRef
            }));
            cols.push(Arc::new(Float64Array::from_iter_values(
                ids.clone().map(|id| -(id as f64)),
            )));
            cols.push(Arc::new(BooleanArray::from(
                ids.clone().map(holdout).collect::<Vec<_>>(),
            )));
            RecordBatch::try_new(schema.clone(), cols).unwrap()
        };
        let table = datafusion::datasource::MemTable::try_new(
            schema.clone(),
            vec![vec![batch(31..61), batch(1..11)], vec![batch(11..31)]],
        )
        .unwrap();
        let ctx = SessionContext::new();
        ctx.register_table("t", Arc::new(table)).unwrap();
        let features: Vec<String> = (0..d).map(|j| format!("f{j}")).collect();
        let request = |nulls: NullPolicy, sample: Option<usize>| FeatureRequest {
            step: "s",
            table: "t",
            id: "id",
            features: &features,
            label: Some("y"),
            holdout_column: Some("h"),
            nulls,
            sample,
            seed: 9,
            sample_seed: 10,
            holdout: None,
        };
        let hash = |id: i64, seed: u64| crate::hash::key_hashes(&Int64Array::from(vec![id]), seed)[0];
        // By hand: the fitting rows in hash order, the column means over them.
        let check = |got: &Features, ids: &[i64], fill: &Option<Vec<f64>>| {
            let mut ids: Vec<i64> = ids.iter().copied().filter(|&id| !holdout(id)).collect();
            ids.sort_by_key(|&id| hash(id, 9));
            assert_eq!(got.hashes, ids.iter().map(|&id| hash(id, 9)).collect::<Vec<_>>());
            assert_eq!(
                got.y.as_ref().unwrap(),
                &ids.iter().map(|&id| -(id as f64)).collect::<Vec<_>>()
            );
            assert_eq!(got.x.dim(), (ids.len(), d));
            for (r, &id) in ids.iter().enumerate() {
                for j in 0..d {
                    let want = value(id, j).unwrap_or_else(|| fill.as_ref().unwrap()[j]);
                    assert_eq!(got.x[[r, j]], want, "id {id}, feature {j}");
                }
            }
        };
        // The column means over the fitting rows of these ids.
        let means = |ids: &[i64]| -> Vec<f64> {
            (0..d)
                .map(|j| {
                    let v: Vec<f64> = ids
                        .iter()
                        .filter(|&&id| !holdout(id))
                        .filter_map(|&id| value(id, j))
                        .collect();
                    v.iter().sum::<f64>() / v.len() as f64
                })
                .collect()
        };
        let all: Vec<i64> = (1..=n).collect();
        let got = collect_features(&ctx, &request(NullPolicy::Mean, None)).await.unwrap();
        assert_eq!(got.fill.as_ref().unwrap(), &means(&all));
        check(&got, &all, &Some(means(&all)));
        assert_eq!(
            (got.table_rows, got.sampled, got.held_out, got.dropped),
            (60, 60, 12, 0)
        );
        // A sample of 25: the ids with the 25 smallest hashes under the
        // sample seed.
        let mut by_sample = all.clone();
        by_sample.sort_by_key(|&id| hash(id, 10));
        let sampled = &by_sample[..25];
        let got = collect_features(&ctx, &request(NullPolicy::Mean, Some(25)))
            .await
            .unwrap();
        check(&got, sampled, &Some(means(sampled)));
        // `drop`: the sampled fitting rows without a null.
        let got = collect_features(&ctx, &request(NullPolicy::Drop, Some(25)))
            .await
            .unwrap();
        let whole: Vec<i64> = sampled
            .iter()
            .copied()
            .filter(|&id| (0..d).all(|j| value(id, j).is_some()))
            .collect();
        assert!(
            sampled
                .iter()
                .any(|&id| !holdout(id) && (0..64).all(|j| value(id, j).is_some()) && !whole.contains(&id)),
            "the sample has a fitting row with nulls in the second word only"
        );
        check(&got, &whole, &None);
        let fitting = sampled.iter().filter(|&&id| !holdout(id)).count();
        assert_eq!(got.dropped, fitting - got.x.nrows());
        assert!(got.dropped > 0 && got.x.nrows() > 0, "{} dropped", got.dropped);
        let counts: Vec<String> = (0..d)
            .map(|j| {
                format!(
                    "\"f{j}\" has {} nulls",
                    all.iter().filter(|&&id| value(id, j).is_none()).count()
                )
            })
            .collect();
        assert_eq!(
            [&counts[0], &counts[3], &counts[64]],
            ["\"f0\" has 1 nulls", "\"f3\" has 2 nulls", "\"f64\" has 3 nulls"]
        );
        let err = collect_features(&ctx, &request(NullPolicy::Error, Some(25)))
            .await
            .unwrap_err();
        assert_eq!(
            err.render(),
            format!(
                "step \"s\": null feature values in \"t\" (60 rows): {}; set nulls: drop or nulls: mean to fit anyway",
                counts.join(", ")
            )
        );
    }

    #[test]
    fn hashes_sorted_by_buckets_equal_a_comparison_sort() {
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            h = crate::hash::splitmix64(h);
            h
        };
        // Uniform hashes; some repeated; all the same; few; none.
        let uniform: Vec<u64> = (0..100_000).map(|_| next()).collect();
        let mut repeated = uniform[..5_000].to_vec();
        repeated.extend_from_within(..2_000);
        repeated.extend(std::iter::repeat_n(7u64, 300));
        for hashes in [
            uniform,
            repeated,
            vec![42; 1_000],
            vec![3, 1, 2],
            vec![u64::MAX, 0],
            vec![],
        ] {
            let mut want: Vec<(u64, usize)> = hashes.iter().copied().zip(0..).collect();
            want.sort_unstable();
            assert_eq!(sorted_by_hash(hashes.clone()), want, "{} hashes", hashes.len());
        }
    }

    /// Rows with their values (a null in some), label and hash, gathered in
    /// a shuffled order on 1, 2 and 3 threads: the same matrix, labels and
    /// hashes, each row its own record's; a non-finite value is reported as
    /// the first in output order whichever thread meets it.
    #[test]
    fn gathered_rows_are_the_same_on_any_thread_count() {
        let (n, d) = (GATHER_PARALLEL_ROWS + 1_001, 3);
        let cols: Vec<Float64Array> = (0..d)
            .map(|j| {
                Float64Array::from(
                    (0..n)
                        .map(|i| (i % 97 != 5 + j).then_some(i as f64 * 10.0 + j as f64))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        let refs: Vec<&Float64Array> = cols.iter().collect();
        let ys = Float64Array::from_iter_values((0..n).map(|i| -(i as f64)));
        let row = Row {
            cols: &refs,
            ys: Some(&ys),
            flags: None,
        };
        let mut kept = Kept::new(d);
        for r in 0..n {
            kept.push(1_000_000 + r as u64, &row, r);
        }
        let order: Vec<usize> = (0..n).map(|i| (i * 7_919) % n).collect();
        let fill = [-1.0, -2.0, -3.0];
        let one = kept.gather(&order, Some(&fill), true, 1).unwrap();
        for (r, &i) in order.iter().enumerate() {
            for j in 0..d {
                let want = if i % 97 == 5 + j {
                    fill[j]
                } else {
                    i as f64 * 10.0 + j as f64
                };
                assert_eq!(one.0[[r, j]], want, "row {r} (record {i}) feature {j}");
            }
            assert_eq!(one.1.as_ref().unwrap()[r], -(i as f64));
            assert_eq!(one.2[r], 1_000_000 + i as u64);
        }
        for threads in [2, 3] {
            assert_eq!(
                kept.gather(&order, Some(&fill), true, threads).unwrap(),
                one,
                "{threads} threads"
            );
        }
        // Without a fill the nulls are NaN: the first in output order is
        // the error on any thread count, though every thread meets some
        // (the feature tells which row: rows i % 97 = 5 + j are null in j).
        let first = order.iter().find(|&&i| (5..5 + d).contains(&(i % 97))).unwrap();
        for threads in [1, 2, 3] {
            let got = kept
                .gather(&order, None, false, threads)
                .map(|_| ())
                .map_err(|(j, v)| (j, v.is_nan()));
            assert_eq!(got, Err((first % 97 - 5, true)), "{threads} threads");
        }
    }
}
