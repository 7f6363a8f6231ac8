//! `predict:` linear regression (linfa-linear OLS with intercept) or logistic
//! regression (linfa-logistic, L2 `alpha`), trained on one table and scored
//! on another.
//!
//! The holdout is chosen from a stable hash of the id and `seed`, so the
//! split does not move between runs or machines. Features are z-scored for
//! the fit; the coefficients are mapped back to original units, and the
//! model is applied as a DataFusion expression (`intercept + Σ βⱼ·xⱼ`, and
//! the logistic function for `logistic`), so scoring streams with the plan.
//!
//! Outputs: `<step>` (`id`, `prediction`), `<step>_metrics` (metric, value)
//! from the holdout, `<step>_model` (name, value): intercept and one
//! coefficient per feature, in original units.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::functions::math::expr_fn::exp;
use datafusion::logical_expr::{Expr, lit};
use datafusion::prelude::{DataFrame, SessionContext, coalesce};
use linfa::DatasetBase;
use linfa::traits::Fit;
use ndarray::{Array1, Array2, Axis};
use serde::Deserialize;

use super::{
    FeatureRequest, NullPolicy, Stage, Want, check_column, collect_features, column, f64_col, name_value_schema,
    name_value_table, standardize_params, table_schema,
};
use crate::config::vars::Vars;
use crate::error::{Error, Result};

/// `predict:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictSpec {
    pub model: ModelKind,
    pub train: String,
    pub score: String,
    #[serde(default = "default_id")]
    pub id: String,
    pub label: String,
    pub features: Vec<String>,
    #[serde(default = "default_holdout")]
    pub holdout: f64,
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

fn default_id() -> String {
    "customer_id".to_string()
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
    /// Checks the parameters that need no data.
    ///
    /// # Errors
    /// Every problem, each naming the step and key.
    pub fn resolve(self, step: &str, _vars: &Vars) -> std::result::Result<Predict, Vec<String>> {
        let mut p = Vec::new();
        if self.features.is_empty() {
            p.push(format!("step \"{step}\": predict.features is empty"));
        }
        if !(0.0..1.0).contains(&self.holdout) {
            p.push(format!(
                "step \"{step}\": predict.holdout must be in [0, 1), got {}",
                self.holdout
            ));
        }
        if !(self.alpha >= 0.0) {
            p.push(format!("step \"{step}\": predict.alpha must be >= 0"));
        }
        if self.features.contains(&self.label) {
            p.push(format!(
                "step \"{step}\": label \"{}\" is also listed as a feature",
                self.label
            ));
        }
        if p.is_empty() {
            Ok(Predict { spec: self })
        } else {
            Err(p)
        }
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
            ModelKind::Logistic => logistic(eta),
        }
    }

    /// The prediction as a DataFusion expression over the feature columns.
    pub fn expr(&self, features: &[String]) -> Expr {
        let mut eta = lit(self.intercept);
        for (j, (b, f)) in self.coef.iter().zip(features).enumerate() {
            let x = match &self.fill {
                Some(fill) => coalesce(vec![f64_col(f), lit(fill[j])]),
                None => f64_col(f),
            };
            eta = eta + lit(*b) * x;
        }
        match self.kind {
            ModelKind::Linear => eta,
            ModelKind::Logistic => lit(1.0) / (lit(1.0) + exp(lit(0.0) - eta)),
        }
    }
}

fn logistic(eta: f64) -> f64 {
    if eta >= 0.0 {
        1.0 / (1.0 + (-eta).exp())
    } else {
        let e = eta.exp();
        e / (1.0 + e)
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
        &["_metrics", "_model"]
    }

    async fn schemas(&self, step: &str, ctx: &SessionContext) -> std::result::Result<Vec<SchemaRef>, Vec<String>> {
        let s = &self.spec;
        let train = table_schema(step, ctx, &s.train).await.map_err(|e| vec![e])?;
        let score = table_schema(step, ctx, &s.score).await.map_err(|e| vec![e])?;
        let mut p: Vec<String> = Vec::new();
        p.extend(check_column(step, &s.train, &train, &s.id, Want::Key));
        p.extend(check_column(step, &s.train, &train, &s.label, Want::Number));
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
        Ok(vec![out, name_value_schema("metric"), name_value_schema("name")])
    }

    async fn run(&self, step: &str, ctx: &SessionContext) -> Result<Vec<DataFrame>> {
        let s = &self.spec;
        let feats = collect_features(
            ctx,
            &FeatureRequest {
                step,
                table: &s.train,
                id: &s.id,
                features: &s.features,
                label: Some(&s.label),
                nulls: s.nulls,
                sample: s.fit_sample,
                seed: s.seed,
            },
        )
        .await?;
        let y = feats.y.clone().unwrap_or_default();
        let test: Vec<bool> = feats.hashes.iter().map(|&h| in_holdout(h, s.holdout)).collect();
        let (model, metrics) = fit(step, s, &feats.x, &y, &test, feats.fill.clone())?;
        tracing::info!(step, model = ?s.model, intercept = model.intercept, coef = ?model.coef, metrics = ?metrics, "model fitted");
        let score = ctx.table(s.score.as_str()).await.map_err(|e| Error::step(step, e))?;
        let scored = score
            .select(vec![column(&s.id), model.expr(&s.features).alias("prediction")])
            .map_err(|e| Error::step(step, e))?;
        let mut model_rows = vec![("intercept".to_string(), model.intercept)];
        for (f, b) in s.features.iter().zip(&model.coef) {
            model_rows.push((f.clone(), *b));
        }
        Ok(vec![
            scored,
            name_value_table(ctx, "metric", &metrics)?,
            name_value_table(ctx, "name", &model_rows)?,
        ])
    }
}

