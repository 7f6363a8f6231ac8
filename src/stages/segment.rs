//! `segment:` k-means segmentation on z-scored features: linfa-clustering's
//! algorithm, run by [`super::kmeans`] on contiguous columns and both cores.
//!
//! Fits on the feature matrix (or a deterministic `fit_sample`), with
//! k-means++ initialisation, `n_init` seeded restarts, and either a fixed `k`
//! or the `k` in `{min, max}` with the best mean silhouette on a
//! deterministic sample. Segments are renumbered by size (largest = 0; ties
//! by centroid). Scoring is a DataFusion expression — squared distances to
//! each centroid in z-space, the nearest wins — so it streams with the plan.
//!
//! Outputs: `<step>` (the input rows + `segment` Int32 + `segment_distance`),
//! `<step>_profile` (segment, size, share, inertia, silhouette, the mean of
//! each feature in original units) and `<step>_k_selection` (k, silhouette,
//! inertia, chosen).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::functions::math::expr_fn::sqrt;
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::logical_expr::{Expr, cast as cast_expr, lit, when};
use datafusion::prelude::{DataFrame, col};
use ndarray::{Array2, ArrayView1};
use serde::Deserialize;

use super::features::{FeatureRequest, NullPolicy, Standardizer, collect_features, feature_exprs};
use super::kmeans::{self, Matrix};
use super::{Resolver, Stage, Want, check_column, table_schema};
use crate::engine::Engine;
use crate::engine::expr::{column, f64_col};
use crate::error::{Error, Problem, Result};
use crate::vars::Vars;

/// `segment:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSpec {
    pub input: String,
    #[serde(default = "super::default_id")]
    pub id: String,
    pub features: Vec<String>,
    pub k: KSpec,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default = "default_n_init")]
    pub n_init: usize,
    #[serde(default = "default_max_iter")]
    pub max_iter: u64,
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    pub fit_sample: Option<usize>,
    pub silhouette_sample: Option<usize>,
    #[serde(default)]
    pub nulls: NullPolicy,
}

fn default_seed() -> u64 {
    42
}
fn default_n_init() -> usize {
    10
}
fn default_max_iter() -> u64 {
    300
}
fn default_tolerance() -> f64 {
    1e-4
}

/// `k: 5` or `k: {min: 2, max: 10}`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(
    untagged,
    expecting = "k: a number of segments (k: 5) or a range to choose from by silhouette (k: {min: 2, max: 10})"
)]
pub enum KSpec {
    Fixed(usize),
    Range { min: usize, max: usize },
}

/// The largest silhouette sample (the score is quadratic in it).
const MAX_SILHOUETTE_SAMPLE: usize = 20_000;

/// A resolved `segment:` step.
#[derive(Debug, Clone)]
pub struct Segment {
    pub spec: SegmentSpec,
}

impl SegmentSpec {
    /// Binds vars in every string and checks the parameters that need no
    /// data.
    ///
    /// # Errors
    /// Every problem, each about the step and naming the key.
    pub fn resolve(mut self, step: &str, vars: &Vars) -> std::result::Result<Segment, Vec<Problem>> {
        let mut r = Resolver::new(step, vars);
        r.one("segment.input", &mut self.input);
        r.one("segment.id", &mut self.id);
        r.features("segment.features", &mut self.features);
        match self.k {
            KSpec::Fixed(k) if k < 1 => r.problem("segment.k must be at least 1".to_string()),
            KSpec::Range { min, max } if min < 2 || max < min => r.problem(format!(
                "segment.k range needs 2 <= min <= max (got min {min}, max {max})"
            )),
            _ => {}
        }
        if self.n_init == 0 {
            r.problem("segment.n_init must be at least 1".to_string());
        }
        if !(self.tolerance > 0.0) {
            r.problem("segment.tolerance must be positive".to_string());
        }
        if let Some(s) = self.silhouette_sample
            && !(2..=MAX_SILHOUETTE_SAMPLE).contains(&s)
        {
            r.problem(format!(
                "segment.silhouette_sample must be between 2 and {MAX_SILHOUETTE_SAMPLE}"
            ));
        }
        r.finish(Segment { spec: self })
    }
}

