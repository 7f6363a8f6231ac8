//! What the HTML run report shows of each stage step, read from the step's
//! own tables right after it ran: its small extra tables (models, metrics,
//! profiles, k selection, calibration — any table it makes beside its
//! scored one, at most [`MAX_ROWS`] rows each), histograms of the scored
//! table's key columns and the RFM grid, both aggregated by DataFusion (only
//! bin counts come back), and the mean standardized features per segment.
//!
//! Nothing here fails a run: what cannot be read is noted in the story.

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::functions::core::expr_fn::least;
use datafusion::functions::math::expr_fn::{floor, isnan};
use datafusion::functions_aggregate::expr_fn::{avg, count, max, min, stddev_pop, sum};
use datafusion::logical_expr::{cast as cast_expr, lit, when};
use datafusion::prelude::{DataFrame, col};

use crate::engine::Engine;
use crate::engine::expr::f64_col;

/// The most rows of an extra table the report keeps.
pub const MAX_ROWS: usize = 200;

/// Bins of a histogram.
pub const BINS: usize = 30;

/// What the report shows, step by step.
#[derive(Debug, Default, Clone)]
pub struct Story {
    pub steps: Vec<StepStory>,
}

/// One stage step.
#[derive(Debug, Default, Clone)]
pub struct StepStory {
    pub step: String,
    pub kind: String,
    /// The extra tables, in the step's output order.
    pub tables: Vec<Table>,
    pub histograms: Vec<Histogram>,
    /// Segment × feature: (segment mean − overall mean) / overall sd.
    pub standardized: Option<Table>,
    /// (r_score, fm, rfm_segment, customers), for an RFM table.
    pub rfm_grid: Vec<(i32, i32, String, i64)>,
    /// What could not be read.
    pub notes: Vec<String>,
}

/// A small table, with numbers kept as numbers.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
    /// More rows than [`MAX_ROWS`] were there.
    pub truncated: bool,
}

/// A value of a [`Table`].
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Num(f64),
    Bool(bool),
    Text(String),
}

impl Table {
    /// The index of column `name`.
    pub fn col(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// Column `name` as numbers (None for non-numbers).
    pub fn nums(&self, name: &str) -> Option<Vec<Option<f64>>> {
        let j = self.col(name)?;
        Some(
            self.rows
                .iter()
                .map(|r| match &r[j] {
                    Cell::Num(v) => Some(*v),
                    _ => None,
                })
                .collect(),
        )
    }

    /// Column `name` as text (numbers formatted).
    pub fn texts(&self, name: &str) -> Option<Vec<String>> {
        let j = self.col(name)?;
        Some(self.rows.iter().map(|r| r[j].to_string()).collect())
    }
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => f.write_str(""),
            Cell::Num(v) => f.write_str(&number(*v)),
            Cell::Bool(b) => write!(f, "{b}"),
            Cell::Text(s) => f.write_str(s),
        }
    }
}

/// A number as the report shows it: integers as they are, others to 4
/// significant digits (at least 2 decimals past 1,000).
pub fn number(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "∞".into() } else { "−∞".into() };
    }
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.2}")
    } else if a >= 1e-3 {
        let digits = 3 - a.log10().floor() as i32;
        format!("{v:.*}", digits.max(0) as usize)
    } else {
        format!("{v:.3e}")
    }
}

/// A histogram of one column, from DataFusion aggregates.
#[derive(Debug, Clone)]
pub struct Histogram {
    pub column: String,
    /// Finite values counted.
    pub count: u64,
    /// Rows without a finite value.
    pub missing: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// [`BINS`] equal-width bins from min to max (the last one closed).
    pub bins: Vec<u64>,
}

/// The columns of a stage's scored table worth a histogram, by kind.
fn histogram_columns(kind: &str) -> &'static [&'static str] {
    match kind {
        "clv" => &["clv", "p_alive", "expected_purchases"],
        "predict" => &["prediction"],
        _ => &[],
    }
}

