//! The benchmark job (`bench/bench_job.yaml`) runs on the bundled sample:
//! its scores are one row per customer in `customer_id` order, and its OLS
//! holdout is exactly the rows its `holdout_column` marks
//! (`customer_id % 5 = 0` among the customers signed up by the cutoff).

use std::path::Path;

use datafusion::arrow::array::Date32Array;

use super::common::{crmflow, day, f64s, read_dir};

fn metric(dir: &Path, name: &str) -> f64 {
    let b = read_dir(dir);
    let names: Vec<String> = b
        .iter()
        .flat_map(|b| {
            let a = b.column_by_name("metric").unwrap();
            let a = a
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
                .unwrap();
            a.iter().map(|v| v.unwrap().to_string()).collect::<Vec<_>>()
        })
        .collect();
    let i = names.iter().position(|n| n == name).unwrap();
    f64s(&b, "value")[i].unwrap()
}

#[test]
fn the_bench_job_scores_every_customer_in_order_and_holds_out_by_its_column() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let data = format!("data={}", root.join("data/sample").display());
    let outv = format!("out={}", out.display());
    let job = root.join("bench/bench_job.yaml");
    let r = crmflow(
        tmp.path(),
        &["run", job.to_str().unwrap(), "--var", &data, "--var", &outv],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);

    let scores = read_dir(&out.join("customer_scores"));
    let ids: Vec<f64> = f64s(&scores, "customer_id").into_iter().map(Option::unwrap).collect();
    assert_eq!(ids.len(), 5000);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "not in customer_id order");
    let signup: Vec<i32> = scores
        .iter()
        .flat_map(|b| {
            let a = b.column_by_name("signup_date").unwrap();
            let a = a.as_any().downcast_ref::<Date32Array>().unwrap();
            a.values().to_vec()
        })
        .collect();
    let cutoff = day("2025-11-24");
    let trained: Vec<i64> = ids
        .iter()
        .zip(&signup)
        .filter(|(_, s)| **s <= cutoff)
        .map(|(i, _)| *i as i64)
        .collect();
    let holdout = trained.iter().filter(|i| *i % 5 == 0).count();
    assert!(holdout > 100, "{holdout}");
    let metrics = out.join("ols_metrics");
    assert_eq!(metric(&metrics, "n_test"), holdout as f64);
    assert_eq!(metric(&metrics, "n_train"), (trained.len() - holdout) as f64);

    let summary = read_dir(&out.join("segment_summary"));
    let sizes: Vec<f64> = f64s(&summary, "n_customers").into_iter().map(Option::unwrap).collect();
    assert_eq!(sizes.len(), 5);
    assert_eq!(sizes.iter().sum::<f64>(), 5000.0);
    assert!(
        sizes.windows(2).all(|w| w[0] >= w[1]),
        "segment 0 is the largest: {sizes:?}"
    );
}