/// A fitted segmentation, in standardized space.
#[derive(Debug, Clone)]
pub struct Model {
    pub scaling: Standardizer,
    /// k × features, renumbered (row 0 = the largest segment).
    pub centroids: Array2<f64>,
    /// Null fills (policy `mean`), original units.
    pub fill: Option<Vec<f64>>,
}

/// The outcome of a fit on the fitting rows.
#[derive(Debug, Clone)]
pub struct FitReport {
    pub k: usize,
    pub inertia: f64,
    pub sizes: Vec<usize>,
    pub k_scores: Vec<(usize, f64, f64)>,
    pub silhouette_per_segment: Vec<f64>,
}

impl Stage for Segment {
    fn inputs(&self) -> Vec<String> {
        vec![self.spec.input.clone()]
    }

    fn extra_suffixes(&self) -> &'static [&'static str] {
        &["_profile", "_k_selection"]
    }

    async fn schemas(&self, step: &str, engine: &Engine) -> std::result::Result<Vec<SchemaRef>, Vec<Problem>> {
        let s = &self.spec;
        let schema = table_schema(step, engine, &s.input).await.map_err(|e| vec![e])?;
        let mut p: Vec<Problem> = Vec::new();
        p.extend(check_column(step, &s.input, &schema, &s.id, Want::Key));
        for f in &s.features {
            p.extend(check_column(step, &s.input, &schema, f, Want::Number));
        }
        for reserved in ["segment", "segment_distance"] {
            if schema.field_with_name(reserved).is_ok() {
                p.push(Problem::step(
                    step,
                    format!("input \"{}\" already has a column \"{reserved}\"", s.input),
                ));
            }
        }
        if !p.is_empty() {
            return Err(p);
        }
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("segment", DataType::Int32, true));
        fields.push(Field::new("segment_distance", DataType::Float64, true));
        Ok(vec![
            Arc::new(Schema::new(fields)),
            profile_schema(&s.features),
            k_selection_schema(),
        ])
    }

    async fn run(&self, step: &str, engine: &Engine) -> Result<Vec<DataFrame>> {
        let s = &self.spec;
        let ctx = engine.context();
        let feats = collect_features(
            ctx,
            &FeatureRequest {
                step,
                table: &s.input,
                id: &s.id,
                features: &s.features,
                label: None,
                holdout_column: None,
                nulls: s.nulls,
                sample: s.fit_sample,
                seed: s.seed,
                // No split: the silhouette sample is drawn from the fitting
                // rows by the same hash, which keeps it uniform.
                sample_seed: s.seed,
                holdout: None,
            },
        )
        .await?;
        let (model, report) = fit(step, s, &feats.x, &feats.hashes, feats.fill.clone())?;
        tracing::info!(
            step,
            k = report.k,
            rows = feats.x.nrows(),
            table_rows = feats.table_rows,
            dropped_for_nulls = feats.dropped,
            inertia = report.inertia,
            sizes = ?report.sizes,
            "k-means fitted"
        );
        let input = ctx.table(s.input.as_str()).await.map_err(|e| Error::step(step, e))?;
        let scored = score(input, &s.features, &model).map_err(|e| Error::step(step, e))?;
        let profile = profile(engine, step, scored.clone(), s, &report).await?;
        let k_sel = k_selection(engine, step, &report)?;
        Ok(vec![scored, profile, k_sel])
    }
}

/// Fits k-means on `x` (rows × features, original units): standardize,
/// choose k, fit, renumber by size.
///
/// # Errors
/// Fewer rows than k, a constant feature, or non-finite data.
pub fn fit(
    step: &str,
    s: &SegmentSpec,
    x: &Array2<f64>,
    hashes: &[u64],
    fill: Option<Vec<f64>>,
) -> Result<(Model, FitReport)> {
    fit_with_threads(step, s, x, hashes, fill, kmeans::default_threads())
}

