//! `method: bgnbd`: the RFM summary (DataFusion), the BG/NBD and
//! Gamma-Gamma fits on its distinct rows with their counts, and scoring by
//! the stateless function of [`super::score`] (see the parent module).

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn::{count, first_value, max, min, sum};
use datafusion::logical_expr::{Expr, cast as cast_expr, lit, when};
use datafusion::prelude::{DataFrame, col};

use super::Clv;
use super::score::{self, ScoreModel};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::stages::btyd::{self, Rfm, Spend};
use crate::stages::name_value_table;

impl Clv {
    /// Per customer: frequency, recency, t, monetary_value (in time units).
    fn rfm(&self, tx: DataFrame) -> datafusion::error::Result<DataFrame> {
        let unit = self.unit.days();
        let as_of = f64::from(self.as_of_days());
        let daily = self
            .transactions(tx)?
            .aggregate(
                vec![col("__id"), col("__day")],
                vec![sum(col("__amount")).alias("__spend")],
            )?
            .select(vec![
                col("__id"),
                cast_expr(cast_expr(col("__day"), DataType::Int32), DataType::Float64).alias("__d"),
                col("__spend"),
            ])?;
        daily
            .aggregate(
                vec![col("__id")],
                vec![
                    min(col("__d")).alias("__first"),
                    max(col("__d")).alias("__last"),
                    count(lit(1)).alias("__n"),
                    sum(col("__spend")).alias("__total"),
                    first_value(col("__spend"), vec![col("__d").sort(true, false)]).alias("__first_spend"),
                ],
            )?
            .select(vec![
                col("__id").alias(self.spec.id.as_str()),
                cast_expr(col("__n") - lit(1i64), DataType::Float64).alias("frequency"),
                ((col("__last") - col("__first")) / lit(unit)).alias("recency"),
                ((lit(as_of) - col("__first")) / lit(unit)).alias("t"),
                when(
                    col("__n").gt(lit(1i64)),
                    (col("__total") - col("__first_spend")) / cast_expr(col("__n") - lit(1i64), DataType::Float64),
                )
                .otherwise(lit(0.0))?
                .alias("monetary_value"),
            ])
    }

