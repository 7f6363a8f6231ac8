//! `predict:` linear regression (least squares with intercept,
//! [`super::ols`]) or logistic regression (linfa-logistic's L2 objective,
//! [`super::logistic`]), trained on one table and scored on another.
//!
//! The holdout is chosen from a stable hash of the id and `seed`, so the
//! split does not move between runs or machines, or given by a Boolean
//! column of the training table (`holdout_column`). Features are z-scored for
//! the fit; the coefficients are mapped back to original units, and the
//! model is applied as a DataFusion expression (`intercept + Σ βⱼ·xⱼ`, and
//! the logistic function for `logistic`), so scoring streams with the plan.
//!
//! Outputs: `<step>` (`id`, `prediction`), `<step>_metrics` (metric, value)
//! from the holdout, `<step>_model` (name, value): intercept and one
//! coefficient per feature, in original units; for `logistic`, `<step>_roc`
//! (threshold, tpr, fpr) on the holdout ([`super::roc`]).

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast as cast_array;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::functions::core::expr_fn::{greatest, least};
use datafusion::functions::math::expr_fn::{abs, exp, ln};
use datafusion::functions_aggregate::expr_fn::{avg, count, sum, var_pop};
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{
    Expr, ExprFunctionExt, WindowFrame, WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition, cast, lit, when,
};
use datafusion::prelude::DataFrame;
use datafusion::prelude::col;
use ndarray::Array2;
use serde::Deserialize;

use super::features::{FeatureRequest, NullPolicy, Standardizer, collect_features, feature_exprs, holdout_expr};
use super::logistic::sigmoid;
use super::ols::OlsError;
use super::{Resolver, Stage, Want, check_column, name_value_schema, name_value_table, table_schema};
use crate::engine::Engine;
use crate::engine::expr::{column, f64_col};
use crate::error::{Error, Problem, Result};
use crate::vars::Vars;

/// `predict:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictSpec {
    pub model: ModelKind,
    pub train: String,
    pub score: String,
    #[serde(default = "super::default_id")]
    pub id: String,
    pub label: String,
    pub features: Vec<String>,
    #[serde(default = "default_holdout")]
    pub holdout: f64,
    /// A Boolean column of `train` whose true rows are the holdout
    /// (instead of the hash split by `holdout` and `seed`).
    pub holdout_column: Option<String>,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// L2 strength for `logistic` (on standardized coefficients).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Solver iterations for `logistic`.
    #[serde(default = "default_max_iter")]
    pub max_iter: u64,
    pub fit_sample: Option<usize>,
    #[serde(default)]
    pub nulls: NullPolicy,
}

fn default_holdout() -> f64 {
    0.2
}
fn default_seed() -> u64 {
    42
}
fn default_alpha() -> f64 {
    1.0
}
fn default_max_iter() -> u64 {
    200
}

/// `model:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Linear,
    Logistic,
}

/// A resolved `predict:` step.
#[derive(Debug, Clone)]
pub struct Predict {
    pub spec: PredictSpec,
}

impl PredictSpec {
    /// Binds vars in every string and checks the parameters that need no
    /// data.
    ///
    /// # Errors
    /// Every problem, each about the step and naming the key.
    pub fn resolve(mut self, step: &str, vars: &Vars) -> std::result::Result<Predict, Vec<Problem>> {
        let mut r = Resolver::new(step, vars);
        r.one("predict.train", &mut self.train);
        r.one("predict.score", &mut self.score);
        r.one("predict.id", &mut self.id);
        r.one("predict.label", &mut self.label);
        if let Some(h) = &mut self.holdout_column {
            r.one("predict.holdout_column", h);
        }
        r.features("predict.features", &mut self.features);
        if !(0.0..1.0).contains(&self.holdout) {
            r.problem(format!("predict.holdout must be in [0, 1), got {}", self.holdout));
        }
        if !(self.alpha >= 0.0) {
            r.problem("predict.alpha must be >= 0".to_string());
        }
        if self.features.contains(&self.label) {
            r.problem(format!("label \"{}\" is also listed as a feature", self.label));
        }
        if let Some(h) = &self.holdout_column
            && (self.features.contains(h) || *h == self.label)
        {
            r.problem(format!("holdout_column \"{h}\" is also the label or a feature"));
        }
        r.finish(Predict { spec: self })
    }
}