/// Reads what the report shows of a stage step whose tables are registered.
pub async fn collect(engine: &Engine, step: &str, kind: &str, outputs: &[String]) -> StepStory {
    let mut story = StepStory {
        step: step.to_string(),
        kind: kind.to_string(),
        ..StepStory::default()
    };
    let ctx = engine.context();
    for name in outputs.iter().skip(1) {
        match small_table(ctx, name).await {
            Ok(t) => story.tables.push(t),
            Err(e) => story.notes.push(format!("table {name} could not be read: {e}")),
        }
    }
    let Some(main) = outputs.first() else {
        return story;
    };
    let scored = match ctx.table(main.as_str()).await {
        Ok(df) => df,
        Err(e) => {
            story.notes.push(format!("table {main} could not be read: {e}"));
            return story;
        }
    };
    let schema: Schema = scored.schema().as_arrow().clone();
    let numeric = |c: &str| schema.field_with_name(c).is_ok_and(|f| f.data_type().is_numeric());
    let wanted: Vec<&str> = histogram_columns(kind).iter().copied().filter(|c| numeric(c)).collect();
    if !wanted.is_empty() {
        match histograms(scored.clone(), &wanted).await {
            Ok(h) => story.histograms = h,
            Err(e) => story.notes.push(format!("histograms of {main}: {e}")),
        }
    }
    if ["r_score", "f_score", "m_score"].iter().all(|c| numeric(c)) && schema.field_with_name("rfm_segment").is_ok() {
        match rfm_grid(scored.clone()).await {
            Ok(g) => story.rfm_grid = g,
            Err(e) => story.notes.push(format!("RFM grid of {main}: {e}")),
        }
    }
    let profile = story
        .tables
        .iter()
        .find(|t| t.name == format!("{step}_profile"))
        .cloned();
    if let Some(p) = profile
        && kind == "segment"
    {
        match standardized(scored, &p, &schema).await {
            Ok(t) => story.standardized = t,
            Err(e) => story.notes.push(format!("standardized profile of {step}: {e}")),
        }
    }
    story
}

async fn small_table(ctx: &datafusion::prelude::SessionContext, name: &str) -> datafusion::error::Result<Table> {
    let batches = ctx.table(name).await?.limit(0, Some(MAX_ROWS + 1))?.collect().await?;
    let mut t = to_table(name, &batches)?;
    t.truncated = t.rows.len() > MAX_ROWS;
    t.rows.truncate(MAX_ROWS);
    Ok(t)
}

/// Batches as a [`Table`]: numbers as f64, Booleans, the rest as text.
pub fn to_table(name: &str, batches: &[RecordBatch]) -> datafusion::error::Result<Table> {
    let columns: Vec<String> = match batches.first() {
        Some(b) => b.schema().fields().iter().map(|f| f.name().clone()).collect(),
        None => vec![],
    };
    let mut rows = Vec::new();
    let opts = FormatOptions::default();
    for b in batches {
        let mut cols: Vec<Vec<Cell>> = Vec::new();
        for a in b.columns() {
            let t = a.data_type();
            let cells: Vec<Cell> = if t.is_numeric() {
                let f = cast(a, &DataType::Float64)?;
                let f = f
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::Float64Array>()
                    .expect("cast to Float64");
                (0..f.len())
                    .map(|i| {
                        if f.is_valid(i) {
                            Cell::Num(f.value(i))
                        } else {
                            Cell::Null
                        }
                    })
                    .collect()
            } else if t == &DataType::Boolean {
                let v = a
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::BooleanArray>()
                    .expect("Boolean");
                (0..v.len())
                    .map(|i| {
                        if v.is_valid(i) {
                            Cell::Bool(v.value(i))
                        } else {
                            Cell::Null
                        }
                    })
                    .collect()
            } else {
                let fmt = ArrayFormatter::try_new(a.as_ref(), &opts)?;
                (0..a.len())
                    .map(|i| {
                        if a.is_valid(i) {
                            Cell::Text(fmt.value(i).to_string())
                        } else {
                            Cell::Null
                        }
                    })
                    .collect()
            };
            cols.push(cells);
        }
        for i in 0..b.num_rows() {
            rows.push(cols.iter().map(|c| c[i].clone()).collect());
        }
    }
    Ok(Table {
        name: name.to_string(),
        columns,
        rows,
        truncated: false,
    })
}

