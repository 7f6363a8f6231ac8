//! `method: bgnbd | pareto_nbd | mbgnbd`: the RFM summary (DataFusion), the
//! purchase-model and Gamma-Gamma fits on its distinct rows with their
//! counts, scoring by the stateless functions of [`super::score`], and the
//! calibration table of [`super::calibration`] (see the parent module).

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Expr, cast as cast_expr, lit, when};
use datafusion::prelude::{DataFrame, col};

use super::Clv;
use super::score::{self, Kind, Purchase, ScoreModel};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::stages::btyd::data::Fit;
use crate::stages::btyd::{self, BgNbdParams, Rfm, Spend};
use crate::stages::name_value_table;

impl Clv {
    /// Per customer: frequency, recency, t, monetary_value (in time units).
    fn rfm(&self, tx: DataFrame) -> datafusion::error::Result<DataFrame> {
        let unit = self.unit.days();
        let as_of = f64::from(self.as_of_days());
        // Per customer in one aggregate: the number of purchase days, the
        // first and last, the exact sum of the days' spends and the first
        // day's spend (super::rfm_days; the same numbers as an aggregate by
        // (customer, day) and then by customer).
        let field = |name: &str| get_field(col("__r"), name);
        self.transactions(tx)?
            .aggregate(
                vec![col("__id")],
                vec![
                    super::rfm_days::rfm_days_udaf()
                        .call(vec![col("__day"), col("__amount")])
                        .alias("__r"),
                ],
            )?
            .select(vec![
                col("__id").alias(self.spec.id.as_str()),
                cast_expr(field("n") - lit(1i64), DataType::Float64).alias("frequency"),
                ((field("last") - field("first")) / lit(unit)).alias("recency"),
                ((lit(as_of) - field("first")) / lit(unit)).alias("t"),
                when(
                    field("n").gt(lit(1i64)),
                    (field("total") - field("first_spend")) / cast_expr(field("n") - lit(1i64), DataType::Float64),
                )
                .otherwise(lit(0.0))?
                .alias("monetary_value"),
            ])
    }

    pub(super) async fn run_model(&self, kind: Kind, step: &str, engine: &Engine) -> Result<Vec<DataFrame>> {
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
        let started = std::time::Instant::now();
        let fitted = fit_purchase(kind, &data, penalizer).map_err(|e| Error::step(step, e))?;
        tracing::info!(
            step,
            model = kind.label(),
            params = ?fitted.params,
            log_likelihood = fitted.log_likelihood,
            iterations = fitted.iterations,
            converged = fitted.converged,
            triples = data.len(),
            customers,
            seconds = started.elapsed().as_secs_f64(),
            "{} fitted",
            kind.label()
        );
        if !fitted.converged {
            tracing::warn!(
                step,
                "{} fit did not converge; parameters are the best found",
                kind.label()
            );
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
            purchase: fitted.params,
            gg: gg.params,
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
        let scored = rfm.clone().select(first).and_then(|d| d.select(out)).map_err(fail)?;
        let prefix = kind.prefix();
        let names = kind.param_names();
        let mut rows: Vec<(String, f64)> = Vec::new();
        for (n, v) in names.iter().zip(fitted.values) {
            rows.push(((*n).to_string(), v));
        }
        for (n, v) in names.iter().zip(fitted.std_errors) {
            rows.push((format!("{n}_se"), v));
        }
        let (g, gse) = (&gg.params, &gg.std_errors);
        rows.extend([
            (format!("{prefix}_log_likelihood"), fitted.log_likelihood),
            (format!("{prefix}_iterations"), fitted.iterations as f64),
            (format!("{prefix}_converged"), if fitted.converged { 1.0 } else { 0.0 }),
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
        ]);
        let mut outputs = vec![scored, name_value_table(engine, step, "name", &rows)?];
        if let Some(holdout) = self.holdout {
            let tx = ctx.table(s.transactions.as_str()).await.map_err(fail)?;
            outputs.push(self.calibration(rfm, tx, &model, holdout).map_err(fail)?);
        }
        Ok(outputs)
    }
}

/// A fitted purchase model, its parameters as a list too.
struct Fitted {
    params: Purchase,
    values: [f64; 4],
    std_errors: [f64; 4],
    log_likelihood: f64,
    iterations: u64,
    converged: bool,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::BgNbd => "BG/NBD",
            Kind::ParetoNbd => "Pareto/NBD",
            Kind::MbgNbd => "MBG/NBD",
        }
    }

    /// The prefix of the fit's rows in `<step>_model`.
    fn prefix(self) -> &'static str {
        match self {
            Kind::BgNbd => "bgnbd",
            Kind::ParetoNbd => "pareto_nbd",
            Kind::MbgNbd => "mbgnbd",
        }
    }

    fn param_names(self) -> [&'static str; 4] {
        match self {
            Kind::BgNbd | Kind::MbgNbd => ["r", "alpha", "a", "b"],
            Kind::ParetoNbd => ["r", "alpha", "s", "beta"],
        }
    }
}