/// A fitted model in original units: `intercept + Σ coef·x`.
#[derive(Debug, Clone)]
pub struct Model {
    pub kind: ModelKind,
    pub intercept: f64,
    pub coef: Vec<f64>,
    /// Null fills (policy `mean`).
    pub fill: Option<Vec<f64>>,
}

impl Model {
    /// The prediction for one row of features (original units).
    pub fn predict(&self, x: &[f64]) -> f64 {
        let eta = self.intercept + self.coef.iter().zip(x).map(|(b, v)| b * v).sum::<f64>();
        match self.kind {
            ModelKind::Linear => eta,
            ModelKind::Logistic => sigmoid(eta),
        }
    }

    /// The prediction as a DataFusion expression over the feature columns.
    pub fn expr(&self, features: &[String]) -> Expr {
        let mut eta = lit(self.intercept);
        for (b, x) in self.coef.iter().zip(feature_exprs(features, self.fill.as_deref())) {
            eta = eta + lit(*b) * x;
        }
        match self.kind {
            ModelKind::Linear => eta,
            ModelKind::Logistic => lit(1.0) / (lit(1.0) + exp(lit(0.0) - eta)),
        }
    }
}

impl Stage for Predict {
    fn inputs(&self) -> Vec<String> {
        let mut v = vec![self.spec.train.clone()];
        if self.spec.score != self.spec.train {
            v.push(self.spec.score.clone());
        }
        v
    }

    fn extra_suffixes(&self) -> &'static [&'static str] {
        match self.spec.model {
            ModelKind::Linear => &["_metrics", "_model"],
            ModelKind::Logistic => &["_metrics", "_model", "_roc"],
        }
    }

    async fn schemas(&self, step: &str, engine: &Engine) -> std::result::Result<Vec<SchemaRef>, Vec<Problem>> {
        let s = &self.spec;
        let train = table_schema(step, engine, &s.train).await.map_err(|e| vec![e])?;
        let score = table_schema(step, engine, &s.score).await.map_err(|e| vec![e])?;
        let mut p: Vec<Problem> = Vec::new();
        p.extend(check_column(step, &s.train, &train, &s.id, Want::Key));
        p.extend(check_column(step, &s.train, &train, &s.label, Want::Number));
        if let Some(h) = &s.holdout_column {
            p.extend(check_column(step, &s.train, &train, h, Want::Boolean));
        }
        p.extend(check_column(step, &s.score, &score, &s.id, Want::Key));
        for f in &s.features {
            p.extend(check_column(step, &s.train, &train, f, Want::Number));
            p.extend(check_column(step, &s.score, &score, f, Want::Number));
        }
        p.dedup();
        if !p.is_empty() {
            return Err(p);
        }
        let id_type = score
            .field_with_name(&s.id)
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Int64);
        let out = Arc::new(Schema::new(vec![
            Field::new(&s.id, id_type, true),
            Field::new("prediction", DataType::Float64, true),
        ]));
        let mut schemas = vec![out, name_value_schema("metric"), name_value_schema("name")];
        if s.model == ModelKind::Logistic {
            schemas.push(super::roc::schema());
        }
        Ok(schemas)
    }

    async fn run(&self, step: &str, engine: &Engine) -> Result<Vec<DataFrame>> {
        let s = &self.spec;
        let ctx = engine.context();
        let feats = collect_features(
            ctx,
            &FeatureRequest {
                step,
                table: &s.train,
                id: &s.id,
                features: &s.features,
                label: Some(&s.label),
                holdout_column: s.holdout_column.as_deref(),
                nulls: s.nulls,
                sample: s.fit_sample,
                seed: s.seed,
                sample_seed: crate::hash::salted(s.seed, FIT_SAMPLE),
                holdout: s.holdout_column.is_none().then_some(s.holdout),
            },
        )
        .await?;
        let n_train = feats.x.nrows();
        if n_train <= s.features.len() {
            return Err(Error::step(step, too_few_rows(s, &feats)));
        }
        let y = feats.y.unwrap_or_default();
        let model = fit(step, s, feats.x, y, feats.fill)?;
        let mut metrics = holdout_metrics(engine, step, s, &model).await?;
        // r2, rmse, mae | auc, log_loss, accuracy, base_rate; then n_train, n_test.
        metrics.insert(metrics.len() - 1, ("n_train".to_string(), n_train as f64));
        tracing::info!(step, model = ?s.model, intercept = model.intercept, coef = ?model.coef, metrics = ?metrics, "model fitted");
        let score = ctx.table(s.score.as_str()).await.map_err(|e| Error::step(step, e))?;
        let scored = score
            .select(vec![column(&s.id), model.expr(&s.features).alias("prediction")])
            .map_err(|e| Error::step(step, e))?;
        let mut model_rows = vec![("intercept".to_string(), model.intercept)];
        for (f, b) in s.features.iter().zip(&model.coef) {
            model_rows.push((f.clone(), *b));
        }
        let mut out = vec![
            scored,
            name_value_table(engine, step, "metric", &metrics)?,
            name_value_table(engine, step, "name", &model_rows)?,
        ];
        if s.model == ModelKind::Logistic {
            let holdout = holdout_rows(engine, step, s, &model).await?;
            out.push(super::roc::table(engine, step, holdout).await?);
        }
        Ok(out)
    }
}

