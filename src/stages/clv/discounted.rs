//! `method: discounted`: `CLV = Σ_{t=1..T} R_t/(1+i)^t − C` as one
//! DataFusion plan (see the parent module).

use datafusion::arrow::datatypes::DataType;
use datafusion::functions::math::expr_fn::floor;
use datafusion::logical_expr::{Expr, JoinType, cast as cast_expr, lit};
use datafusion::prelude::{DataFrame, coalesce, col};

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, Float64Array};
use datafusion::arrow::compute::kernels::arity::unary;
use datafusion::arrow::datatypes::Float64Type;
use datafusion::common::{ScalarValue, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

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
                    exact_sum(col("__amount") * discount_udf().call(vec![col("__year"), lit(1.0 + s.discount_rate)]))
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

/// The name of [`discount_udf`].
pub const DISCOUNT: &str = "crmflow_discount";

/// Whole years up to this one have their factor computed once per batch.
const MEMO_YEARS: usize = 128;

/// `crmflow_discount(year, base)`: `base` (a literal, above 0) raised to
/// `0 − year`, bit for bit what `power(base, 0.0 - year)` gives. Years are
/// whole numbers from 1 (a customer's year of life) and few, so the factor
/// of each whole year up to [`MEMO_YEARS`] is computed once per batch
/// rather than once per transaction; other years are computed as they come.
pub fn discount_udf() -> ScalarUDF {
    ScalarUDF::from(Discount {
        signature: Signature::exact(vec![DataType::Float64, DataType::Float64], Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Discount {
    signature: Signature,
}

impl ScalarUDFImpl for Discount {
    fn name(&self) -> &str {
        DISCOUNT
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        let base = match &args.args[1] {
            ColumnarValue::Scalar(ScalarValue::Float64(Some(b))) if *b > 0.0 => *b,
            other => return exec_err!("{DISCOUNT}: the base must be a literal above 0, got {other:?}"),
        };
        let factor = |y: f64| base.powf(0.0 - y);
        let memo: Vec<f64> = (0..=MEMO_YEARS).map(|y| factor(y as f64)).collect();
        let of = |y: f64| {
            if y >= 0.0 && y <= MEMO_YEARS as f64 && y.fract() == 0.0 {
                memo[y as usize]
            } else {
                factor(y)
            }
        };
        match &args.args[0] {
            ColumnarValue::Scalar(ScalarValue::Float64(y)) => {
                Ok(ColumnarValue::Scalar(ScalarValue::Float64(y.map(of))))
            }
            ColumnarValue::Array(a) => {
                let years = a.as_primitive::<Float64Type>();
                let out: Float64Array = unary(years, of);
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
            other => exec_err!("{DISCOUNT}: the year must be a Float64, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, RecordBatch};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::prelude::SessionContext;

    /// The factor equals DataFusion's `power(base, 0.0 - year)` bit for bit:
    /// whole years inside and past the memo, fractions, negatives, ±0,
    /// infinities, NaN and nulls, for bases around and far from 1; and a
    /// literal year is computed like a column's.
    #[tokio::test]
    async fn the_factor_is_power_of_the_base_to_minus_the_year_bit_for_bit() {
        let mut years: Vec<Option<f64>> = (0..=300).map(|y| Some(f64::from(y))).collect();
        years.extend(
            [
                -0.0,
                -1.0,
                -7.0,
                0.5,
                1.5,
                127.999_999_999_999_99,
                128.000_000_000_000_03,
                1e6,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NAN,
            ]
            .map(Some),
        );
        years.push(None);
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("y", DataType::Float64, true)])),
            vec![Arc::new(Float64Array::from(years.clone()))],
        )
        .unwrap();
        let ctx = SessionContext::new();
        ctx.register_udf(discount_udf());
        ctx.register_batch("t", batch).unwrap();
        for base in [1.1, 1.0, 1.0 + f64::EPSILON, 1.1e-16, 0.5, 3.7, 1e300] {
            let out = ctx
                .sql(&format!(
                    "SELECT power({base:e}, 0.0 - y) AS want, {DISCOUNT}(y, {base:e}) AS got, \
                     {DISCOUNT}(CAST(3 AS DOUBLE), {base:e}) AS lit3 FROM t"
                ))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let out = &out[0];
            let (want, got, lit3) = (
                out.column(0).as_primitive::<Float64Type>(),
                out.column(1).as_primitive::<Float64Type>(),
                out.column(2).as_primitive::<Float64Type>(),
            );
            assert_eq!(got.len(), years.len());
            for (i, y) in years.iter().enumerate() {
                assert_eq!(got.is_null(i), y.is_none(), "base {base}, year {y:?}");
                if y.is_some() {
                    assert_eq!(
                        got.value(i).to_bits(),
                        want.value(i).to_bits(),
                        "base {base}, year {y:?}: {} against {}",
                        got.value(i),
                        want.value(i)
                    );
                }
                assert_eq!(lit3.value(i).to_bits(), base.powf(-3.0).to_bits(), "base {base}");
            }
        }
        let err = ctx
            .sql(&format!("SELECT {DISCOUNT}(y, 0.0) FROM t"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("crmflow_discount: the base must be a literal above 0, got Scalar(Float64(0))"),
            "{err}"
        );
    }
}