fn fit_purchase(kind: Kind, data: &[Rfm], penalizer: f64) -> std::result::Result<Fitted, String> {
    let bg = |f: Fit<BgNbdParams>, wrap: fn(BgNbdParams) -> Purchase| {
        let (p, se) = (f.params, f.std_errors);
        Fitted {
            params: wrap(p),
            values: [p.r, p.alpha, p.a, p.b],
            std_errors: [se.r, se.alpha, se.a, se.b],
            log_likelihood: f.log_likelihood,
            iterations: f.iterations,
            converged: f.converged,
        }
    };
    let label = kind.label();
    let err = |e: btyd::data::FitError| format!("{label} fit: {e}");
    Ok(match kind {
        Kind::BgNbd => bg(btyd::fit_bgnbd(data, penalizer).map_err(err)?, Purchase::BgNbd),
        Kind::MbgNbd => bg(btyd::fit_mbgnbd(data, penalizer).map_err(err)?, Purchase::MbgNbd),
        Kind::ParetoNbd => {
            let f = btyd::fit_pareto_nbd(data, penalizer).map_err(err)?;
            let (p, se) = (f.params, f.std_errors);
            Fitted {
                params: Purchase::ParetoNbd(p),
                values: [p.r, p.alpha, p.s, p.beta],
                std_errors: [se.r, se.alpha, se.s, se.beta],
                log_likelihood: f.log_likelihood,
                iterations: f.iterations,
                converged: f.converged,
            }
        }
    })
}

/// The distinct rows of `columns` (Float64) in `df` with how often each
/// occurs, in no particular order: what a model of many customers fits on
/// (the fits sort their rows themselves, so their results do not depend on
/// this order).
async fn counted<const N: usize>(df: DataFrame, columns: [&str; N]) -> datafusion::error::Result<Vec<([f64; N], f64)>> {
    let keys: Vec<Expr> = columns.iter().map(|c| col(*c)).collect();
    let batches = df.aggregate(keys, vec![count(lit(1)).alias("__n")])?.collect().await?;
    let mut out = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
    for b in &batches {
        let values: Vec<_> = (0..N).map(|j| b.column(j).as_primitive::<Float64Type>()).collect();
        let n = b.column(N).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            out.push((std::array::from_fn(|j| values[j].value(i)), n.value(i) as f64));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::counted;

    /// Rows in two partitions, out of order, with repeats: counted gives each
    /// distinct row once with its count (computed here by hand; compared
    /// sorted, since the order is not part of what counted returns).
    #[tokio::test]
    async fn distinct_rows_are_counted() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Float64, false),
            Field::new("b", DataType::Float64, false),
        ]));
        let batch = |a: Vec<f64>, b: Vec<f64>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Float64Array::from(a)), Arc::new(Float64Array::from(b))],
            )
            .unwrap()
        };
        let parts = vec![
            vec![batch(vec![3.0, 1.0, 2.0, 1.0], vec![0.5, 9.0, 1.0, 2.0])],
            vec![batch(vec![1.0, 3.0, 2.0, 0.0], vec![9.0, 0.5, 1.0, 7.0])],
        ];
        let ctx = SessionContext::new();
        ctx.register_table("t", Arc::new(MemTable::try_new(schema.clone(), parts).unwrap()))
            .unwrap();
        let mut got = counted(ctx.table("t").await.unwrap(), ["a", "b"]).await.unwrap();
        got.sort_by(|(x, _), (y, _)| x[0].total_cmp(&y[0]).then(x[1].total_cmp(&y[1])));
        let want = vec![
            ([0.0, 7.0], 1.0),
            ([1.0, 2.0], 1.0),
            ([1.0, 9.0], 2.0),
            ([2.0, 1.0], 2.0),
            ([3.0, 0.5], 2.0),
        ];
        assert_eq!(got, want);
    }
}
