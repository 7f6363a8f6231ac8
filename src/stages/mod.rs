//! The analytics step kinds (`clv`, `segment`, `predict`) behind one trait.
//!
//! A stage reads its input tables through DataFusion, brings into memory
//! only what its model must fit on ([`collect_features`], optionally a
//! deterministic sample), and returns its outputs as DataFusion plans: a
//! fitted model is applied as an expression (or scalar UDF) inside the plan,
//! so scoring streams and runs wherever the engine runs. Helpers shared by
//! the stages live here: column checks, null handling, the stable hash used
//! for splits and samples, and small result tables.

pub mod bgnbd_math;
pub mod clv;
pub mod predict;
pub mod segment;

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::Column;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, cast as cast_expr};
use datafusion::prelude::{DataFrame, SessionContext};
use futures::StreamExt;
use ndarray::Array2;
use serde::Deserialize;

use crate::error::{Error, Result};

/// A step kind that fits a model on its inputs and makes tables.
#[allow(async_fn_in_trait)]
pub trait Stage {
    /// The tables it reads.
    fn inputs(&self) -> Vec<String>;

    /// Extra tables it makes beside the step's own, as name suffixes.
    fn extra_suffixes(&self) -> &'static [&'static str];

    /// Checks the input schemas and returns the schemas of the outputs (the
    /// step's own table first, then one per suffix) without reading rows.
    ///
    /// # Errors
    /// Every problem found, each naming the step and the column.
    async fn schemas(&self, step: &str, ctx: &SessionContext) -> std::result::Result<Vec<SchemaRef>, Vec<String>>;

    /// Fits and returns the output tables, in the order of [`Stage::schemas`].
    ///
    /// # Errors
    /// [`Error::Step`] naming the step (and the column, for bad data).
    async fn run(&self, step: &str, ctx: &SessionContext) -> Result<Vec<DataFrame>>;
}

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

/// The kinds of column a stage can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Number,
    Temporal,
    Date,
    Key,
}

impl Want {
    fn accepts(self, t: &DataType) -> bool {
        match self {
            Want::Number => t.is_numeric(),
            Want::Temporal => matches!(t, DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64),
            Want::Date => matches!(t, DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _)),
            Want::Key => t.is_integer() || matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Want::Number => "a number",
            Want::Temporal => "a timestamp or date",
            Want::Date => "a date",
            Want::Key => "an integer or string key",
        }
    }
}

/// The schema of a registered table, for stage checks.
///
/// # Errors
/// A message naming the step and table.
pub async fn table_schema(step: &str, ctx: &SessionContext, table: &str) -> std::result::Result<SchemaRef, String> {
    match ctx.table_provider(table).await {
        Ok(t) => Ok(t.schema()),
        Err(_) => Err(format!("step \"{step}\": table \"{table}\" is not available")),
    }
}

/// Checks that `column` exists in `table` with a type `want` accepts.
pub fn check_column(step: &str, table: &str, schema: &Schema, column: &str, want: Want) -> Option<String> {
    match schema.field_with_name(column) {
        Err(_) => Some(format!(
            "step \"{step}\": column \"{column}\" is not in \"{table}\" (columns: {})",
            crate::checks::column_list(schema)
        )),
        Ok(f) if !want.accepts(f.data_type()) => Some(format!(
            "step \"{step}\": column \"{column}\" of \"{table}\" is {}, expected {}",
            f.data_type(),
            want.describe()
        )),
        Ok(_) => None,
    }
}

/// A column reference that is never parsed (dots and capitals kept).
pub fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

/// `CAST(col AS DOUBLE)`.
pub fn f64_col(name: &str) -> Expr {
    cast_expr(column(name), DataType::Float64)
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
    /// Rows dropped for nulls.
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
    pub nulls: NullPolicy,
    /// Keep at most this many rows: those with the smallest id hashes.
    pub sample: Option<usize>,
    pub seed: u64,
}