fn first_f64(batches: &[RecordBatch], j: usize) -> Option<f64> {
    let b = batches.iter().find(|b| b.num_rows() > 0)?;
    let a = cast(b.column(j), &DataType::Float64).ok()?;
    let a = a.as_any().downcast_ref::<datafusion::arrow::array::Float64Array>()?;
    a.is_valid(0).then(|| a.value(0))
}

/// The histogram of one column: [`histograms`].
///
/// # Errors
/// A query failure.
pub async fn histogram(df: DataFrame, c: &str) -> datafusion::error::Result<Histogram> {
    let mut h = histograms(df, &[c]).await?;
    Ok(h.remove(0))
}

/// Histograms of `columns` in two scans of `df`: count, min, max and mean
/// of each column's finite values in one aggregate, then every bin count
/// of every column in a second (`sum(CASE WHEN bin = k THEN 1 END)`); one
/// row comes back from each.
///
/// # Errors
/// A query failure.
pub async fn histograms(df: DataFrame, columns: &[&str]) -> datafusion::error::Result<Vec<Histogram>> {
    let finite = |c: &str| {
        let x = f64_col(c);
        x.clone().is_not_null().and(isnan(x).is_false())
    };
    let mut aggs = vec![count(lit(1)).alias("__rows")];
    for (j, c) in columns.iter().enumerate() {
        let v = when(finite(c), f64_col(c)).end()?;
        aggs.push(count(v.clone()).alias(format!("__n{j}")));
        aggs.push(min(v.clone()).alias(format!("__lo{j}")));
        aggs.push(max(v.clone()).alias(format!("__hi{j}")));
        aggs.push(avg(v).alias(format!("__mean{j}")));
    }
    let b = df.clone().aggregate(vec![], aggs)?.collect().await?;
    let total = first_f64(&b, 0).unwrap_or(0.0) as u64;
    let mut out: Vec<Histogram> = columns
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let n = first_f64(&b, 1 + 4 * j).unwrap_or(0.0) as u64;
            Histogram {
                column: c.to_string(),
                count: n,
                missing: total.saturating_sub(n),
                min: first_f64(&b, 2 + 4 * j).unwrap_or(f64::NAN),
                max: first_f64(&b, 3 + 4 * j).unwrap_or(f64::NAN),
                mean: first_f64(&b, 4 + 4 * j).unwrap_or(f64::NAN),
                bins: vec![0; BINS],
            }
        })
        .collect();
    // Each column's bin (null when not finite) in a projection, then one
    // aggregate of `bin = k` per bin.
    let mut projected = Vec::new();
    let mut bin_aggs = Vec::new();
    let mut slots = Vec::new();
    for (j, h) in out.iter().enumerate() {
        if h.count == 0 {
            continue;
        }
        let width = (h.max - h.min) / BINS as f64;
        let bin = if width > 0.0 {
            least(vec![
                cast_expr(floor((f64_col(&h.column) - lit(h.min)) / lit(width)), DataType::Int64),
                lit((BINS - 1) as i64),
            ])
        } else {
            lit(0i64)
        };
        let name = format!("__bin{j}");
        projected.push(when(finite(&h.column), bin).end()?.alias(&name));
        for k in 0..BINS {
            bin_aggs.push(sum(cast_expr(col(&name).eq(lit(k as i64)), DataType::Int64)).alias(format!("__b{j}_{k}")));
            slots.push((j, k));
        }
    }
    if !bin_aggs.is_empty() {
        let b = df.select(projected)?.aggregate(vec![], bin_aggs)?.collect().await?;
        for (i, (j, k)) in slots.into_iter().enumerate() {
            out[j].bins[k] = first_f64(&b, i).unwrap_or(0.0) as u64;
        }
    }
    Ok(out)
}

