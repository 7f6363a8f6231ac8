//! The analytics stages end to end through the binary: values computed by
//! hand on the tiny fixture, or planted in SQL-generated data.

use std::path::Path;

use datafusion::arrow::array::Array;

use super::common::{close, crmflow, error_of, f64s, read_dir, snapshot, tiny};

fn run(dir: &Path, yaml: &str, args: &[&str]) -> super::common::Output {
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
    let mut a = vec!["run", "p.yaml"];
    a.extend_from_slice(args);
    crmflow(dir, &a)
}

/// Rows of `dir` as (id, value) sorted by id.
fn by_id(dir: &Path, id: &str, value: &str) -> Vec<(i64, f64)> {
    let b = read_dir(dir);
    let mut v: Vec<(i64, f64)> = f64s(&b, id)
        .into_iter()
        .zip(f64s(&b, value))
        .map(|(i, x)| (i.unwrap() as i64, x.unwrap()))
        .collect();
    v.sort_by_key(|r| r.0);
    v
}

const CLV: &str = "name: clv_test
vars: {as_of: \"2026-11-24\"}
sources:
  customers: {url: data/customers/}
  transactions: {url: data/transactions/}
steps:
  - name: clv
    clv:
      method: discounted
      as_of: \"${as_of}\"
      discount_rate: 0.10
      HORIZON
sinks:
  - table: clv
    url: out/clv/
  - table: clv_model
    url: out/clv_model/
";

#[test]
fn discounted_clv_matches_the_formula_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let out = run(d, &CLV.replace("HORIZON", ""), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got = by_id(&d.join("out/clv"), "customer_id", "clv");
    // c1 (signup 2026-01-01): every purchase in year 1; the 999 is after as_of.
    // c2 (signup 2025-06-15): 200 on day 0 (year 1); 100 on day 365 and 10 on
    //     day 527 (year 2).
    // c3: no purchase: -C. c4 signed up after as_of: no row.
    assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    close(got[0].1, 215.5 / 1.1 - 10.0, 1e-14);
    close(got[1].1, 200.0 / 1.1 + 110.0 / 1.21 - 20.0, 1e-14);
    assert_eq!(got[2].1, -5.0);

    // A horizon of one year drops customer 2's second year.
    let out = run(d, &CLV.replace("HORIZON", "horizon_years: 1"), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got = by_id(&d.join("out/clv"), "customer_id", "clv");
    close(got[1].1, 200.0 / 1.1 - 20.0, 1e-14);

    // A constant cost.
    let out = run(d, &CLV.replace("HORIZON", "cost: 12.5"), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got = by_id(&d.join("out/clv"), "customer_id", "clv");
    assert_eq!(got[2].1, -12.5);
    close(got[0].1, 215.5 / 1.1 - 12.5, 1e-14);
}

#[test]
fn clv_rejects_negative_amounts_and_wrong_columns() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    super::common::write_crm(
        &d.join("data"),
        &[super::common::Customer { id: 1, signup: "2026-01-01", cost: 1.0 }],
        &[(1, "2026-02-01 00:00:00", 10.0), (1, "2026-03-01 00:00:00", -4.0)],
        &[],
    );
    let out = run(d, &CLV.replace("HORIZON", ""), &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        "step \"clv\": column \"amount\" of \"transactions\" has 1 negative values; set allow_negative_amounts: true to count refunds"
    );
    assert!(!d.join("out").exists());
    let out = run(d, &CLV.replace("HORIZON", "allow_negative_amounts: true"), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    close(by_id(&d.join("out/clv"), "customer_id", "clv")[0].1, 6.0 / 1.1 - 1.0, 1e-14);

    let out = run(d, &CLV.replace("HORIZON", "amount: amt"), &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        "invalid pipeline p.yaml: step \"clv\" (line 7): column \"amt\" is not in \"transactions\" (columns: transaction_id, customer_id, transaction_ts, amount, quantity, product_category)"
    );
}

/// Three planted blobs in two features, made by SQL: sizes 600, 400, 200.
const SEGMENT: &str = "name: seg_test
sources:
  customers: {url: data/customers/}
steps:
  - name: points
    sql: |
      SELECT value AS customer_id,
             CASE WHEN value <= 600 THEN 0.0 WHEN value <= 1000 THEN 50.0 ELSE 0.0 END
               + CAST(value % 7 AS DOUBLE) / 7.0 AS x,
             CASE WHEN value <= 600 THEN 0.0 WHEN value <= 1000 THEN 0.0 ELSE 80.0 END
               + CAST(value % 11 AS DOUBLE) / 11.0 AS y
      FROM generate_series(1, 1200)
  - name: segments
    segment:
      input: points
      features: [x, y]
      K
      seed: 7
sinks:
  - table: segments
    url: out/segments/
  - table: segments_profile
    url: out/profile/
  - table: segments_k_selection
    url: out/k/
";

#[test]
fn segmentation_finds_planted_blobs_in_order_of_size() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let out = run(d, &SEGMENT.replace("K", "k: 3"), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let seg = by_id(&d.join("out/segments"), "customer_id", "segment");
    for (id, s) in &seg {
        let want = if *id <= 600 { 0.0 } else if *id <= 1000 { 1.0 } else { 2.0 };
        assert_eq!(*s, want, "customer {id}");
    }
    let b = read_dir(&d.join("out/segments"));
    assert_eq!(b[0].schema().field_with_name("segment").unwrap().data_type(), &datafusion::arrow::datatypes::DataType::Int32);
    // The profile: sizes, shares, means in original units, and inertia equal
    // to the sum of squared distances of the scored rows.
    let p = read_dir(&d.join("out/profile"));
    assert_eq!(f64s(&p, "size"), vec![Some(600.0), Some(400.0), Some(200.0)]);
    close(f64s(&p, "share")[0].unwrap(), 0.5, 1e-15);
    let mean_x = f64s(&p, "mean_x");
    close(mean_x[1].unwrap(), 50.0 + (601..=1000).map(|v| (v % 7) as f64 / 7.0).sum::<f64>() / 400.0, 1e-12);
    let dist = f64s(&b, "segment_distance");
    let seg_all = f64s(&b, "segment");
    for g in 0..3 {
        let want: f64 = dist.iter().zip(&seg_all).filter(|(_, s)| s.unwrap() == g as f64).map(|(d, _)| d.unwrap().powi(2)).sum();
        close(f64s(&p, "inertia")[g].unwrap(), want, 1e-9);
    }

    // Same seed: the same bytes of scored output rows.
    let first = by_id(&d.join("out/segments"), "customer_id", "segment_distance");
    let out = run(d, &SEGMENT.replace("K", "k: 3"), &[]);
    assert_eq!(out.code, 0);
    assert_eq!(by_id(&d.join("out/segments"), "customer_id", "segment_distance"), first);

    // k chosen by silhouette.
    let out = run(d, &SEGMENT.replace("K", "k: {min: 2, max: 5}"), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let k = read_dir(&d.join("out/k"));
    let chosen: Vec<f64> = f64s(&k, "k").into_iter().zip(f64s(&k, "chosen")).filter(|(_, c)| c.unwrap() == 1.0).map(|(k, _)| k.unwrap()).collect();
    assert_eq!(chosen, vec![3.0]);
    assert_eq!(f64s(&k, "k").len(), 4);
}

/// y = 3 + 2 x1 - 0.5 x2 exactly, for a linear model; and a 0/1 label.
const PREDICT: &str = "name: predict_test
sources:
  customers: {url: data/customers/}
steps:
  - name: train
    sql: |
      SELECT value AS customer_id,
             CAST(value % 17 AS DOUBLE) AS x1,
             CAST((value * 7) % 23 AS DOUBLE) AS x2,
             3.0 + 2.0 * CAST(value % 17 AS DOUBLE) - 0.5 * CAST((value * 7) % 23 AS DOUBLE) AS y,
             CASE WHEN value % 17 > 8 THEN 1 ELSE 0 END AS label
      FROM generate_series(1, 2000)
  - name: model
    predict:
      model: linear
      train: train
      score: train
      label: y
      features: [x1, x2]
      holdout: 0.25
      seed: 3
sinks:
  - table: model
    url: out/pred/
  - table: model_metrics
    url: out/metrics/
  - table: model_model
    url: out/model/
";

#[test]
fn linear_prediction_recovers_an_exact_relation_and_scores_in_plan() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let out = run(d, PREDICT, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let m = read_dir(&d.join("out/model"));
    let names: Vec<String> = m.iter().flat_map(|b| {
        let a = b.column(0).as_any().downcast_ref::<datafusion::arrow::array::StringArray>().unwrap().clone();
        (0..a.len()).map(move |i| a.value(i).to_string())
    }).collect();
    assert_eq!(names, vec!["intercept", "x1", "x2"]);
    let v: Vec<f64> = f64s(&m, "value").into_iter().map(Option::unwrap).collect();
    close(v[0], 3.0, 1e-9);
    close(v[1], 2.0, 1e-9);
    close(v[2], -0.5, 1e-9);
    let metrics = read_dir(&d.join("out/metrics"));
    let mv: Vec<f64> = f64s(&metrics, "value").into_iter().map(Option::unwrap).collect();
    // r2, rmse, mae, n_train, n_test
    close(mv[0], 1.0, 1e-12);
    assert!(mv[1] < 1e-9 && mv[2] < 1e-9, "{mv:?}");
    assert_eq!(mv[3] + mv[4], 2000.0);
    assert!((mv[4] - 500.0).abs() < 60.0, "holdout {}", mv[4]);
    // Predictions from the plan equal the relation.
    for (id, p) in by_id(&d.join("out/pred"), "customer_id", "prediction") {
        let (x1, x2) = ((id % 17) as f64, ((id * 7) % 23) as f64);
        close(p, 3.0 + 2.0 * x1 - 0.5 * x2, 1e-9);
    }
    // The split is stable: a rerun gives the same metrics and predictions, byte for byte.
    let before = snapshot(&d.join("out/metrics"));
    let preds = by_id(&d.join("out/pred"), "customer_id", "prediction");
    assert_eq!(run(d, PREDICT, &[]).code, 0);
    let after = snapshot(&d.join("out/metrics"));
    let data = |s: &Vec<(String, Vec<u8>)>| s.iter().filter(|(p, _)| p.ends_with(".parquet")).map(|(_, b)| b.clone()).collect::<Vec<_>>();
    assert_eq!(data(&before), data(&after));
    assert_eq!(by_id(&d.join("out/pred"), "customer_id", "prediction"), preds);
}

#[test]
fn logistic_prediction_and_label_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let yaml = PREDICT.replace("model: linear", "model: logistic").replace("label: y", "label: label").replace("features: [x1, x2]", "features: [x1]\n      alpha: 0.01");
    let out = run(d, &yaml, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let metrics = read_dir(&d.join("out/metrics"));
    let mv: Vec<f64> = f64s(&metrics, "value").into_iter().map(Option::unwrap).collect();
    // auc, log_loss, accuracy, base_rate, n_train, n_test: x1 separates the
    // label perfectly, so the ranking is perfect.
    assert_eq!(mv[0], 1.0);
    assert_eq!(mv[2], 1.0);
    let preds = by_id(&d.join("out/pred"), "customer_id", "prediction");
    assert!(preds.iter().all(|(id, p)| (*p > 0.5) == (id % 17 > 8)));

    let bad = PREDICT.replace("model: linear", "model: logistic");
    let out = run(d, &bad, &[]);
    assert_eq!(out.code, 1);
    let err = error_of(&out);
    assert!(err.starts_with("step \"model\": label \"y\" must be 0 or 1 for model: logistic; "), "{err}");
}