    pub(super) async fn run_bgnbd(&self, step: &str, engine: &Engine) -> Result<Vec<DataFrame>> {
        let s = &self.spec;
        let ctx = engine.context();
        let fail = |e: datafusion::error::DataFusionError| Error::step(step, e);
        let tx = ctx.table(s.transactions.as_str()).await.map_err(fail)?;
        // One row per customer, kept in memory: the model fits on it twice
        // and scores it once.
        let rfm = self.rfm(tx).map_err(fail)?.cache().await.map_err(fail)?;
        // Customers whose first purchase is on as_of (t = 0) carry no
        // information about the process (their likelihood is 1): they are
        // scored but not fitted on.
        let triples = rfm.clone().filter(col("t").gt(lit(0.0))).map_err(fail)?;
        let data: Vec<Rfm> = counted(triples, ["frequency", "recency", "t"])
            .await
            .map_err(fail)?
            .into_iter()
            .map(|([frequency, recency, t], weight)| Rfm {
                frequency,
                recency,
                t,
                weight,
            })
            .collect();
        let customers: f64 = data.iter().map(|d| d.weight).sum();
        if data.is_empty() {
            return Err(Error::step(
                step,
                format!(
                    "no transactions in \"{}\" up to {}: nothing to fit",
                    s.transactions, s.as_of
                ),
            ));
        }
        let penalizer = self.penalizer;
        let bg = btyd::fit_bgnbd(&data, penalizer).map_err(|e| Error::step(step, format!("BG/NBD fit: {e}")))?;
        tracing::info!(
            step,
            r = bg.params.r,
            alpha = bg.params.alpha,
            a = bg.params.a,
            b = bg.params.b,
            log_likelihood = bg.log_likelihood,
            iterations = bg.iterations,
            converged = bg.converged,
            triples = data.len(),
            customers,
            "BG/NBD fitted"
        );
        if !bg.converged {
            tracing::warn!(step, "BG/NBD fit did not converge; parameters are the best found");
        }
        let repeat = rfm.clone().filter(col("frequency").gt(lit(0.0))).map_err(fail)?;
        let spends: Vec<Spend> = counted(repeat, ["frequency", "monetary_value"])
            .await
            .map_err(fail)?
            .into_iter()
            .map(|([frequency, monetary_value], weight)| Spend {
                frequency,
                monetary_value,
                weight,
            })
            .collect();
        if spends.iter().any(|sp| sp.monetary_value <= 0.0) {
            let n: f64 = spends
                .iter()
                .filter(|sp| sp.monetary_value <= 0.0)
                .map(|sp| sp.weight)
                .sum();
            return Err(Error::step(
                step,
                format!("{n} repeat buyers have a mean repeat spend <= 0; the Gamma-Gamma model needs positive spend"),
            ));
        }
        let gg = btyd::fit_gamma_gamma(&spends, penalizer)
            .map_err(|e| Error::step(step, format!("Gamma-Gamma fit: {e}")))?;
        tracing::info!(
            step,
            p = gg.params.p,
            q = gg.params.q,
            v = gg.params.v,
            log_likelihood = gg.log_likelihood,
            iterations = gg.iterations,
            converged = gg.converged,
            "Gamma-Gamma fitted"
        );

        let model = ScoreModel {
            bg: bg.params.clone(),
            gg: gg.params.clone(),
            horizon_days: self.horizon * self.unit.days(),
            unit_days: self.unit.days(),
            discount_rate: s.discount_rate,
        };
        let base = [s.id.as_str(), "frequency", "recency", "t", "monetary_value"];
        let mut first: Vec<Expr> = base.iter().map(|c| col(*c)).collect();
        first.push(
            model
                .expr(col("frequency"), col("recency"), col("t"), col("monetary_value"))
                .alias("__score"),
        );
        let mut out: Vec<Expr> = base.iter().map(|c| col(*c)).collect();
        for f in score::FIELDS {
            out.push(get_field(col("__score"), f).alias(f));
        }
        let scored = rfm.select(first).and_then(|d| d.select(out)).map_err(fail)?;
        let (p, se) = (&bg.params, &bg.std_errors);
        let (g, gse) = (&gg.params, &gg.std_errors);
        let rows = vec![
            ("r".to_string(), p.r),
            ("alpha".into(), p.alpha),
            ("a".into(), p.a),
            ("b".into(), p.b),
            ("r_se".into(), se.r),
            ("alpha_se".into(), se.alpha),
            ("a_se".into(), se.a),
            ("b_se".into(), se.b),
            ("bgnbd_log_likelihood".into(), bg.log_likelihood),
            ("bgnbd_iterations".into(), bg.iterations as f64),
            ("bgnbd_converged".into(), if bg.converged { 1.0 } else { 0.0 }),
            ("p".into(), g.p),
            ("q".into(), g.q),
            ("v".into(), g.v),
            ("p_se".into(), gse.p),
            ("q_se".into(), gse.q),
            ("v_se".into(), gse.v),
            ("gamma_gamma_log_likelihood".into(), gg.log_likelihood),
            ("gamma_gamma_iterations".into(), gg.iterations as f64),
            ("gamma_gamma_converged".into(), if gg.converged { 1.0 } else { 0.0 }),
            ("customers".into(), customers),
            ("distinct_triples".into(), data.len() as f64),
            ("repeat_buyers".into(), spends.iter().map(|sp| sp.weight).sum()),
            ("time_unit_days".into(), self.unit.days()),
            ("horizon".into(), self.horizon),
            ("discount_rate".into(), s.discount_rate),
        ];
        Ok(vec![scored, name_value_table(engine, step, "name", &rows)?])
    }
}

/// The distinct rows of `columns` (Float64) in `df` with how often each
/// occurs, sorted: what a model of many customers fits on.
async fn counted<const N: usize>(df: DataFrame, columns: [&str; N]) -> datafusion::error::Result<Vec<([f64; N], f64)>> {
    let keys: Vec<Expr> = columns.iter().map(|c| col(*c)).collect();
    let batches = df
        .aggregate(keys.clone(), vec![count(lit(1)).alias("__n")])?
        .sort(keys.into_iter().map(|k| k.sort(true, false)).collect())?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in &batches {
        let values: Vec<_> = (0..N).map(|j| b.column(j).as_primitive::<Float64Type>()).collect();
        let n = b.column(N).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            out.push((std::array::from_fn(|j| values[j].value(i)), n.value(i) as f64));
        }
    }
    Ok(out)
}
