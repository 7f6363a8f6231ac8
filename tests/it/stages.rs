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

/// A (name, value) table (`<step>_model`, `<step>_metrics`) as pairs, in order.
fn name_values(batches: &[datafusion::arrow::array::RecordBatch]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for b in batches {
        let names = b
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .unwrap();
        let values = b
            .column(1)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Float64Array>()
            .unwrap();
        out.extend((0..b.num_rows()).map(|i| (names.value(i).to_string(), values.value(i))));
    }
    out
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
        &[super::common::Customer {
            id: 1,
            signup: "2026-01-01",
            cost: 1.0,
        }],
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
    close(
        by_id(&d.join("out/clv"), "customer_id", "clv")[0].1,
        6.0 / 1.1 - 1.0,
        1e-14,
    );

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
        let want = if *id <= 600 {
            0.0
        } else if *id <= 1000 {
            1.0
        } else {
            2.0
        };
        assert_eq!(*s, want, "customer {id}");
    }
    let b = read_dir(&d.join("out/segments"));
    assert_eq!(
        b[0].schema().field_with_name("segment").unwrap().data_type(),
        &datafusion::arrow::datatypes::DataType::Int32
    );
    // The profile: sizes, shares, means in original units, and inertia equal
    // to the sum of squared distances of the scored rows.
    let p = read_dir(&d.join("out/profile"));
    assert_eq!(f64s(&p, "size"), vec![Some(600.0), Some(400.0), Some(200.0)]);
    close(f64s(&p, "share")[0].unwrap(), 0.5, 1e-15);
    let mean_x = f64s(&p, "mean_x");
    close(
        mean_x[1].unwrap(),
        50.0 + (601..=1000).map(|v| (v % 7) as f64 / 7.0).sum::<f64>() / 400.0,
        1e-12,
    );
    let dist = f64s(&b, "segment_distance");
    let seg_all = f64s(&b, "segment");
    for g in 0..3 {
        let want: f64 = dist
            .iter()
            .zip(&seg_all)
            .filter(|(_, s)| s.unwrap() == g as f64)
            .map(|(d, _)| d.unwrap().powi(2))
            .sum();
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
    let chosen: Vec<f64> = f64s(&k, "k")
        .into_iter()
        .zip(f64s(&k, "chosen"))
        .filter(|(_, c)| c.unwrap() == 1.0)
        .map(|(k, _)| k.unwrap())
        .collect();
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
    let (names, v): (Vec<String>, Vec<f64>) = name_values(&m).into_iter().unzip();
    assert_eq!(names, vec!["intercept", "x1", "x2"]);
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
    let data = |s: &Vec<(String, Vec<u8>)>| {
        s.iter()
            .filter(|(p, _)| p.ends_with(".parquet"))
            .map(|(_, b)| b.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(data(&before), data(&after));
    assert_eq!(by_id(&d.join("out/pred"), "customer_id", "prediction"), preds);
}

#[test]
fn logistic_prediction_and_label_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let yaml = PREDICT
        .replace("model: linear", "model: logistic")
        .replace("label: y", "label: label")
        .replace("features: [x1, x2]", "features: [x1]\n      alpha: 0.01");
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
    assert!(
        err.starts_with("step \"model\": label \"y\" must be 0 or 1 for model: logistic; "),
        "{err}"
    );
}

/// BG/NBD + Gamma-Gamma on the committed sample, against the Python
/// `lifetimes` package (0.11.3), an independent implementation. Reference
/// values were produced by:
///
/// ```python
/// tx = <data/sample/transactions as pandas>; tx['d'] = tx.transaction_ts.dt.tz_localize(None).dt.floor('D')
/// s = summary_data_from_transaction_data(tx, 'customer_id', 'd', monetary_value_col='amount',
///                                        observation_period_end='2026-11-24', freq='D')
/// bg = BetaGeoFitter().fit(*s[s['T'] > 0][['frequency', 'recency', 'T']].T.values)
/// gg = GammaGammaFitter().fit(s[s.frequency > 0].frequency, s[s.frequency > 0].monetary_value)
/// bg.conditional_probability_alive(f, r, T); bg.conditional_expected_number_of_purchases_up_to_time(365, f, r, T)
/// gg.conditional_expected_average_profit(f, m)
/// ```
#[test]
fn bgnbd_matches_lifetimes_on_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sample = format!("{}/data/sample", env!("CARGO_MANIFEST_DIR"));
    let yaml = format!(
        "name: bg
sources:
  transactions: {{url: {sample}/transactions/}}
steps:
  - name: clv
    clv: {{method: bgnbd, as_of: \"2026-11-24\", time_unit: UNIT, horizon: HORIZON, discount_rate: 0.1}}
sinks:
  - table: clv
    url: out/clv/
  - table: clv_model
    url: out/model/
"
    );
    let mut alphas = Vec::new();
    for (unit, horizon, days) in [("days", "365", 1.0), ("weeks", "52.142857142857146", 7.0)] {
        let out = run(d, &yaml.replace("UNIT", unit).replace("HORIZON", horizon), &[]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let m = read_dir(&d.join("out/model"));
        let model = name_values(&m);
        let param = |n: &str| model.iter().find(|(k, _)| k == n).unwrap_or_else(|| panic!("no {n}")).1;
        close(param("r"), 1.0912722407648172, 1e-5);
        close(param("alpha"), 29.131183675154936 / days, 1e-5);
        close(param("a"), 4.680000550044335, 1e-4);
        close(param("b"), 85.83947038699066, 1e-4);
        close(param("p"), 1.5900954629442283, 1e-5);
        close(param("q"), 3.072338040072414, 1e-5);
        close(param("v"), 84.87396614537549, 1e-5);
        assert_eq!(param("bgnbd_converged"), 1.0);
        assert!(param("r_se") > 0.0 && param("r_se") < 0.1, "{}", param("r_se"));
        alphas.push(param("alpha"));

        // Per customer: (frequency, recency, T in days, monetary, p_alive, E[purchases in 365 days], E[spend]).
        let b = read_dir(&d.join("out/clv"));
        let ids = f64s(&b, "customer_id");
        let want = [
            (
                1.0,
                14.0,
                447.0,
                1095.0,
                43.27357142857143,
                4.9460065823958084e-05,
                0.00021659228548400795,
                45.13437713011086,
            ),
            (
                2.0,
                10.0,
                191.0,
                1095.0,
                45.317,
                2.8354389015841886e-07,
                9.346824339790768e-07,
                47.600697610816816,
            ),
            (
                100.0,
                1.0,
                10.0,
                1066.0,
                62.93,
                0.016984371561182994,
                0.011534821660581555,
                64.17110802949531,
            ),
            (
                4321.0,
                1.0,
                13.0,
                115.0,
                47.67,
                0.5834738257039604,
                2.578473739238155,
                57.545770874693005,
            ),
        ];
        for w in want {
            let i = ids.iter().position(|x| *x == Some(w.0)).unwrap();
            let get = |c: &str| f64s(&b, c)[i].unwrap();
            assert_eq!(get("frequency"), w.1);
            close(get("recency"), w.2 / days, 1e-15);
            close(get("t"), w.3 / days, 1e-15);
            close(get("monetary_value"), w.4, 1e-12);
            close(get("p_alive"), w.5, 1e-3);
            close(get("expected_purchases"), w.6, 1e-3);
            close(get("expected_avg_spend"), w.7, 1e-5);
            // clv is the discounted expected spend: below the undiscounted product.
            let clv = get("clv");
            assert!(
                clv > 0.0 && clv <= get("expected_purchases") * get("expected_avg_spend"),
                "{clv}"
            );
        }
    }
    // Weeks are days / 7: only alpha changes.
    close(alphas[0] / alphas[1], 7.0, 1e-6);
}

#[test]
fn null_features_are_an_error_unless_dropped_or_filled() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    // x1 is null for every 10th row (200 of 2000).
    let yaml = PREDICT
        .replace(
            "CAST(value % 17 AS DOUBLE) AS x1,",
            "CASE WHEN value % 10 = 0 THEN NULL ELSE CAST(value % 17 AS DOUBLE) END AS x1,",
        )
        .replace("      seed: 3\n", "      seed: 3\nNULLS");
    let out = run(d, &yaml.replace("NULLS", ""), &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        "step \"model\": null feature values in \"train\" (2000 rows): \"x1\" has 200 nulls; set nulls: drop or nulls: mean to fit anyway"
    );
    // drop: the relation is still exact on the remaining rows; rows with a
    // null feature get a null prediction.
    let out = run(d, &yaml.replace("NULLS", "      nulls: drop\n"), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let m = read_dir(&d.join("out/model"));
    let v: Vec<f64> = f64s(&m, "value").into_iter().map(Option::unwrap).collect();
    close(v[1], 2.0, 1e-9);
    let p = read_dir(&d.join("out/pred"));
    let preds = f64s(&p, "prediction");
    assert_eq!(preds.iter().filter(|p| p.is_none()).count(), 200);
    // mean: rows are kept, nulls filled with the mean of the fitting rows.
    let out = run(d, &yaml.replace("NULLS", "      nulls: mean\n"), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let preds = f64s(&read_dir(&d.join("out/pred")), "prediction");
    assert!(preds.iter().all(Option::is_some));
}
