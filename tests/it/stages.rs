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

/// A (name, value) table (`<step>_model`: columns `name`, `value`;
/// `<step>_metrics`: `metric`, `value`) as pairs in row order, the columns
/// found by name.
fn name_values(batches: &[datafusion::arrow::array::RecordBatch], key: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for b in batches {
        let names = b
            .column_by_name(key)
            .unwrap_or_else(|| panic!("no column {key}"))
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .unwrap();
        let values = f64s(std::slice::from_ref(b), "value");
        out.extend((0..b.num_rows()).map(|i| (names.value(i).to_string(), values[i].unwrap())));
    }
    out
}

/// The value named `name` in a (name, value) table.
#[track_caller]
fn value_of(pairs: &[(String, f64)], name: &str) -> f64 {
    let found: Vec<f64> = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| *v).collect();
    assert_eq!(found.len(), 1, "{name} in {pairs:?}");
    found[0]
}

/// The names of a (name, value) table, in order.
fn keys(pairs: &[(String, f64)]) -> Vec<&str> {
    pairs.iter().map(|(k, _)| k.as_str()).collect()
}

/// The ids among `ids` in the holdout: the stable hash of (id, seed) is
/// below `fraction`·2^64 (README, predict).
fn holdout(ids: &[i64], seed: u64, fraction: f64) -> std::collections::BTreeSet<i64> {
    let array = datafusion::arrow::array::Int64Array::from(ids.to_vec());
    crmflow::hash::key_hashes(&array, seed)
        .into_iter()
        .zip(ids)
        .filter(|(h, _)| (*h as f64) < fraction * 2f64.powi(64))
        .map(|(_, id)| *id)
        .collect()
}

