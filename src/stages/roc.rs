//! `<step>_roc` of a logistic `predict:`: the ROC curve on the holdout, at
//! the 101 thresholds k/100 (k = 0..100). A holdout row counts as predicted
//! positive at threshold k/100 when ⌊100·p⌋ ≥ k; `tpr` is the share of the
//! positive rows predicted positive and `fpr` the share of the negative
//! ones. One aggregate in the plan (rows per ⌊100·p⌋ bucket, at most 101
//! back), then running sums from the top.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::compute::cast as cast_array;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::functions::core::expr_fn::{greatest, least};
use datafusion::functions::math::expr_fn::floor;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{cast, lit};
use datafusion::prelude::{DataFrame, col};

use crate::engine::Engine;
use crate::error::{Error, Result};

/// Thresholds 0, 0.01, ..., 1.
pub const STEPS: usize = 100;

/// threshold, tpr, fpr.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("threshold", DataType::Float64, false),
        Field::new("tpr", DataType::Float64, true),
        Field::new("fpr", DataType::Float64, true),
    ]))
}

/// The ROC table of `holdout` (columns `__y`, 0 or 1, and `__p`, the
/// predicted probability), as a literal plan.
///
/// # Errors
/// A query failure, named after the step.
pub async fn table(engine: &Engine, step: &str, holdout: DataFrame) -> Result<DataFrame> {
    let fail = |e: datafusion::error::DataFusionError| Error::step(step, e);
    let bucket = greatest(vec![
        least(vec![
            cast(floor(col("__p") * lit(STEPS as f64)), DataType::Int64),
            lit(STEPS as i64),
        ]),
        lit(0i64),
    ]);
    let batches = holdout
        .aggregate(
            vec![bucket.alias("__bucket")],
            vec![count(lit(1)).alias("__n"), sum(col("__y")).alias("__pos")],
        )
        .map_err(fail)?
        .collect()
        .await
        .map_err(fail)?;
    let mut n = vec![0.0; STEPS + 1];
    let mut pos = vec![0.0; STEPS + 1];
    for b in &batches {
        let k = cast_array(b.column(0), &DataType::Int64).map_err(|e| Error::step(step, e))?;
        let c = cast_array(b.column(1), &DataType::Float64).map_err(|e| Error::step(step, e))?;
        let p = cast_array(b.column(2), &DataType::Float64).map_err(|e| Error::step(step, e))?;
        let k = k.as_any().downcast_ref::<Int64Array>().expect("Int64");
        let c = c.as_any().downcast_ref::<Float64Array>().expect("Float64");
        let p = p.as_any().downcast_ref::<Float64Array>().expect("Float64");
        for i in 0..b.num_rows() {
            let j = k.value(i).clamp(0, STEPS as i64) as usize;
            n[j] += c.value(i);
            pos[j] += if p.is_valid(i) { p.value(i) } else { 0.0 };
        }
    }
    let (all_pos, all_neg) = (pos.iter().sum::<f64>(), n.iter().sum::<f64>() - pos.iter().sum::<f64>());
    let share = |x: f64, of: f64| if of > 0.0 { Some(x / of) } else { None };
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut rows = vec![(0.0, None, None); STEPS + 1];
    for k in (0..=STEPS).rev() {
        tp += pos[k];
        fp += n[k] - pos[k];
        rows[k] = (k as f64 / STEPS as f64, share(tp, all_pos), share(fp, all_neg));
    }
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            Arc::new(Float64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        ],
    )
    .map_err(|e| Error::step(step, e))?;
    engine.values(&batch).map_err(|e| Error::step(step, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Float64Type;

    #[tokio::test]
    async fn tpr_and_fpr_count_the_holdout_rows_at_each_threshold() {
        let engine = Engine::new(&Default::default(), Default::default(), Default::default()).unwrap();
        // Positives at 0.9, 0.6, 0.3; negatives at 0.7, 0.2, 0.05 (and 1.0,
        // which counts at threshold 1).
        let df = engine
            .context()
            .sql(
                "SELECT CAST(y AS DOUBLE) AS __y, p AS __p FROM (VALUES (1, 0.9), (1, 0.6), (1, 0.3), (0, 0.7), (0, 0.2), (0, 0.05), (0, 1.0)) AS t(y, p)",
            )
            .await
            .unwrap();
        let rows = table(&engine, "s", df).await.unwrap().collect().await.unwrap();
        let b = datafusion::arrow::compute::concat_batches(&rows[0].schema(), &rows).unwrap();
        assert_eq!(b.num_rows(), 101);
        let col = |j: usize| b.column(j).as_primitive::<Float64Type>().clone();
        let (t, tpr, fpr) = (col(0), col(1), col(2));
        let at = |k: usize| (t.value(k), tpr.value(k), fpr.value(k));
        assert_eq!(at(0), (0.0, 1.0, 1.0));
        // p >= 0.25: positives 0.9, 0.6, 0.3; negatives 0.7, 1.0.
        assert_eq!(at(25), (0.25, 1.0, 0.5));
        // p >= 0.65: positive 0.9; negatives 0.7, 1.0.
        assert_eq!(at(65), (0.65, 1.0 / 3.0, 0.5));
        // p >= 0.95: only the negative at 1.0.
        assert_eq!(at(95), (0.95, 0.0, 0.25));
        assert_eq!(at(100), (1.0, 0.0, 0.25));
    }
}