/// The purpose that salts the fit sample's hashes: the sample must not be
/// drawn by the hash that chooses the holdout.
const FIT_SAMPLE: &str = "fit_sample";

/// Why there are too few training rows, and what to change.
fn too_few_rows(s: &PredictSpec, feats: &super::features::Features) -> String {
    let d = s.features.len();
    let n_train = feats.x.nrows();
    let mut why = vec![format!("\"{}\" has {} rows", s.train, feats.table_rows)];
    let kept = feats.sampled;
    if let Some(n) = s.fit_sample {
        why.push(format!("fit_sample: {n} kept {kept}"));
    }
    why.push(format!(
        "{} of {kept} are in the holdout ({})",
        feats.held_out, s.holdout
    ));
    if feats.dropped > 0 {
        why.push(format!("{} of the rest dropped for null features", feats.dropped));
    }
    format!(
        "{n_train} training rows for {d} features and an intercept: too few to fit ({}); raise fit_sample, lower holdout or use fewer features",
        why.join(", ")
    )
}

/// Fits on the rows of `x` (the training rows: the holdout is evaluated in
/// the plan, on every holdout row: [`holdout_metrics`]), z-scoring them in
/// place (a matrix of the training rows is the largest object in memory,
/// so it is not copied).
///
/// # Errors
/// Too few training rows, a non-0/1 label for `logistic`, a constant
/// feature, or a solver failure.
pub fn fit(step: &str, s: &PredictSpec, x: Array2<f64>, y: Vec<f64>, fill: Option<Vec<f64>>) -> Result<Model> {
    let d = s.features.len();
    if x.nrows() <= d {
        return Err(Error::step(
            step,
            format!(
                "{} training rows for {d} features and an intercept: too few to fit",
                x.nrows()
            ),
        ));
    }
    if s.model == ModelKind::Logistic {
        let bad = y.iter().filter(|v| **v != 0.0 && **v != 1.0).count();
        if bad > 0 {
            let example = y.iter().find(|v| **v != 0.0 && **v != 1.0).copied().unwrap_or(f64::NAN);
            return Err(Error::step(
                step,
                format!(
                    "label \"{}\" must be 0 or 1 for model: logistic; {bad} rows are not (e.g. {example})",
                    s.label
                ),
            ));
        }
    }
    let scaling = Standardizer::fit(step, &x, &s.features)?;
    let zt = scaling.transform_into(x);
    let (means, stds) = (&scaling.means, &scaling.stds);
    let (zcoef, zintercept) = match s.model {
        ModelKind::Linear => {
            let fitted = super::ols::fit(zt.view(), &y).map_err(|e| {
                let why = match e {
                    OlsError::Dependent(j) => format!(
                        "feature \"{}\" is a linear combination of the features before it (and a constant); drop it or one of them",
                        s.features[j]
                    ),
                    OlsError::NonFinite => format!("label \"{}\" has a non-finite value", s.label),
                    OlsError::TooFewRows => format!("{} rows are too few", zt.nrows()),
                };
                Error::step(step, format!("least squares failed: {why}"))
            })?;
            (fitted.coef, fitted.intercept)
        }
        ModelKind::Logistic => {
            if y.iter().all(|&l| l == y[0]) {
                return Err(Error::step(
                    step,
                    format!("label \"{}\" has only the value {} in the training rows", s.label, y[0]),
                ));
            }
            let fitted = super::logistic::fit(zt.view(), &y, s.alpha, s.max_iter);
            if !fitted.converged {
                tracing::warn!(
                    step,
                    iterations = fitted.iterations,
                    "logistic regression stopped before converging (max_iter: {})",
                    s.max_iter
                );
            }
            (fitted.coef, fitted.intercept)
        }
    };
    // Back to original units: β = βz/σ, b = bz − Σ βz·μ/σ.
    let coef: Vec<f64> = (0..d).map(|j| zcoef[j] / stds[j]).collect();
    let intercept = zintercept - (0..d).map(|j| zcoef[j] * means[j] / stds[j]).sum::<f64>();
    Ok(Model {
        kind: s.model,
        intercept,
        coef,
        fill,
    })
}