/// [`fit`] on `threads` threads (the result does not depend on it).
///
/// # Errors
/// As [`fit`].
pub fn fit_with_threads(
    step: &str,
    s: &SegmentSpec,
    x: &Array2<f64>,
    hashes: &[u64],
    fill: Option<Vec<f64>>,
    threads: usize,
) -> Result<(Model, FitReport)> {
    let scaling = Standardizer::fit(step, x, &s.features)?;
    let d = x.ncols();
    // z-scored, by column (the layout the distance loops want).
    let z = Matrix::from_fn(x.nrows(), d, |i, j| (x[[i, j]] - scaling.means[j]) / scaling.stds[j]);
    let n = z.nrows();
    let (kmin, kmax) = match s.k {
        KSpec::Fixed(k) => (k, k),
        KSpec::Range { min, max } => (min, max),
    };
    if n < kmax {
        return Err(Error::step(step, format!("{n} rows to fit on, fewer than k = {kmax}")));
    }
    // The silhouette sample: the rows with the smallest id hashes.
    let sample_n = s
        .silhouette_sample
        .unwrap_or(if kmin == kmax { 2_000 } else { 10_000 })
        .min(n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (hashes.get(i).copied().unwrap_or(0), i));
    let sample_rows: Vec<usize> = order[..sample_n].to_vec();
    drop(order);
    let sample = Array2::from_shape_fn((sample_n, d), |(r, j)| z.col(j)[sample_rows[r]]);
    let sample_idx: Vec<usize> = (0..sample_n).collect();

    let mut k_scores = Vec::new();
    let mut best: Option<(f64, usize, Array2<f64>, Vec<f64>)> = None;
    for k in kmin..=kmax {
        let centroids = kmeans(step, s, &z, k, threads)?;
        let (labels, dists) = kmeans::assign(&z, flat(&centroids), threads);
        let inertia: f64 = dists.iter().sum();
        let sample_labels: Vec<usize> = sample_rows.iter().map(|&i| labels[i]).collect();
        let (sil, per) = silhouette(&sample, &sample_labels, k, &sample_idx);
        tracing::info!(step, k, silhouette = sil, inertia, "k scored");
        k_scores.push((k, sil, inertia));
        // Ties go to the smaller k (strictly better is needed to move up).
        if best.as_ref().is_none_or(|(b, ..)| sil > *b) {
            best = Some((sil, k, centroids, per));
        }
    }
    let (_, k, centroids, per_old) = best.ok_or_else(|| Error::step(step, "no k to fit"))?;
    let (labels, _) = kmeans::assign(&z, flat(&centroids), threads);
    let mut sizes = vec![0usize; k];
    for &l in &labels {
        sizes[l] += 1;
    }
    // Renumber: largest first, ties by centroid coordinates ascending.
    let mut perm: Vec<usize> = (0..k).collect();
    perm.sort_by(|&a, &b| {
        sizes[b].cmp(&sizes[a]).then_with(|| {
            centroids
                .row(a)
                .iter()
                .zip(centroids.row(b).iter())
                .map(|(x, y)| x.total_cmp(y))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    });
    let mut renumbered = Array2::zeros(centroids.raw_dim());
    let mut new_sizes = vec![0; k];
    for (new, &old) in perm.iter().enumerate() {
        renumbered.row_mut(new).assign(&centroids.row(old));
        new_sizes[new] = sizes[old];
    }
    let (_, dists) = kmeans::assign(&z, flat(&renumbered), threads);
    let inertia: f64 = dists.iter().sum();
    let per_segment: Vec<f64> = perm.iter().map(|&old| per_old[old]).collect();
    Ok((
        Model {
            scaling,
            centroids: renumbered,
            fill,
        },
        FitReport {
            k,
            inertia,
            sizes: new_sizes,
            k_scores,
            silhouette_per_segment: per_segment,
        },
    ))
}

/// The elements of a standard-layout array, row-major.
fn flat(a: &Array2<f64>) -> &[f64] {
    // Centroid arrays are built in standard layout here, so this never
    // falls back to the empty slice.
    a.as_slice().unwrap_or(&[])
}

/// k-means with k-means++ and `n_init` seeded restarts: linfa's algorithm
/// on the fast loops of [`kmeans`].
fn kmeans(step: &str, s: &SegmentSpec, z: &Matrix, k: usize, threads: usize) -> Result<Array2<f64>> {
    let fitted = kmeans::fit(
        z,
        &kmeans::Params {
            k,
            n_runs: s.n_init,
            max_n_iterations: s.max_iter,
            tolerance: s.tolerance,
            seed: s.seed,
            threads,
        },
    )
    .map_err(|e| Error::step(step, format!("k-means with k = {k} failed: {e}")))?;
    tracing::info!(step, k, iterations = ?fitted.iterations, inertia = fitted.inertia, "k-means runs");
    Array2::from_shape_vec((k, z.ncols()), fitted.centroids).map_err(|e| Error::step(step, e.to_string()))
}

fn sq_dist(a: ArrayView1<f64>, b: ArrayView1<f64>) -> f64 {
    a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The nearest centroid of each row (ties: the lowest index, as in scoring).
pub fn assign(z: &Array2<f64>, centroids: &Array2<f64>) -> Vec<usize> {
    z.rows()
        .into_iter()
        .map(|r| {
            let mut best = (f64::INFINITY, 0);
            for (j, c) in centroids.rows().into_iter().enumerate() {
                let d = sq_dist(r, c);
                if d < best.0 {
                    best = (d, j);
                }
            }
            best.1
        })
        .collect()
}

/// Σ squared distances to the assigned centroid.
pub fn inertia(z: &Array2<f64>, centroids: &Array2<f64>, labels: &[usize]) -> f64 {
    z.rows()
        .into_iter()
        .zip(labels)
        .map(|(r, &l)| sq_dist(r, centroids.row(l)))
        .sum()
}

/// Mean silhouette over `rows` (distances among the sample only), and the
/// mean per segment (NaN for a segment without sampled rows).
pub fn silhouette(z: &Array2<f64>, labels: &[usize], k: usize, rows: &[usize]) -> (f64, Vec<f64>) {
    // The sample as contiguous rows: this is the quadratic part.
    let d = z.ncols();
    let pts: Vec<f64> = rows.iter().flat_map(|&i| z.row(i).to_vec()).collect();
    let lab: Vec<usize> = rows.iter().map(|&i| labels[i]).collect();
    let n = rows.len();
    let mut per = vec![(0.0, 0usize); k];
    let mut total = 0.0;
    let mut sums = vec![0.0; k];
    let mut counts = vec![0usize; k];
    for i in 0..n {
        sums.iter_mut().for_each(|v| *v = 0.0);
        counts.iter_mut().for_each(|v| *v = 0);
        let a_row = &pts[i * d..(i + 1) * d];
        for j in 0..n {
            if i == j {
                continue;
            }
            let b_row = &pts[j * d..(j + 1) * d];
            let mut s = 0.0;
            for t in 0..d {
                let diff = a_row[t] - b_row[t];
                s += diff * diff;
            }
            sums[lab[j]] += s.sqrt();
            counts[lab[j]] += 1;
        }
        let own = lab[i];
        let s = if counts[own] == 0 {
            0.0
        } else {
            let a = sums[own] / counts[own] as f64;
            let b = (0..k)
                .filter(|&c| c != own && counts[c] > 0)
                .map(|c| sums[c] / counts[c] as f64)
                .fold(f64::INFINITY, f64::min);
            if b.is_finite() { (b - a) / a.max(b) } else { 0.0 }
        };
        total += s;
        per[own].0 += s;
        per[own].1 += 1;
    }
    let mean = if n == 0 { f64::NAN } else { total / n as f64 };
    (
        mean,
        per.iter()
            .map(|(s, c)| if *c > 0 { s / *c as f64 } else { f64::NAN })
            .collect(),
    )
}

/// The input rows plus `segment` and `segment_distance`, as a plan.
///
/// # Errors
/// DataFusion's, if the projection cannot be built.
pub fn score(input: DataFrame, features: &[String], model: &Model) -> datafusion::error::Result<DataFrame> {
    let names: Vec<String> = input.schema().fields().iter().map(|f| f.name().clone()).collect();
    let zs: Vec<Expr> = feature_exprs(features, model.fill.as_deref())
        .into_iter()
        .enumerate()
        .map(|(j, x)| model.scaling.expr(j, x))
        .collect();
    let k = model.centroids.nrows();
    let mut first: Vec<Expr> = names.iter().map(|n| column(n)).collect();
    for c in 0..k {
        let d = zs
            .iter()
            .enumerate()
            .map(|(j, z)| {
                let diff = z.clone() - lit(model.centroids[[c, j]]);
                diff.clone() * diff
            })
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| lit(0.0));
        first.push(d.alias(format!("__d{c}")));
    }
    let with_d = input.select(first)?;
    let least = datafusion::functions::core::expr_fn::least((0..k).map(|c| col(format!("__d{c}"))).collect());
    let mut case = when(col("__d0").eq(col("__least")), lit(0i32));
    for c in 1..k {
        case = case.when(col(format!("__d{c}")).eq(col("__least")), lit(c as i32));
    }
    let mut second: Vec<Expr> = names.iter().map(|n| column(n)).collect();
    second.extend((0..k).map(|c| col(format!("__d{c}"))));
    second.push(least.alias("__least"));
    let with_least = with_d.select(second)?;
    let mut out: Vec<Expr> = names.iter().map(|n| column(n)).collect();
    out.push(cast_expr(case.end()?, DataType::Int32).alias("segment"));
    out.push(sqrt(col("__least")).alias("segment_distance"));
    with_least.select(out)
}

fn profile_schema(features: &[String]) -> SchemaRef {
    let mut fields = vec![
        Field::new("segment", DataType::Int32, false),
        Field::new("size", DataType::Int64, false),
        Field::new("share", DataType::Float64, false),
        Field::new("inertia", DataType::Float64, true),
        Field::new("silhouette", DataType::Float64, true),
    ];
    for f in features {
        fields.push(Field::new(format!("mean_{f}"), DataType::Float64, true));
    }
    Arc::new(Schema::new(fields))
}

fn k_selection_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int32, false),
        Field::new("silhouette", DataType::Float64, true),
        Field::new("inertia", DataType::Float64, false),
        Field::new("chosen", DataType::Boolean, false),
    ]))
}