/// Streams `table` once and keeps the id hash, features and label of each
/// row: all rows, or a deterministic sample (the `sample` rows with the
/// smallest id hash, kept in a bounded heap so memory stays bounded).
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
    let df = df.select(exprs).map_err(|e| Error::step(step, e))?;
    let d = req.features.len();
    let mut stream = df.execute_stream().await.map_err(|e| Error::step(step, e))?;
    // Kept rows, flat: row i has hash hashes_kept[i], features
    // vals[i*d..(i+1)*d] and label ys_kept[i]. A sample replaces rows in place.
    let mut hashes_kept: Vec<u64> = Vec::new();
    let mut vals: Vec<Option<f64>> = Vec::new();
    let mut ys_kept: Vec<Option<f64>> = Vec::new();
    let mut heap: std::collections::BinaryHeap<(u64, usize)> = std::collections::BinaryHeap::new();
    let mut nulls = vec![0usize; d];
    let mut label_nulls = 0usize;
    let mut table_rows = 0usize;
    let value = |c: &Float64Array, r: usize| if c.is_null(r) { None } else { Some(c.value(r)) };
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| Error::step(step, e))?;
        let hashes = crate::hash::key_hashes(batch.column(0).as_ref(), req.seed);
        let cols: Vec<&Float64Array> = (0..d).map(|i| batch.column(i + 1).as_primitive()).collect();
        let ys: Option<&Float64Array> = req.label.map(|_| batch.column(d + 1).as_primitive());
        for (j, c) in cols.iter().enumerate() {
            nulls[j] += c.null_count();
        }
        if let Some(y) = ys {
            label_nulls += y.null_count();
        }
        table_rows += batch.num_rows();
        for (r, &h) in hashes.iter().enumerate() {
            let slot = match req.sample {
                Some(n) if hashes_kept.len() >= n => match heap.peek() {
                    // Replace the largest kept hash if this one is smaller.
                    Some(&(top, at)) if h < top => {
                        heap.pop();
                        heap.push((h, at));
                        Some(at)
                    }
                    _ => None,
                },
                _ => {
                    let at = hashes_kept.len();
                    hashes_kept.push(h);
                    vals.extend(std::iter::repeat_n(None, d));
                    ys_kept.push(None);
                    if req.sample.is_some() {
                        heap.push((h, at));
                    }
                    Some(at)
                }
            };
            if let Some(at) = slot {
                hashes_kept[at] = h;
                for (j, c) in cols.iter().enumerate() {
                    vals[at * d + j] = value(c, r);
                }
                ys_kept[at] = ys.and_then(|c| value(c, r));
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
    // Rows in (id hash, values) order: a parallel scan delivers batches in
    // any order, and fits (k-means++ picks rows by position) must not depend
    // on it.
    let mut order: Vec<usize> = (0..hashes_kept.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        hashes_kept[a]
            .cmp(&hashes_kept[b])
            .then_with(|| cmp_rows(&vals[a * d..(a + 1) * d], &vals[b * d..(b + 1) * d]))
            .then_with(|| {
                ys_kept[a]
                    .unwrap_or(f64::NAN)
                    .total_cmp(&ys_kept[b].unwrap_or(f64::NAN))
            })
    });
    let fill = match req.nulls {
        NullPolicy::Mean => {
            let mut sums = vec![0.0; d];
            let mut counts = vec![0usize; d];
            for (i, v) in vals.iter().enumerate() {
                if let Some(v) = v {
                    sums[i % d] += v;
                    counts[i % d] += 1;
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
        order.retain(|&i| vals[i * d..(i + 1) * d].iter().all(Option::is_some));
    }
    let dropped = before - order.len();
    if order.is_empty() {
        return Err(Error::step(
            step,
            format!("no rows of \"{}\" are left to fit on after dropping nulls", req.table),
        ));
    }
    let mut x = Array2::<f64>::zeros((order.len(), d));
    let mut hashes = Vec::with_capacity(order.len());
    let mut y = req.label.map(|_| Vec::with_capacity(order.len()));
    for (r, &i) in order.iter().enumerate() {
        for j in 0..d {
            let v = match (vals[i * d + j], &fill) {
                (Some(v), _) => v,
                (None, Some(f)) => f[j],
                (None, None) => f64::NAN,
            };
            if !v.is_finite() {
                return Err(Error::step(
                    step,
                    format!("feature \"{}\" has a non-finite value ({v})", req.features[j]),
                ));
            }
            x[[r, j]] = v;
        }
        if let (Some(y), Some(l)) = (&mut y, ys_kept[i]) {
            y.push(l);
        }
        hashes.push(hashes_kept[i]);
    }
    Ok(Features {
        x,
        y,
        hashes,
        table_rows,
        dropped,
        fill,
    })
}

fn cmp_rows(a: &[Option<f64>], b: &[Option<f64>]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = x.unwrap_or(f64::NAN).total_cmp(&y.unwrap_or(f64::NAN));
        if o.is_ne() {
            return o;
        }
    }
    std::cmp::Ordering::Equal
}

/// Per-column mean and population standard deviation (ddof = 0).
///
/// # Errors
/// A constant column, named (it cannot be standardized and carries no
/// information).
pub fn standardize_params(step: &str, x: &Array2<f64>, names: &[String]) -> Result<(Vec<f64>, Vec<f64>)> {
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
    Ok((means, stds))
}

/// A two-column (name, value) table, the shape of `<step>_model` and
/// `<step>_metrics`.
///
/// # Errors
/// Only if Arrow rejects the batch (it cannot for these types).
pub fn name_value_table(ctx: &SessionContext, key: &str, rows: &[(String, f64)]) -> Result<DataFrame> {
    let schema = name_value_schema(key);
    let names = StringArray::from_iter_values(rows.iter().map(|r| r.0.as_str()));
    let values = Float64Array::from_iter_values(rows.iter().map(|r| r.1));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(names) as ArrayRef, Arc::new(values)])
        .map_err(|e| Error::step(key, e))?;
    mem_table(ctx, batch)
}

/// The schema of a (name, value) table; `key` is `name` or `metric`.
pub fn name_value_schema(key: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(key, DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
    ]))
}

/// A DataFrame over one in-memory batch.
///
/// # Errors
/// Only if DataFusion rejects the table (it cannot for one batch).
pub fn mem_table(ctx: &SessionContext, batch: RecordBatch) -> Result<DataFrame> {
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(|e| Error::step("mem_table", e))?;
    ctx.read_table(Arc::new(table)).map_err(|e| Error::step("mem_table", e))
}