/// The holdout rows of the training table with the label (`__y`) and the
/// model's prediction (`__p`), as a plan.
///
/// # Errors
/// A query failure.
pub async fn holdout_rows(engine: &Engine, step: &str, s: &PredictSpec, model: &Model) -> Result<DataFrame> {
    let fail = |e: datafusion::error::DataFusionError| Error::step(step, e);
    engine
        .context()
        .table(s.train.as_str())
        .await
        .map_err(fail)?
        .filter(match &s.holdout_column {
            Some(h) => column(h).is_true(),
            None => holdout_expr(&s.id, s.seed, s.holdout),
        })
        .and_then(|d| {
            d.select(vec![
                f64_col(&s.label).alias("__y"),
                model.expr(&s.features).alias("__p"),
            ])
        })
        .and_then(|d| d.filter(col("__p").is_not_null()))
        .map_err(fail)
}

/// The holdout metrics, computed inside the plan over every holdout row of
/// the training table (the rows whose id hash falls in the first `holdout`
/// of the range), whatever was sampled for the fit: r2, rmse, mae (linear)
/// or auc, log_loss, accuracy at 0.5, base_rate (logistic), then n_test.
/// NaN where there are no holdout rows.
///
/// # Errors
/// A query failure.
pub async fn holdout_metrics(
    engine: &Engine,
    step: &str,
    s: &PredictSpec,
    model: &Model,
) -> Result<Vec<(String, f64)>> {
    let fail = |e: datafusion::error::DataFusionError| Error::step(step, e);
    let f = |e: Expr| cast(e, DataType::Float64);
    let holdout = holdout_rows(engine, step, s, model).await?;
    let (y, p) = (col("__y"), col("__p"));
    let n = f(count(lit(1))).alias("n");
    let mut names = vec!["n_test"];
    let row = match s.model {
        ModelKind::Linear => {
            names.extend(["r2", "rmse", "mae"]);
            let err = y.clone() - p;
            let sums = one_row(holdout.aggregate(
                vec![],
                vec![
                    n,
                    sum(err.clone() * err.clone()).alias("ss_res"),
                    sum(abs(err)).alias("abs_err"),
                    var_pop(y).alias("var_y"),
                ],
            ))
            .await
            .map_err(fail)?;
            let [n, ss_res, abs_err, var_y] = [sums[0], sums[1], sums[2], sums[3]];
            vec![n, 1.0 - ss_res / (var_y * n), (ss_res / n).sqrt(), abs_err / n]
        }
        ModelKind::Logistic => {
            names.extend(["auc", "log_loss", "accuracy", "base_rate"]);
            let eps = 1e-15;
            let q = greatest(vec![least(vec![p.clone(), lit(1.0 - eps)]), lit(eps)]);
            let ll = y.clone() * ln(q.clone()) + (lit(1.0) - y.clone()) * ln(lit(1.0) - q);
            let correct = when(p.clone().gt_eq(lit(0.5)).eq(y.clone().eq(lit(1.0))), lit(1.0))
                .otherwise(lit(0.0))
                .map_err(fail)?;
            let sums = one_row(holdout.clone().aggregate(
                vec![],
                vec![
                    n,
                    sum(y.clone()).alias("pos"),
                    avg(ll).alias("ll"),
                    avg(correct).alias("acc"),
                ],
            ))
            .await
            .map_err(fail)?;
            let [n, pos, ll, acc] = [sums[0], sums[1], sums[2], sums[3]];
            // AUC by average ranks (ties share theirs): rank the distinct
            // predictions with a running count, then Mann-Whitney.
            let by_p = holdout
                .aggregate(vec![p.clone()], vec![f(count(lit(1))).alias("c"), sum(y).alias("pos")])
                .and_then(|d| {
                    let running = Expr::from(WindowFunction::new(
                        WindowFunctionDefinition::AggregateUDF(sum_udaf()),
                        vec![col("c")],
                    ))
                    .order_by(vec![p.sort(true, false)])
                    .window_frame(WindowFrame::new_bounds(
                        WindowFrameUnits::Rows,
                        WindowFrameBound::Preceding(ScalarValue::UInt64(None)),
                        WindowFrameBound::CurrentRow,
                    ))
                    .build()?;
                    d.window(vec![running.alias("cum")])
                })
                .and_then(|d| {
                    let mean_rank = col("cum") - (col("c") - lit(1.0)) / lit(2.0);
                    d.aggregate(vec![], vec![sum(col("pos") * mean_rank).alias("rank_sum")])
                });
            let rank_sum = one_row(by_p).await.map_err(fail)?[0];
            let auc = (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * (n - pos));
            vec![n, auc, -ll, acc, pos / n]
        }
    };
    // An empty holdout gives NaN for every metric; n_test goes last.
    let n_test = row[0];
    let empty = n_test == 0.0;
    let mut out: Vec<(String, f64)> = names
        .iter()
        .zip(row)
        .skip(1)
        .map(|(k, v)| (k.to_string(), if empty { f64::NAN } else { v }))
        .collect();
    out.push((names[0].to_string(), n_test));
    Ok(out)
}