/// Segment sizes and feature means over the whole scored table (one
/// aggregate scan), with the fit's silhouette per segment.
async fn profile(
    engine: &Engine,
    step: &str,
    scored: DataFrame,
    s: &SegmentSpec,
    report: &FitReport,
) -> Result<DataFrame> {
    let fail = |e: datafusion::error::DataFusionError| Error::step(step, e);
    let mut aggs = vec![datafusion::functions_aggregate::expr_fn::count(lit(1)).alias("size")];
    aggs.push(sum(col("segment_distance") * col("segment_distance")).alias("inertia"));
    for f in &s.features {
        aggs.push(datafusion::functions_aggregate::expr_fn::avg(f64_col(f)).alias(format!("mean_{f}")));
    }
    let grouped = scored
        .filter(col("segment").is_not_null())
        .and_then(|d| d.aggregate(vec![col("segment")], aggs))
        .and_then(|d| d.sort(vec![col("segment").sort(true, false)]))
        .map_err(fail)?
        .collect()
        .await
        .map_err(fail)?;
    let total: i64 = grouped
        .iter()
        .map(|b| {
            b.column(1)
                .as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.values().iter().sum::<i64>())
                .unwrap_or(0)
        })
        .sum();
    let schema = profile_schema(&s.features);
    let mut segment = Vec::new();
    let mut size = Vec::new();
    let mut inertia = Vec::new();
    let mut means: Vec<Vec<Option<f64>>> = vec![Vec::new(); s.features.len()];
    for b in &grouped {
        let seg = b
            .column(0)
            .as_any()
            .downcast_ref::<Int32Array>()
            .ok_or_else(|| Error::step(step, "segment is not Int32"))?;
        let sz = b
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| Error::step(step, "size is not Int64"))?;
        let ine = b
            .column(2)
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(|| Error::step(step, "inertia is not Float64"))?;
        for r in 0..b.num_rows() {
            segment.push(seg.value(r));
            size.push(sz.value(r));
            inertia.push(ine.value(r));
            for (j, m) in means.iter_mut().enumerate() {
                let a = b
                    .column(3 + j)
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .ok_or_else(|| Error::step(step, "mean is not Float64"))?;
                m.push(if a.is_valid(r) { Some(a.value(r)) } else { None });
            }
        }
    }
    let share: Vec<f64> = size.iter().map(|&n| n as f64 / total.max(1) as f64).collect();
    let sil: Vec<Option<f64>> = segment
        .iter()
        .map(|&g| {
            report
                .silhouette_per_segment
                .get(g as usize)
                .copied()
                .filter(|v| v.is_finite())
        })
        .collect();
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(segment)),
        Arc::new(Int64Array::from(size)),
        Arc::new(Float64Array::from(share)),
        Arc::new(Float64Array::from(inertia)),
        Arc::new(Float64Array::from(sil)),
    ];
    for m in means {
        cols.push(Arc::new(Float64Array::from(m)));
    }
    let batch = RecordBatch::try_new(schema, cols).map_err(|e| Error::step(step, e))?;
    engine.values(&batch).map_err(|e| Error::step(step, e))
}

