//! `holdout_from` / `holdout_to`: the calibration/holdout table of a model
//! method, `<step>_calibration`, as lifetimes'
//! `plot_calibration_purchases_vs_holdout_purchases` shows it.
//!
//! The model is fitted on the transactions up to `as_of` (the calibration
//! period). For every customer scored, the actual holdout purchases are the
//! distinct purchase days in [holdout_from, holdout_to] (one a day, as the
//! model counts them), and the predicted ones E[Y(t₂)] − E[Y(t₁)] with t₁ =
//! the days from the end of `as_of` to the start of `holdout_from` and t₂
//! to the end of `holdout_to` (t₁ = 0 when the holdout starts the day after
//! `as_of`). Rows: the calibration frequency buckets "0" … "6" and "7+"
//! (those with customers) and "total", each with the number of customers,
//! the mean actual and mean predicted holdout purchases, the mean absolute
//! error and the Pearson correlation of predicted and actual per customer.
//! Sums are exact (decimal, 18 places), so the table does not depend on the
//! order rows arrive in.

use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions::math::expr_fn::{abs, sqrt};
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{JoinType, cast as cast_expr, lit, when};
use datafusion::prelude::{DataFrame, coalesce, col};

use super::score::ScoreModel;
use super::{Clv, exact_sum};

/// The columns of `<step>_calibration`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("bucket", DataType::Utf8, true),
        Field::new("customers", DataType::Int64, false),
        Field::new("actual_mean", DataType::Float64, true),
        Field::new("predicted_mean", DataType::Float64, true),
        Field::new("mae", DataType::Float64, true),
        Field::new("correlation", DataType::Float64, true),
    ]))
}

impl Clv {
    pub(super) fn calibration(
        &self,
        rfm: DataFrame,
        tx: DataFrame,
        model: &ScoreModel,
        (from, to): (NaiveDate, NaiveDate),
    ) -> datafusion::error::Result<DataFrame> {
        let id = self.spec.id.as_str();
        let actual = self
            .transactions_between(tx, Some(from), to)?
            .aggregate(vec![col("__id"), col("__day")], vec![])?
            .aggregate(vec![col("__id")], vec![count(lit(1)).alias("__n")])?;
        let start_days = (from - self.as_of).num_days() as f64 - 1.0;
        let end_days = (to - self.as_of).num_days() as f64;
        let expected = |days: f64| {
            let m = ScoreModel {
                horizon_days: days,
                ..model.clone()
            };
            get_field(
                m.expr(col("frequency"), col("recency"), col("t"), col("monetary_value")),
                "expected_purchases",
            )
        };
        let predicted = if start_days > 0.0 {
            expected(end_days) - expected(start_days)
        } else {
            expected(end_days)
        };
        let order = cast_expr(
            datafusion::functions::core::expr_fn::least(vec![col("frequency"), lit(7.0)]),
            DataType::Int64,
        );
        let per = rfm
            .select(vec![
                col(id).alias("__cid"),
                order.alias("__order"),
                predicted.alias("__p"),
            ])?
            .join(actual, JoinType::Left, &["__cid"], &["__id"], None)?
            .select(vec![
                col("__order"),
                col("__p"),
                cast_expr(coalesce(vec![col("__n"), lit(0i64)]), DataType::Float64).alias("__a"),
            ])?;
        let sums = || {
            vec![
                count(lit(1)).alias("customers"),
                exact_sum(col("__a")).alias("__sa"),
                exact_sum(col("__p")).alias("__sp"),
                exact_sum(abs(col("__p") - col("__a"))).alias("__sd"),
                exact_sum(col("__a") * col("__a")).alias("__saa"),
                exact_sum(col("__p") * col("__p")).alias("__spp"),
                exact_sum(col("__a") * col("__p")).alias("__sap"),
            ]
        };
        let cols = ["customers", "__sa", "__sp", "__sd", "__saa", "__spp", "__sap"];
        let by_bucket = per.clone().aggregate(vec![col("__order")], sums())?;
        let mut total_cols = vec![lit(8i64).alias("__order")];
        total_cols.extend(cols.iter().map(|c| col(*c)));
        let total = per.aggregate(vec![], sums())?.select(total_cols)?;
        let n = || cast_expr(col("customers"), DataType::Float64);
        let mean = |c: &str| col(c) / n();
        let cov = mean("__sap") - mean("__sa") * mean("__sp");
        let var_a = mean("__saa") - mean("__sa") * mean("__sa");
        let var_p = mean("__spp") - mean("__sp") * mean("__sp");
        let bucket = when(col("__order").eq(lit(8i64)), lit("total"))
            .when(col("__order").eq(lit(7i64)), lit("7+"))
            .otherwise(cast_expr(col("__order"), DataType::Utf8))?;
        by_bucket
            .union(total)?
            .sort(vec![col("__order").sort(true, false)])?
            .select(vec![
                bucket.alias("bucket"),
                col("customers"),
                mean("__sa").alias("actual_mean"),
                mean("__sp").alias("predicted_mean"),
                mean("__sd").alias("mae"),
                (cov / sqrt(var_a * var_p)).alias("correlation"),
            ])
    }
}