async fn rfm_grid(scored: DataFrame) -> datafusion::error::Result<Vec<(i32, i32, String, i64)>> {
    let fm = (col("f_score") + col("m_score")) / lit(2i64);
    let b = scored
        .aggregate(
            vec![
                cast_expr(col("r_score"), DataType::Int32).alias("r"),
                cast_expr(fm, DataType::Int32).alias("fm"),
                col("rfm_segment"),
            ],
            vec![count(lit(1)).alias("n")],
        )?
        .collect()
        .await?;
    let t = to_table("grid", &b)?;
    let mut out: Vec<(i32, i32, String, i64)> = t
        .rows
        .iter()
        .filter_map(|r| match (&r[0], &r[1], &r[2], &r[3]) {
            (Cell::Num(a), Cell::Num(f), seg, Cell::Num(n)) => Some((*a as i32, *f as i32, seg.to_string(), *n as i64)),
            _ => None,
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The profile's `mean_<feature>` columns standardized by the scored
/// table's overall mean and population sd of each feature (one aggregate).
async fn standardized(scored: DataFrame, profile: &Table, schema: &Schema) -> datafusion::error::Result<Option<Table>> {
    let features: Vec<String> = profile
        .columns
        .iter()
        .filter_map(|c| c.strip_prefix("mean_"))
        .filter(|f| schema.field_with_name(f).is_ok_and(|x| x.data_type().is_numeric()))
        .map(str::to_string)
        .collect();
    let Some(seg_col) = profile.col("segment") else {
        return Ok(None);
    };
    if features.is_empty() {
        return Ok(None);
    }
    let mut aggs = Vec::new();
    for f in &features {
        aggs.push(avg(f64_col(f)));
        aggs.push(stddev_pop(f64_col(f)));
    }
    let b = scored.aggregate(vec![], aggs)?.collect().await?;
    let mut columns = vec!["segment".to_string()];
    columns.extend(features.iter().cloned());
    let mut rows = Vec::new();
    for r in &profile.rows {
        let mut row = vec![r[seg_col].clone()];
        for (j, f) in features.iter().enumerate() {
            let mean = first_f64(&b, 2 * j);
            let sd = first_f64(&b, 2 * j + 1);
            let seg_mean = profile.col(&format!("mean_{f}")).map(|k| &r[k]);
            row.push(match (mean, sd, seg_mean) {
                (Some(m), Some(s), Some(Cell::Num(v))) if s > 0.0 => Cell::Num((v - m) / s),
                _ => Cell::Null,
            });
        }
        rows.push(row);
    }
    Ok(Some(Table {
        name: "standardized".into(),
        columns,
        rows,
        truncated: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_shown_as_documented() {
        assert_eq!(number(5000.0), "5000");
        assert_eq!(number(0.123456), "0.1235");
        assert_eq!(number(12.34567), "12.35");
        assert_eq!(number(1234.5678), "1234.57");
        assert_eq!(number(-0.5), "-0.5000");
        assert_eq!(number(0.00001234), "1.234e-5");
        assert_eq!(number(f64::NAN), "NaN");
    }

    #[tokio::test]
    async fn a_histogram_counts_every_finite_value_in_its_bin() {
        let ctx = datafusion::prelude::SessionContext::new();
        // 0..=30 and two rows without a value: 31 values, min 0, max 30,
        // width 1; 29 and 30 share the last (closed) bin.
        let df = ctx
            .sql(
                "SELECT CAST(v AS DOUBLE) AS x FROM unnest(range(0, 31)) AS t(v)
                 UNION ALL SELECT CAST(NULL AS DOUBLE) UNION ALL SELECT CAST('NaN' AS DOUBLE)",
            )
            .await
            .unwrap();
        let h = histogram(df, "x").await.unwrap();
        assert_eq!((h.count, h.missing, h.min, h.max, h.mean), (31, 2, 0.0, 30.0, 15.0));
        let mut want = vec![1u64; BINS];
        want[BINS - 1] = 2;
        assert_eq!(h.bins, want);
        // Two columns in the same two scans; a constant column fills bin 0.
        let df = ctx
            .sql("SELECT CAST(v AS DOUBLE) AS x, 7.0 AS y FROM unnest(range(0, 31)) AS t(v)")
            .await
            .unwrap();
        let hs = histograms(df, &["x", "y"]).await.unwrap();
        assert_eq!(hs[0].bins, want);
        let mut constant = vec![0u64; BINS];
        constant[0] = 31;
        assert_eq!(
            (hs[1].count, hs[1].min, hs[1].max, &hs[1].bins),
            (31, 7.0, 7.0, &constant)
        );
    }
}