/// Whether a row with id hash `h` is in the holdout of fraction `f`.
pub fn in_holdout(h: u64, f: f64) -> bool {
    (h as f64) < f * 18_446_744_073_709_551_616.0
}

/// Fits on the rows where `test` is false and evaluates on the rest.
///
/// # Errors
/// Too few training rows, a non-0/1 label for `logistic`, a constant
/// feature, or a solver failure.
pub fn fit(
    step: &str,
    s: &PredictSpec,
    x: &Array2<f64>,
    y: &[f64],
    test: &[bool],
    fill: Option<Vec<f64>>,
) -> Result<(Model, Vec<(String, f64)>)> {
    let train_rows: Vec<usize> = (0..x.nrows()).filter(|&i| !test[i]).collect();
    let test_rows: Vec<usize> = (0..x.nrows()).filter(|&i| test[i]).collect();
    let d = s.features.len();
    if train_rows.len() <= d {
        return Err(Error::step(
            step,
            format!(
                "{} training rows for {d} features and an intercept: too few to fit",
                train_rows.len()
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
    let xt = x.select(Axis(0), &train_rows);
    let yt = Array1::from_iter(train_rows.iter().map(|&i| y[i]));
    let (means, stds) = standardize_params(step, &xt, &s.features)?;
    let mut zt = xt.clone();
    for j in 0..d {
        zt.column_mut(j).mapv_inplace(|v| (v - means[j]) / stds[j]);
    }
    let (zcoef, zintercept) = match s.model {
        ModelKind::Linear => {
            let fitted = linfa_linear::LinearRegression::new()
                .with_intercept(true)
                .fit(&DatasetBase::new(zt, yt))
                .map_err(|e| Error::step(step, format!("least squares failed: {e}")))?;
            (fitted.params().to_vec(), fitted.intercept())
        }
        ModelKind::Logistic => {
            let labels: Array1<u8> = yt.mapv(|v| u8::from(v == 1.0));
            if labels.iter().all(|&l| l == labels[0]) {
                return Err(Error::step(
                    step,
                    format!(
                        "label \"{}\" has only the value {} in the training rows",
                        s.label, labels[0]
                    ),
                ));
            }
            let fitted = linfa_logistic::LogisticRegression::default()
                .alpha(s.alpha)
                .max_iterations(s.max_iter)
                .with_intercept(true)
                .fit(&DatasetBase::new(zt, labels))
                .map_err(|e| Error::step(step, format!("logistic regression failed: {e}")))?;
            // linfa labels the more frequent class "positive"; we want P(1).
            let sign = if fitted.labels().pos.class == 1 { 1.0 } else { -1.0 };
            (
                fitted.params().iter().map(|b| sign * b).collect(),
                sign * fitted.intercept(),
            )
        }
    };
    // Back to original units: β = βz/σ, b = bz − Σ βz·μ/σ.
    let coef: Vec<f64> = (0..d).map(|j| zcoef[j] / stds[j]).collect();
    let intercept = zintercept - (0..d).map(|j| zcoef[j] * means[j] / stds[j]).sum::<f64>();
    let model = Model {
        kind: s.model,
        intercept,
        coef,
        fill,
    };
    let preds: Vec<f64> = test_rows
        .iter()
        .map(|&i| model.predict(x.row(i).as_slice().unwrap_or(&x.row(i).to_vec())))
        .collect();
    let actual: Vec<f64> = test_rows.iter().map(|&i| y[i]).collect();
    let mut metrics = match s.model {
        ModelKind::Linear => regression_metrics(&actual, &preds),
        ModelKind::Logistic => classification_metrics(&actual, &preds),
    };
    metrics.push(("n_train".to_string(), train_rows.len() as f64));
    metrics.push(("n_test".to_string(), test_rows.len() as f64));
    Ok((model, metrics))
}

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

#[cfg(test)]
mod tests {
    use super::*;
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
        let (m, _) = fit("p", &spec(ModelKind::Linear, 3), &x, &y, &vec![false; n], None).unwrap();
        let want = normal_equations(&x, &y);
        let got: Vec<f64> = std::iter::once(m.intercept).chain(m.coef.iter().copied()).collect();
        for (g, w) in got.iter().zip(&want) {
            assert!(((g - w) / w).abs() < 1e-8, "{got:?} vs {want:?}");
        }
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
            let p = logistic(b0 + b1 * x[[i, 0]] + b2 * x[[i, 1]]);
            y.push(if Bernoulli::new(p).unwrap().sample(&mut rng) {
                1.0
            } else {
                0.0
            });
        }
        let (m, _) = fit("p", &spec(ModelKind::Logistic, 2), &x, &y, &vec![false; n], None).unwrap();
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
            &x,
            &[0.0, 1.0, 2.0, 1.0],
            &[false; 4],
            None,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "step \"churn\": label \"y\" must be 0 or 1 for model: logistic; 1 rows are not (e.g. 2)"
        );
    }

    #[test]
    fn holdout_fraction_is_close_to_asked() {
        let hashes: Vec<u64> = (0..100_000u64).map(crate::hash::splitmix64).collect();
        let share = hashes.iter().filter(|&&h| in_holdout(h, 0.2)).count() as f64 / 1e5;
        assert!((share - 0.2).abs() < 0.005, "{share}");
    }
}
