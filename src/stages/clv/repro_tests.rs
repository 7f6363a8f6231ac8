//! Every CLV method gives the same outputs to the bit whatever the thread
//! count, partitioning, batch sizes and batch order of its input.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::datasource::MemTable;
use datafusion::prelude::{ParquetReadOptions, col, lit};

use super::*;
use crate::engine::{Engine, Settings};

/// The sample's transactions and customers of customer_id < 500, as batches.
async fn sample() -> (Vec<RecordBatch>, Vec<RecordBatch>) {
    let ctx = SessionContext::new();
    let dir = env!("CARGO_MANIFEST_DIR");
    let mut out = Vec::new();
    for t in ["transactions", "customers"] {
        let df = ctx
            .read_parquet(format!("{dir}/data/sample/{t}/"), ParquetReadOptions::default())
            .await
            .unwrap()
            .filter(col("customer_id").lt(lit(500i64)))
            .unwrap();
        out.push(df.collect().await.unwrap());
    }
    let c = out.pop().unwrap();
    (out.pop().unwrap(), c)
}

/// `batches` re-cut into batches of `size` rows dealt round-robin to
/// `parts` partitions, in reverse order when `reverse`.
fn recut(batches: &[RecordBatch], size: usize, parts: usize, reverse: bool) -> Vec<Vec<RecordBatch>> {
    let all = concat_batches(&batches[0].schema(), batches).unwrap();
    let mut pieces: Vec<RecordBatch> = (0..all.num_rows())
        .step_by(size)
        .map(|o| all.slice(o, size.min(all.num_rows() - o)))
        .collect();
    if reverse {
        pieces.reverse();
    }
    let mut out = vec![Vec::new(); parts];
    for (i, p) in pieces.into_iter().enumerate() {
        out[i % parts].push(p);
    }
    out
}

/// Every output of the step, rows sorted by their first column (and the
/// second, for name/value tables), as bits.
async fn outputs(yaml: &str, threads: usize, size: usize, reverse: bool) -> Vec<Vec<Vec<u64>>> {
    let (tx, cu) = sample().await;
    let settings = Settings {
        target_partitions: Some(threads),
        ..Default::default()
    };
    let engine = Engine::new(&settings, Default::default(), crate::stages::functions()).unwrap();
    for (name, b) in [("transactions", &tx), ("customers", &cu)] {
        let parts = recut(b, size, threads, reverse);
        let t = MemTable::try_new(b[0].schema(), parts).unwrap();
        engine.context().register_table(name, Arc::new(t)).unwrap();
    }
    let spec: ClvSpec = serde_saphyr::from_str(yaml).unwrap();
    let clv = spec.resolve("clv", &Vars::default()).unwrap();
    let mut tables = Vec::new();
    for df in clv.run("clv", &engine).await.unwrap() {
        let b = df.collect().await.unwrap();
        let all = concat_batches(&b[0].schema(), &b).unwrap();
        let keys: Vec<_> = (0..all.num_columns().min(2))
            .map(|i| datafusion::arrow::compute::SortColumn {
                values: all.column(i).clone(),
                options: None,
            })
            .collect();
        let sorted = take_record_batch(&all, &lexsort_to_indices(&keys, None).unwrap()).unwrap();
        let cols = sorted
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                DataType::Float64 => {
                    let a = c.as_primitive::<Float64Type>();
                    (0..a.len()).map(|i| a.value(i).to_bits()).collect()
                }
                _ => {
                    let s = datafusion::arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &Default::default())
                        .unwrap();
                    (0..c.len())
                        .map(|i| {
                            let v = s.value(i).to_string();
                            v.bytes()
                                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
                        })
                        .collect()
                }
            })
            .collect();
        tables.push(cols);
    }
    tables
}

#[tokio::test]
async fn clv_outputs_are_identical_for_any_partitioning_and_batch_order() {
    for yaml in [
        "{method: discounted, as_of: '2026-11-24'}",
        "{method: bgnbd, as_of: '2025-11-24', holdout_from: '2025-11-25', holdout_to: '2026-11-24'}",
        "{method: mbgnbd, as_of: '2025-11-24', holdout_from: '2025-11-25', holdout_to: '2026-11-24'}",
        "{method: pareto_nbd, as_of: '2026-11-24'}",
    ] {
        let want = outputs(yaml, 1, 1 << 20, false).await;
        assert!(want[0][0].len() > 400, "{yaml}: {} rows", want[0][0].len());
        for (threads, size, reverse) in [(4, 7, true), (3, 1000, false)] {
            let got = outputs(yaml, threads, size, reverse).await;
            assert_eq!(got.len(), want.len());
            for (t, (g, w)) in got.iter().zip(&want).enumerate() {
                for (c, (gc, wc)) in g.iter().zip(w).enumerate() {
                    let diff = gc.iter().zip(wc).filter(|(a, b)| a != b).count();
                    assert_eq!(
                        diff, 0,
                        "{yaml}: output {t} column {c}: {diff} values differ ({threads} partitions, batches of {size})"
                    );
                }
            }
        }
    }
}