/// The Float64 values of a one-row result (NULL as NaN).
async fn one_row(df: datafusion::error::Result<DataFrame>) -> datafusion::error::Result<Vec<f64>> {
    let batches = df?.collect().await?;
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(vec![]);
    };
    Ok(b.columns()
        .iter()
        .map(|c| match cast_array(c, &DataType::Float64) {
            Ok(a) if a.is_valid(0) => a.as_primitive::<datafusion::arrow::datatypes::Float64Type>().value(0),
            _ => f64::NAN,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::features::in_holdout;

    // In-memory reference implementations of the holdout metrics, written
    // independently of the in-plan ones.
    /// r2, rmse, mae (NaN when there are no test rows).
    pub fn regression_metrics(y: &[f64], p: &[f64]) -> Vec<(String, f64)> {
        let n = y.len() as f64;
        let mean = y.iter().sum::<f64>() / n;
        let ss_res: f64 = y.iter().zip(p).map(|(a, b)| (a - b) * (a - b)).sum();
        let ss_tot: f64 = y.iter().map(|a| (a - mean) * (a - mean)).sum();
        let mae = y.iter().zip(p).map(|(a, b)| (a - b).abs()).sum::<f64>() / n;
        vec![
            ("r2".to_string(), 1.0 - ss_res / ss_tot),
            ("rmse".to_string(), (ss_res / n).sqrt()),
            ("mae".to_string(), mae),
        ]
    }

    /// auc (Mann–Whitney, ties counted half), log_loss, accuracy at 0.5, base_rate.
    pub fn classification_metrics(y: &[f64], p: &[f64]) -> Vec<(String, f64)> {
        let n = y.len() as f64;
        let eps = 1e-15;
        let log_loss = -y
            .iter()
            .zip(p)
            .map(|(a, q)| {
                let q = q.clamp(eps, 1.0 - eps);
                a * q.ln() + (1.0 - a) * (1.0 - q).ln()
            })
            .sum::<f64>()
            / n;
        let accuracy = y.iter().zip(p).filter(|(a, q)| (**q >= 0.5) == (**a == 1.0)).count() as f64 / n;
        let base_rate = y.iter().sum::<f64>() / n;
        vec![
            ("auc".to_string(), auc(y, p)),
            ("log_loss".to_string(), log_loss),
            ("accuracy".to_string(), accuracy),
            ("base_rate".to_string(), base_rate),
        ]
    }

    /// Area under the ROC curve by average ranks (ties share their rank).
    pub fn auc(y: &[f64], p: &[f64]) -> f64 {
        let mut idx: Vec<usize> = (0..p.len()).collect();
        idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
        let mut ranks = vec![0.0; p.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && p[idx[j + 1]] == p[idx[i]] {
                j += 1;
            }
            let r = (i + j) as f64 / 2.0 + 1.0;
            for k in i..=j {
                ranks[idx[k]] = r;
            }
            i = j + 1;
        }
        let pos = y.iter().filter(|v| **v == 1.0).count() as f64;
        let neg = y.len() as f64 - pos;
        let rank_sum: f64 = y.iter().zip(&ranks).filter(|(v, _)| **v == 1.0).map(|(_, r)| r).sum();
        (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
    }

    use rand::SeedableRng;
    use rand_distr::{Bernoulli, Distribution, Normal};
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn spec(model: ModelKind, d: usize) -> PredictSpec {
        PredictSpec {
            model,
            train: "t".into(),
            score: "t".into(),
            id: "id".into(),
            label: "y".into(),
            features: (0..d).map(|i| format!("x{i}")).collect(),
            holdout: 0.0,
            holdout_column: None,
            seed: 1,
            alpha: 0.0,
            max_iter: 500,
            fit_sample: None,
            nulls: NullPolicy::Error,
        }
    }

    /// Solves the normal equations (XᵀX)β = Xᵀy by Gaussian elimination with
    /// partial pivoting: an independent least-squares solve.
    fn normal_equations(x: &Array2<f64>, y: &[f64]) -> Vec<f64> {
        let n = x.nrows();
        let d = x.ncols() + 1;
        let row = |i: usize| -> Vec<f64> { std::iter::once(1.0).chain(x.row(i).iter().copied()).collect() };
        let mut a = vec![vec![0.0; d + 1]; d];
        for i in 0..n {
            let r = row(i);
            for p in 0..d {
                for q in 0..d {
                    a[p][q] += r[p] * r[q];
                }
                a[p][d] += r[p] * y[i];
            }
        }
        for c in 0..d {
            let piv = (c..d).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap();
            a.swap(c, piv);
            for r in 0..d {
                if r != c {
                    let f = a[r][c] / a[c][c];
                    for k in c..=d {
                        a[r][k] -= f * a[c][k];
                    }
                }
            }
        }
        (0..d).map(|i| a[i][d] / a[i][i]).collect()
    }

    #[test]
    fn ols_equals_an_independent_solve() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        let noise = Normal::new(0.0, 2.0).unwrap();
        let n = 500;
        let mut x = Array2::zeros((n, 3));
        let mut y = Vec::new();
        for i in 0..n {
            x[[i, 0]] = noise.sample(&mut rng) * 10.0 + 100.0;
            x[[i, 1]] = noise.sample(&mut rng);
            x[[i, 2]] = noise.sample(&mut rng) * 1000.0;
            y.push(3.0 + 0.5 * x[[i, 0]] - 2.0 * x[[i, 1]] + 0.001 * x[[i, 2]] + noise.sample(&mut rng));
        }
        let m = fit("p", &spec(ModelKind::Linear, 3), x.clone(), y.clone(), None).unwrap();
        let want = normal_equations(&x, &y);
        let got: Vec<f64> = std::iter::once(m.intercept).chain(m.coef.iter().copied()).collect();
        for (g, w) in got.iter().zip(&want) {
            assert!(((g - w) / w).abs() < 1e-8, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn ols_names_a_feature_that_depends_on_the_ones_before() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let noise = Normal::new(0.0, 1.0).unwrap();
        let n = 300;
        let mut x = Array2::zeros((n, 3));
        let mut y = Vec::new();
        for i in 0..n {
            x[[i, 0]] = noise.sample(&mut rng);
            x[[i, 1]] = 2.0 * x[[i, 0]] + 7.0;
            x[[i, 2]] = noise.sample(&mut rng);
            y.push(x[[i, 0]] + noise.sample(&mut rng));
        }
        let e = fit("p", &spec(ModelKind::Linear, 3), x, y, None).unwrap_err();
        assert_eq!(
            e.render(),
            "step \"p\": least squares failed: feature \"x1\" is a linear combination of the features before it \
             (and a constant); drop it or one of them"
        );
    }

    #[test]
    fn logistic_recovers_known_coefficients() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let normal = Normal::new(0.0, 1.0).unwrap();
        let (b0, b1, b2) = (-1.0, 2.0, -0.5);
        let n = 20_000;
        let mut x = Array2::zeros((n, 2));
        let mut y = Vec::new();
        for i in 0..n {
            x[[i, 0]] = normal.sample(&mut rng);
            x[[i, 1]] = 3.0 * normal.sample(&mut rng) + 1.0;
            let p = sigmoid(b0 + b1 * x[[i, 0]] + b2 * x[[i, 1]]);
            y.push(if Bernoulli::new(p).unwrap().sample(&mut rng) {
                1.0
            } else {
                0.0
            });
        }
        let m = fit("p", &spec(ModelKind::Logistic, 2), x, y, None).unwrap();
        // Standard errors here are about 0.03; allow 4 of them.
        assert!((m.intercept - b0).abs() < 0.12, "{m:?}");
        assert!((m.coef[0] - b1).abs() < 0.12, "{m:?}");
        assert!((m.coef[1] - b2).abs() < 0.04, "{m:?}");
    }

    #[test]
    fn auc_matches_a_hand_count() {
        // Positive/negative pairs: (0.8 vs 0.1, 0.4, 0.8) -> 1 + 1 + 0.5; (0.35 vs ...) -> 1 + 0 + 0.
        let y = [1.0, 0.0, 1.0, 0.0, 0.0];
        let p = [0.8, 0.1, 0.35, 0.4, 0.8];
        assert!((auc(&y, &p) - 3.5 / 6.0).abs() < 1e-15);
    }

    #[test]
    fn non_binary_labels_are_rejected_with_a_count() {
        let x = Array2::from_shape_vec((4, 1), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let err = fit(
            "churn",
            &spec(ModelKind::Logistic, 1),
            x,
            vec![0.0, 1.0, 2.0, 1.0],
            None,
        )
        .unwrap_err();
        assert_eq!(
            err.render(),
            "step \"churn\": label \"y\" must be 0 or 1 for model: logistic; 1 rows are not (e.g. 2)"
        );
    }

    #[test]
    fn holdout_fraction_is_close_to_asked() {
        let hashes: Vec<u64> = (0..100_000u64).map(crate::hash::splitmix64).collect();
        let share = hashes.iter().filter(|&&h| in_holdout(h, 0.2)).count() as f64 / 1e5;
        assert!((share - 0.2).abs() < 0.005, "{share}");
    }

    #[tokio::test]
    async fn holdout_metrics_in_the_plan_match_an_in_memory_computation() {
        use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch};
        let engine = Engine::new(&Default::default(), Default::default(), crate::stages::functions()).unwrap();
        let n = 2_000;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let normal = Normal::new(0.0, 1.0).unwrap();
        // x rounded to one decimal: many tied predictions, which AUC must rank.
        let ids: Vec<i64> = (1..=n).collect();
        let x: Vec<f64> = (0..n)
            .map(|_| (normal.sample(&mut rng) * 10.0_f64).round() / 10.0)
            .collect();
        let y_lin: Vec<f64> = x.iter().map(|v| 1.0 + 2.0 * v + normal.sample(&mut rng)).collect();
        let y_bin: Vec<f64> = x
            .iter()
            .map(|v| f64::from(Bernoulli::new(sigmoid(0.3 + 1.5 * v)).unwrap().sample(&mut rng)))
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x0", DataType::Float64, false),
            Field::new("y", DataType::Float64, false),
        ]));
        let id_array = Int64Array::from(ids.clone());
        let holdout_rows: Vec<usize> = crate::hash::key_hashes(&id_array, 9)
            .iter()
            .enumerate()
            .filter(|(_, h)| in_holdout(**h, 0.3))
            .map(|(i, _)| i)
            .collect();
        assert!((500..700).contains(&holdout_rows.len()), "{}", holdout_rows.len());
        for (kind, y) in [(ModelKind::Linear, &y_lin), (ModelKind::Logistic, &y_bin)] {
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(id_array.clone()),
                    Arc::new(Float64Array::from(x.clone())),
                    Arc::new(Float64Array::from(y.clone())),
                ],
            )
            .unwrap();
            let _ = engine.context().deregister_table("t");
            engine.context().register_batch("t", batch).unwrap();
            let mut s = spec(kind, 1);
            s.features = vec!["x0".into()];
            s.holdout = 0.3;
            s.seed = 9;
            let model = Model {
                kind,
                intercept: 0.8,
                coef: vec![1.7],
                fill: None,
            };
            let got = holdout_metrics(&engine, "p", &s, &model).await.unwrap();
            let actual: Vec<f64> = holdout_rows.iter().map(|&i| y[i]).collect();
            let preds: Vec<f64> = holdout_rows.iter().map(|&i| model.predict(&[x[i]])).collect();
            let mut want = match kind {
                ModelKind::Linear => regression_metrics(&actual, &preds),
                ModelKind::Logistic => classification_metrics(&actual, &preds),
            };
            want.push(("n_test".into(), holdout_rows.len() as f64));
            assert_eq!(got.len(), want.len(), "{got:?}");
            for (name, w) in &want {
                let g = got.iter().find(|(k, _)| k == name).map(|(_, v)| *v).unwrap();
                assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{kind:?} {name}: {g} vs {w}");
            }
        }
    }
}