/// Columns of the rows of `dir` by integer id.
fn rows_by_id(dir: &Path, id: &str, cols: &[&str]) -> std::collections::BTreeMap<i64, Vec<Option<f64>>> {
    let b = read_dir(dir);
    let ids = f64s(&b, id);
    let values: Vec<Vec<Option<f64>>> = cols.iter().map(|c| f64s(&b, c)).collect();
    let mut out = std::collections::BTreeMap::new();
    for (i, idv) in ids.iter().enumerate() {
        let prev = out.insert(idv.unwrap() as i64, values.iter().map(|v| v[i]).collect());
        assert!(prev.is_none(), "duplicate id {idv:?}");
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
             CASE WHEN value % 17 > 8 THEN 1 ELSE 0 END AS label,
             3.0 + 2.0 * CAST(value % 17 AS DOUBLE) - 0.5 * CAST((value * 7) % 23 AS DOUBLE)
               + CAST((value * 37) % 11 AS DOUBLE) - 5.0 AS y_noisy,
             CASE WHEN value % 17 + (value * 13) % 11 > 14 THEN 1 ELSE 0 END AS label_noisy
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
  - table: train
    url: out/train/
";

#[test]
fn linear_prediction_recovers_an_exact_relation_and_scores_in_plan() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let out = run(d, PREDICT, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let model = name_values(&read_dir(&d.join("out/model")), "name");
    assert_eq!(keys(&model), vec!["intercept", "x1", "x2"]);
    close(value_of(&model, "intercept"), 3.0, 1e-9);
    close(value_of(&model, "x1"), 2.0, 1e-9);
    close(value_of(&model, "x2"), -0.5, 1e-9);
    let metrics = name_values(&read_dir(&d.join("out/metrics")), "metric");
    assert_eq!(keys(&metrics), vec!["r2", "rmse", "mae", "n_train", "n_test"]);
    close(value_of(&metrics, "r2"), 1.0, 1e-12);
    assert!(value_of(&metrics, "rmse") < 1e-9, "{metrics:?}");
    assert!(value_of(&metrics, "mae") < 1e-9, "{metrics:?}");
    let ids: Vec<i64> = (1..=2000).collect();
    let test = holdout(&ids, 3, 0.25);
    assert!((test.len() as f64 - 500.0).abs() < 60.0, "holdout {}", test.len());
    assert_eq!(value_of(&metrics, "n_test"), test.len() as f64);
    assert_eq!(value_of(&metrics, "n_train"), (2000 - test.len()) as f64);
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
    let metrics = name_values(&read_dir(&d.join("out/metrics")), "metric");
    assert_eq!(
        keys(&metrics),
        vec!["auc", "log_loss", "accuracy", "base_rate", "n_train", "n_test"]
    );
    // x1 separates the label perfectly, so the ranking is perfect.
    assert_eq!(value_of(&metrics, "auc"), 1.0);
    assert_eq!(value_of(&metrics, "accuracy"), 1.0);
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
        let model = name_values(&m, "name");
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
    let model = name_values(&read_dir(&d.join("out/model")), "name");
    close(value_of(&model, "x1"), 2.0, 1e-9);
    let preds = by_id_opt(&d.join("out/pred"));
    assert_eq!(preds.len(), 2000);
    for (id, p) in &preds {
        assert_eq!(p.is_none(), id % 10 == 0, "customer {id}: {p:?}");
    }
    // mean: rows are kept; a row with a null x1 is scored as if x1 were one
    // fill value, every other row with its own values.
    let out = run(d, &yaml.replace("NULLS", "      nulls: mean\n"), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let model = name_values(&read_dir(&d.join("out/model")), "name");
    let (b0, b1, b2) = (
        value_of(&model, "intercept"),
        value_of(&model, "x1"),
        value_of(&model, "x2"),
    );
    let preds = by_id_opt(&d.join("out/pred"));
    assert_eq!(preds.len(), 2000);
    let mut fills = Vec::new();
    for (id, p) in &preds {
        let p = p.unwrap_or_else(|| panic!("customer {id} has no prediction"));
        let (x1, x2) = ((id % 17) as f64, ((id * 7) % 23) as f64);
        if id % 10 == 0 {
            fills.push((p - b0 - b2 * x2) / b1);
        } else {
            close(p, b0 + b1 * x1 + b2 * x2, 1e-9);
        }
    }
    assert_eq!(fills.len(), 200);
    for f in &fills {
        close(*f, fills[0], 1e-9);
    }
    // The fill is a mean of the non-null x1 values: of the rows fitted on
    // (what the README intends; see the ignored test below) or, as the code
    // does now, of every row of the train table.
    let ids: Vec<i64> = (1..=2000).collect();
    let test = holdout(&ids, 3, 0.25);
    let mean_of = |rows: Vec<i64>| rows.iter().map(|id| (id % 17) as f64).sum::<f64>() / rows.len() as f64;
    let fitting = mean_of(
        ids.iter()
            .copied()
            .filter(|id| id % 10 != 0 && !test.contains(id))
            .collect(),
    );
    let all = mean_of(ids.iter().copied().filter(|id| id % 10 != 0).collect());
    assert!(
        (fills[0] - fitting).abs() < 1e-9 || (fills[0] - all).abs() < 1e-9,
        "fill {} is neither the fitting rows' mean {fitting} nor the table's {all}",
        fills[0]
    );
}

/// Predictions of `dir` by id, nulls kept.
fn by_id_opt(dir: &Path) -> Vec<(i64, Option<f64>)> {
    let b = read_dir(dir);
    let mut v: Vec<(i64, Option<f64>)> = f64s(&b, "customer_id")
        .into_iter()
        .zip(f64s(&b, "prediction"))
        .map(|(i, p)| (i.unwrap() as i64, p))
        .collect();
    v.sort_by_key(|r| r.0);
    v
}

#[test]
fn nulls_mean_fills_with_the_mean_of_the_fitting_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let yaml = PREDICT
        .replace(
            "CAST(value % 17 AS DOUBLE) AS x1,",
            "CASE WHEN value % 10 = 0 THEN NULL ELSE CAST(value % 17 AS DOUBLE) END AS x1,",
        )
        .replace("      seed: 3\n", "      seed: 3\n      nulls: mean\n");
    let out = run(d, &yaml, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The fitting rows: not in the holdout; their non-null x1 values.
    let ids: Vec<i64> = (1..=2000).collect();
    let test = holdout(&ids, 3, 0.25);
    let fit: Vec<f64> = ids
        .iter()
        .filter(|id| !test.contains(id) && *id % 10 != 0)
        .map(|id| (id % 17) as f64)
        .collect();
    let mean = fit.iter().sum::<f64>() / fit.len() as f64;
    let model = name_values(&read_dir(&d.join("out/model")), "name");
    let (b0, b1, b2) = (
        value_of(&model, "intercept"),
        value_of(&model, "x1"),
        value_of(&model, "x2"),
    );
    for (id, p) in by_id_opt(&d.join("out/pred")) {
        if id % 10 == 0 {
            let x2 = ((id * 7) % 23) as f64;
            close(p.unwrap(), b0 + b1 * mean + b2 * x2, 1e-9);
        }
    }
}

#[test]
fn linear_metrics_match_an_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let out = run(d, &PREDICT.replace("label: y", "label: y_noisy"), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let metrics = name_values(&read_dir(&d.join("out/metrics")), "metric");
    assert_eq!(keys(&metrics), vec!["r2", "rmse", "mae", "n_train", "n_test"]);
    let train = rows_by_id(&d.join("out/train"), "customer_id", &["y_noisy"]);
    let preds = by_id(&d.join("out/pred"), "customer_id", "prediction");
    let ids: Vec<i64> = train.keys().copied().collect();
    let test = holdout(&ids, 3, 0.25);
    let pairs: Vec<(f64, f64)> = preds
        .iter()
        .filter(|(id, _)| test.contains(id))
        .map(|(id, p)| (train[id][0].unwrap(), *p))
        .collect();
    let n = pairs.len() as f64;
    let mean = pairs.iter().map(|(y, _)| y).sum::<f64>() / n;
    let ss_res: f64 = pairs.iter().map(|(y, p)| (y - p).powi(2)).sum();
    let ss_tot: f64 = pairs.iter().map(|(y, _)| (y - mean).powi(2)).sum();
    let r2 = 1.0 - ss_res / ss_tot;
    assert!(r2 > 0.5 && r2 < 0.99, "a noisy fit: {r2}");
    close(value_of(&metrics, "r2"), r2, 1e-9);
    close(value_of(&metrics, "rmse"), (ss_res / n).sqrt(), 1e-9);
    close(
        value_of(&metrics, "mae"),
        pairs.iter().map(|(y, p)| (y - p).abs()).sum::<f64>() / n,
        1e-9,
    );
    assert_eq!(value_of(&metrics, "n_test"), n);
    assert_eq!(value_of(&metrics, "n_train"), 2000.0 - n);
}

#[test]
fn logistic_metrics_match_an_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let yaml = PREDICT
        .replace("model: linear", "model: logistic")
        .replace("label: y", "label: label_noisy")
        .replace("features: [x1, x2]", "features: [x1]");
    let out = run(d, &yaml, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let metrics = name_values(&read_dir(&d.join("out/metrics")), "metric");
    assert_eq!(
        keys(&metrics),
        vec!["auc", "log_loss", "accuracy", "base_rate", "n_train", "n_test"]
    );
    let train = rows_by_id(&d.join("out/train"), "customer_id", &["label_noisy"]);
    let preds = by_id(&d.join("out/pred"), "customer_id", "prediction");
    let ids: Vec<i64> = train.keys().copied().collect();
    let test = holdout(&ids, 3, 0.25);
    let pairs: Vec<(f64, f64)> = preds
        .iter()
        .filter(|(id, _)| test.contains(id))
        .map(|(id, p)| (train[id][0].unwrap(), *p))
        .collect();
    let n = pairs.len() as f64;
    // AUC as the share of (positive, negative) pairs ranked right, ties half.
    let (pos, neg): (Vec<&(f64, f64)>, Vec<&(f64, f64)>) = pairs.iter().partition(|(y, _)| *y == 1.0);
    let mut right = 0.0;
    for (_, p) in &pos {
        for (_, q) in &neg {
            right += if p > q {
                1.0
            } else if p == q {
                0.5
            } else {
                0.0
            };
        }
    }
    let auc = right / (pos.len() * neg.len()) as f64;
    assert!(auc > 0.6 && auc < 0.99, "a noisy label: {auc}");
    let log_loss = -pairs
        .iter()
        .map(|(y, p)| {
            let p = p.clamp(1e-15, 1.0 - 1e-15);
            y * p.ln() + (1.0 - y) * (1.0 - p).ln()
        })
        .sum::<f64>()
        / n;
    let accuracy = pairs.iter().filter(|(y, p)| (*p >= 0.5) == (*y == 1.0)).count() as f64 / n;
    let base_rate = pos.len() as f64 / n;
    close(value_of(&metrics, "auc"), auc, 1e-12);
    close(value_of(&metrics, "log_loss"), log_loss, 1e-9);
    close(value_of(&metrics, "accuracy"), accuracy, 1e-12);
    close(value_of(&metrics, "base_rate"), base_rate, 1e-12);
    assert_eq!(value_of(&metrics, "n_test"), n);
    assert_eq!(value_of(&metrics, "n_train"), 2000.0 - n);
}

/// A small noisy logistic problem: two features on different scales, a
/// label drawn against a deterministic pseudo-uniform.
const ALPHA: &str = "name: alpha_test
sources:
  customers: {url: data/customers/}
steps:
  - name: train
    sql: |
      SELECT value AS customer_id, x1, x2,
             CASE WHEN CAST((value * 7919) % 1000 AS DOUBLE) / 1000.0
                       < 1.0 / (1.0 + exp(-(0.3 + 0.8 * (x1 - 5.0) - 0.04 * (x2 - 44.0)))) THEN 1 ELSE 0 END AS label
      FROM (SELECT value, CAST((value * 37) % 101 AS DOUBLE) / 10.0 AS x1, CAST((value * 53) % 89 AS DOUBLE) AS x2
            FROM generate_series(1, 300))
  - name: model
    predict:
      model: logistic
      train: train
      score: train
      label: label
      features: [x1, x2]
      holdout: 0.2
      seed: 9
      alpha: ALPHA
sinks:
  - table: model_model
    url: out/model/
  - table: train
    url: out/train/
";

/// Minimizes Σ log-loss + ½·alpha·‖w‖² over (b, w) in standardized space
/// (population std) by Newton's method; returns (intercept, coefficients)
/// in original units, and the standardized coefficients.
fn penalized_logistic(x: &[Vec<f64>], y: &[f64], alpha: f64) -> (f64, Vec<f64>, Vec<f64>) {
    let n = x.len();
    let d = x[0].len();
    let mean: Vec<f64> = (0..d).map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n as f64).collect();
    let std: Vec<f64> = (0..d)
        .map(|j| (x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n as f64).sqrt())
        .collect();
    let z: Vec<Vec<f64>> = x
        .iter()
        .map(|r| {
            std::iter::once(1.0)
                .chain((0..d).map(|j| (r[j] - mean[j]) / std[j]))
                .collect()
        })
        .collect();
    let k = d + 1;
    let mut theta = vec![0.0; k];
    for _ in 0..100 {
        let mut g = vec![0.0; k];
        let mut h = vec![vec![0.0; k]; k];
        for (zi, yi) in z.iter().zip(y) {
            let eta: f64 = zi.iter().zip(&theta).map(|(a, b)| a * b).sum();
            let p = 1.0 / (1.0 + (-eta).exp());
            for a in 0..k {
                g[a] += (p - yi) * zi[a];
                for b in 0..k {
                    h[a][b] += p * (1.0 - p) * zi[a] * zi[b];
                }
            }
        }
        for a in 1..k {
            g[a] += alpha * theta[a];
            h[a][a] += alpha;
        }
        let step = solve(h, g);
        for a in 0..k {
            theta[a] -= step[a];
        }
        if step.iter().map(|s| s.abs()).fold(0.0, f64::max) < 1e-14 {
            break;
        }
    }
    let w: Vec<f64> = theta[1..].to_vec();
    let coef: Vec<f64> = (0..d).map(|j| w[j] / std[j]).collect();
    let intercept = theta[0] - (0..d).map(|j| w[j] * mean[j] / std[j]).sum::<f64>();
    (intercept, coef, w)
}

/// Solves a x = b by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let k = b.len();
    for c in 0..k {
        let piv = (c..k).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap();
        a.swap(c, piv);
        b.swap(c, piv);
        for r in 0..k {
            if r != c {
                let f = a[r][c] / a[c][c];
                for q in c..k {
                    a[r][q] -= f * a[c][q];
                }
                b[r] -= f * b[c];
            }
        }
    }
    (0..k).map(|i| b[i] / a[i][i]).collect()
}

#[test]
fn logistic_alpha_is_an_l2_penalty_on_standardized_coefficients() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let mut standardized = Vec::new();
    for alpha in ["0", "40"] {
        let out = run(d, &ALPHA.replace("ALPHA", alpha), &[]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let train = rows_by_id(&d.join("out/train"), "customer_id", &["x1", "x2", "label"]);
        let ids: Vec<i64> = train.keys().copied().collect();
        let test = holdout(&ids, 9, 0.2);
        let fit: Vec<&Vec<Option<f64>>> = train
            .iter()
            .filter(|(id, _)| !test.contains(id))
            .map(|(_, r)| r)
            .collect();
        let x: Vec<Vec<f64>> = fit.iter().map(|r| vec![r[0].unwrap(), r[1].unwrap()]).collect();
        let y: Vec<f64> = fit.iter().map(|r| r[2].unwrap()).collect();
        let base = y.iter().sum::<f64>() / y.len() as f64;
        assert!(base > 0.2 && base < 0.8, "label rate {base}");
        let (b, coef, w) = penalized_logistic(&x, &y, alpha.parse().unwrap());
        let model = name_values(&read_dir(&d.join("out/model")), "name");
        assert_eq!(keys(&model), vec!["intercept", "x1", "x2"]);
        let near = |got: f64, want: f64| {
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "alpha {alpha}: got {got}, want {want} ({model:?})"
            )
        };
        near(value_of(&model, "intercept"), b);
        near(value_of(&model, "x1"), coef[0]);
        near(value_of(&model, "x2"), coef[1]);
        standardized.push(w);
    }
    // The penalty shrinks every standardized coefficient.
    for j in 0..2 {
        assert!(
            standardized[1][j].abs() < 0.8 * standardized[0][j].abs(),
            "{standardized:?}"
        );
    }
}
