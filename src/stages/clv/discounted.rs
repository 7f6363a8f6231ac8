//! `method: discounted`: `CLV = Σ_{t=1..T} R_t/(1+i)^t − C` as one
//! DataFusion plan (see the parent module).

use datafusion::arrow::datatypes::DataType;
use datafusion::functions::math::expr_fn::{floor, power};
use datafusion::logical_expr::{Expr, JoinType, cast as cast_expr, lit};
use datafusion::prelude::{DataFrame, coalesce, col};

use super::{Clv, CostSpec, exact_sum};
use crate::engine::Engine;
use crate::engine::expr::{column, f64_col};
use crate::error::{Error, Result};
use crate::stages::name_value_table;

impl Clv {
    pub(super) async fn run_discounted(&self, step: &str, engine: &Engine) -> Result<Vec<DataFrame>> {
        let ctx = engine.context();
        let s = &self.spec;
        let fail = |e: datafusion::error::DataFusionError| Error::step(step, e);
        let tx = self
            .transactions(ctx.table(s.transactions.as_str()).await.map_err(fail)?)
            .map_err(fail)?;
        let cost = match &s.cost {
            CostSpec::Constant(c) => lit(*c),
            CostSpec::Column(c) => f64_col(c),
        };
        let customers = ctx
            .table(s.customers.as_str())
            .await
            .map_err(fail)?
            .select(vec![
                column(&s.id).alias("__cid"),
                cast_expr(column(&s.signup), DataType::Date32).alias("__signup"),
                cost.alias("__cost"),
            ])
            .and_then(|d| d.filter(col("__signup").lt_eq(self.as_of_lit())))
            .map_err(fail)?;
        let days = |e: Expr| cast_expr(e, DataType::Int64);
        // Year of life, counted from the signup day in 365-day years; a
        // transaction dated before its signup counts in year 1.
        let year = datafusion::functions::core::expr_fn::greatest(vec![
            floor(
                cast_expr(
                    days(cast_expr(col("__day"), DataType::Int32)) - days(cast_expr(col("__signup"), DataType::Int32)),
                    DataType::Float64,
                ) / lit(365.0),
            ) + lit(1.0),
            lit(1.0),
        ]);
        let mut joined = tx
            .join(customers.clone(), JoinType::Inner, &["__id"], &["__cid"], None)
            .map_err(fail)?
            .select(vec![col("__id"), col("__amount"), year.alias("__year")])
            .map_err(fail)?;
        if let Some(h) = s.horizon_years {
            joined = joined.filter(col("__year").lt_eq(lit(f64::from(h)))).map_err(fail)?;
        }
        let disc = joined
            .aggregate(
                vec![col("__id")],
                vec![
                    exact_sum(col("__amount") * power(lit(1.0 + s.discount_rate), lit(0.0) - col("__year")))
                        .alias("__disc"),
                ],
            )
            .map_err(fail)?;
        let out = customers
            .join(disc, JoinType::Left, &["__cid"], &["__id"], None)
            .map_err(fail)?
            .select(vec![
                col("__cid").alias(s.id.as_str()),
                (coalesce(vec![col("__disc"), lit(0.0)]) - col("__cost")).alias("clv"),
            ])
            .map_err(fail)?;
        let model = name_value_table(
            engine,
            step,
            "name",
            &[
                ("discount_rate".into(), s.discount_rate),
                ("horizon_years".into(), s.horizon_years.map_or(f64::NAN, f64::from)),
            ],
        )?;
        Ok(vec![out, model])
    }
}