fn k_selection(engine: &Engine, step: &str, report: &FitReport) -> Result<DataFrame> {
    let ks: Vec<i32> = report.k_scores.iter().map(|r| r.0 as i32).collect();
    let sil: Vec<Option<f64>> = report
        .k_scores
        .iter()
        .map(|r| Some(r.1).filter(|v| v.is_finite()))
        .collect();
    let ine: Vec<f64> = report.k_scores.iter().map(|r| r.2).collect();
    let chosen: Vec<bool> = report.k_scores.iter().map(|r| r.0 == report.k).collect();
    let batch = RecordBatch::try_new(
        k_selection_schema(),
        vec![
            Arc::new(Int32Array::from(ks)),
            Arc::new(Float64Array::from(sil)),
            Arc::new(Float64Array::from(ine)),
            Arc::new(BooleanArray::from(chosen)),
        ],
    )
    .map_err(|e| Error::step(step, e))?;
    engine.values(&batch).map_err(|e| Error::step(step, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Normal};
    use rand_xoshiro::Xoshiro256Plus;

    fn spec(k: KSpec, features: usize) -> SegmentSpec {
        SegmentSpec {
            input: "t".into(),
            id: "id".into(),
            features: (0..features).map(|i| format!("f{i}")).collect(),
            k,
            seed: 7,
            n_init: 5,
            max_iter: 300,
            tolerance: 1e-6,
            fit_sample: None,
            silhouette_sample: Some(600),
            nulls: NullPolicy::Error,
        }
    }

    /// Blobs around known centres (sizes 300, 200, 100), sd 0.3.
    fn blobs(seed: u64) -> (Array2<f64>, Vec<usize>, Vec<[f64; 2]>) {
        let centres = vec![[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]];
        let sizes = [300, 200, 100];
        let mut rng = Xoshiro256Plus::seed_from_u64(seed);
        let noise = Normal::new(0.0, 0.3).unwrap();
        let n: usize = sizes.iter().sum();
        let mut x = Array2::zeros((n, 2));
        let mut truth = Vec::new();
        let mut r = 0;
        for (c, &sz) in sizes.iter().enumerate() {
            for _ in 0..sz {
                x[[r, 0]] = centres[c][0] + noise.sample(&mut rng);
                x[[r, 1]] = centres[c][1] + noise.sample(&mut rng);
                truth.push(c);
                r += 1;
            }
        }
        (x, truth, centres)
    }

    fn hashes(n: usize) -> Vec<u64> {
        let mut rng = Xoshiro256Plus::seed_from_u64(1);
        (0..n).map(|_| rng.r#gen()).collect()
    }

    #[test]
    fn recovers_planted_blobs_exactly_and_numbers_by_size() {
        let (x, truth, centres) = blobs(3);
        let s = spec(KSpec::Fixed(3), 2);
        let (model, report) = fit("seg", &s, &x, &hashes(x.nrows()), None).unwrap();
        assert_eq!(report.sizes, vec![300, 200, 100]);
        // Segment ids follow size, so segment c is blob c; every row is in it.
        let z = model.scaling.transform(&x);
        assert_eq!(assign(&z, &model.centroids), truth);
        // Centroids back in original units are the blob means (to noise).
        for (c, centre) in centres.iter().enumerate() {
            for j in 0..2 {
                let orig = model.centroids[[c, j]] * model.scaling.stds[j] + model.scaling.means[j];
                assert!(
                    (orig - centre[j]).abs() < 0.1,
                    "centre {c}/{j}: {orig} vs {}",
                    centre[j]
                );
            }
        }
        // Inertia is the sum of squared distances, recomputed here.
        let labels = assign(&z, &model.centroids);
        let recomputed: f64 = (0..z.nrows())
            .map(|i| {
                (0..2)
                    .map(|j| (z[[i, j]] - model.centroids[[labels[i], j]]).powi(2))
                    .sum::<f64>()
            })
            .sum();
        assert!((report.inertia - recomputed).abs() <= 1e-9 * recomputed);
    }

    #[test]
    fn same_seed_same_centroids_bit_for_bit() {
        let (x, _, _) = blobs(4);
        let s = spec(KSpec::Fixed(3), 2);
        let a = fit("seg", &s, &x, &hashes(x.nrows()), None).unwrap().0;
        let b = fit("seg", &s, &x, &hashes(x.nrows()), None).unwrap().0;
        assert_eq!(a.centroids, b.centroids);
    }

    #[test]
    fn identical_for_one_and_two_threads() {
        // Several chunks of rows, so the partial sums are spread over threads.
        let n = 3 * kmeans::CHUNK + 77;
        let mut rng = Xoshiro256Plus::seed_from_u64(11);
        let noise = Normal::new(0.0, 1.0).unwrap();
        let x = Array2::from_shape_fn((n, 3), |(i, j)| ((i % 4) * (j + 1)) as f64 + noise.sample(&mut rng));
        let s = SegmentSpec {
            n_init: 2,
            ..spec(KSpec::Range { min: 2, max: 4 }, 3)
        };
        let h = hashes(n);
        let (m1, r1) = fit_with_threads("seg", &s, &x, &h, None, 1).unwrap();
        let (m2, r2) = fit_with_threads("seg", &s, &x, &h, None, 2).unwrap();
        assert_eq!(m1.centroids, m2.centroids);
        assert_eq!(r1.sizes, r2.sizes);
        assert_eq!(r1.inertia.to_bits(), r2.inertia.to_bits());
        assert_eq!(r1.k_scores.len(), r2.k_scores.len());
        for (a, b) in r1.k_scores.iter().zip(&r2.k_scores) {
            assert_eq!((a.0, a.1.to_bits(), a.2.to_bits()), (b.0, b.1.to_bits(), b.2.to_bits()));
        }
    }

    #[test]
    fn silhouette_picks_the_planted_k() {
        let (x, _, _) = blobs(5);
        let s = spec(KSpec::Range { min: 2, max: 6 }, 2);
        let (_, report) = fit("seg", &s, &x, &hashes(x.nrows()), None).unwrap();
        assert_eq!(report.k, 3, "scores: {:?}", report.k_scores);
        assert_eq!(report.k_scores.len(), 5);
    }

    #[test]
    fn silhouette_matches_a_hand_computation() {
        // Two clusters on a line: {0, 1} and {4}; labels 0,0,1.
        let z = Array2::from_shape_vec((3, 1), vec![0.0, 1.0, 4.0]).unwrap();
        let (mean, per) = silhouette(&z, &[0, 0, 1], 2, &[0, 1, 2]);
        // s(0) = (4 - 1)/4, s(1) = (3 - 1)/3, s(2) = 0 (singleton).
        let want = (0.75 + 2.0 / 3.0 + 0.0) / 3.0;
        assert!((mean - want).abs() < 1e-15);
        assert!((per[0] - (0.75 + 2.0 / 3.0) / 2.0).abs() < 1e-15);
    }

    #[test]
    fn too_few_rows_and_constant_features_are_named() {
        let x = Array2::from_shape_vec((2, 2), vec![1.0, 5.0, 2.0, 5.0]).unwrap();
        let err = fit("seg", &spec(KSpec::Fixed(2), 2), &x, &[1, 2], None).unwrap_err();
        assert_eq!(
            err.render(),
            "step \"seg\": feature \"f1\" is constant (5) on the fitting rows: it cannot be standardized; remove it"
        );
        let x = Array2::from_shape_vec((2, 1), vec![1.0, 2.0]).unwrap();
        let err = fit("seg", &spec(KSpec::Fixed(3), 1), &x, &[1, 2], None).unwrap_err();
        assert_eq!(err.render(), "step \"seg\": 2 rows to fit on, fewer than k = 3");
    }
}
