//! The CLV model methods (`bgnbd`, `pareto_nbd`, `mbgnbd`) and the
//! calibration/holdout table, through the binary on the committed sample
//! and on generated data. Expected values come from
//! tests/reference/btyd_pareto_mbg.py (an independent scipy/mpmath
//! implementation).

use std::path::Path;

use datafusion::arrow::array::{Array, RecordBatch, StringArray};

use super::common::{close, crmflow, f64s, read_dir};

fn run(dir: &Path, yaml: &str) -> super::common::Output {
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
    crmflow(dir, &["run", "p.yaml"])
}

fn sample() -> String {
    format!("{}/data/sample", env!("CARGO_MANIFEST_DIR"))
}

/// The `value` of row `name` of a `<step>_model` table.
fn param(batches: &[RecordBatch], name: &str) -> f64 {
    let mut found = Vec::new();
    for b in batches {
        let names = b
            .column_by_name("name")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let values = f64s(std::slice::from_ref(b), "value");
        for i in 0..b.num_rows() {
            if names.value(i) == name {
                found.push(values[i].unwrap());
            }
        }
    }
    assert_eq!(found.len(), 1, "{name}");
    found[0]
}

/// The MBG/NBD calibration table of the sample (fit up to 2025-11-24, holdout
/// the year after) equals the reference script's (`calibration`): customers
/// exactly, means, MAE and correlation to 1e-6 (the two optimizers' optima
/// differ by ~1e-7).
#[test]
fn calibration_table_matches_the_reference_on_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let yaml = format!(
        "name: cal
sources:
  transactions: {{url: {}/transactions/}}
steps:
  - name: clv
    clv: {{method: mbgnbd, as_of: \"2025-11-24\", holdout_from: \"2025-11-25\", holdout_to: \"2026-11-24\"}}
sinks:
  - table: clv_calibration
    url: out/cal/
  - table: clv_model
    url: out/model/
",
        sample()
    );
    let out = run(d, &yaml);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let model = read_dir(&d.join("out/model"));
    for (name, want) in [
        ("r", 1.5647152439371077),
        ("alpha", 5.717042366488233),
        ("a", 4.5388530832751774),
        ("b", 82.7281910685069),
    ] {
        close(param(&model, name), want, 1e-5);
    }
    close(param(&model, "mbgnbd_log_likelihood"), -55066.44924864445, 1e-11);
    let want = [
        (
            "0",
            407,
            2.7665847665847667,
            3.035516002533017,
            2.4969396860631843,
            0.5333083530305017,
        ),
        (
            "1",
            360,
            3.091666666666667,
            3.2913108444520662,
            2.7158463170653926,
            0.5259685457138172,
        ),
        (
            "2",
            287,
            3.8745644599303137,
            3.793075286144629,
            2.9030783424835165,
            0.5922358806709738,
        ),
        (
            "3",
            239,
            3.485355648535565,
            3.5995445261566514,
            2.6276110966407358,
            0.607654682237486,
        ),
        (
            "4",
            187,
            3.7914438502673797,
            3.731886500153243,
            2.7239102522141243,
            0.6601559235145396,
        ),
        (
            "5",
            165,
            3.8848484848484848,
            4.153006837482012,
            2.7467874283426568,
            0.6312593077530538,
        ),
        (
            "6",
            154,
            4.1103896103896105,
            4.441568412343908,
            2.6185123345281243,
            0.6594592242111261,
        ),
        (
            "7+",
            1194,
            6.381909547738694,
            6.360729029892849,
            3.87796620260725,
            0.6771792182712688,
        ),
        (
            "total",
            2993,
            4.606414968259272,
            4.687955752360455,
            3.1577933013805985,
            0.6640056504421181,
        ),
    ];
    let cal = read_dir(&d.join("out/cal"));
    let buckets: Vec<String> = cal
        .iter()
        .flat_map(|b| {
            let a = b
                .column_by_name("bucket")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            (0..a.len()).map(move |i| a.value(i).to_string())
        })
        .collect();
    assert_eq!(buckets, want.iter().map(|w| w.0).collect::<Vec<_>>());
    let col = |c: &str| f64s(&cal, c);
    let (n, actual, predicted, mae, corr) = (
        col("customers"),
        col("actual_mean"),
        col("predicted_mean"),
        col("mae"),
        col("correlation"),
    );
    for (i, w) in want.iter().enumerate() {
        assert_eq!(n[i], Some(f64::from(w.1)), "{}", w.0);
        close(actual[i].unwrap(), w.2, 1e-12);
        close(predicted[i].unwrap(), w.3, 1e-6);
        close(mae[i].unwrap(), w.4, 1e-6);
        close(corr[i].unwrap(), w.5, 1e-6);
    }
}

/// Mistakes in the holdout keys are exit-2 problems naming the key.
#[test]
fn holdout_mistakes_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let yaml = |clv: &str| {
        format!(
            "name: cal
sources:
  transactions: {{url: {}/transactions/}}
  customers: {{url: {}/customers/}}
steps:
  - name: clv
    clv: {clv}
sinks:
  - table: clv
    url: out/clv/
",
            sample(),
            sample()
        )
    };
    for (clv, want) in [
        (
            "{method: pareto_nbd, as_of: \"2025-11-24\", holdout_from: \"2025-11-24\", holdout_to: \"2026-11-24\"}",
            "clv.holdout_from (2025-11-24) must be after clv.as_of (2025-11-24)",
        ),
        (
            "{method: mbgnbd, as_of: \"2025-11-24\", holdout_from: \"2025-12-01\", holdout_to: \"2025-11-30\"}",
            "clv.holdout_to (2025-11-30) must not be before clv.holdout_from (2025-12-01)",
        ),
        (
            "{method: bgnbd, as_of: \"2025-11-24\", holdout_from: \"2025-12-01\"}",
            "clv.holdout_from and clv.holdout_to go together: set both or neither",
        ),
        (
            "{method: bgnbd, as_of: \"2025-11-24\", holdout_from: \"2025-12-01\", holdout_to: \"soon\"}",
            "clv.holdout_to \"soon\" is not a date (YYYY-MM-DD)",
        ),
        (
            "{method: discounted, as_of: \"2025-11-24\", holdout_from: \"2025-12-01\", holdout_to: \"2026-01-01\"}",
            "clv.holdout_from applies to methods bgnbd, pareto_nbd and mbgnbd only (use horizon_years with discounted)",
        ),
    ] {
        std::fs::write(d.join("p.yaml"), yaml(clv)).unwrap();
        let out = crmflow(d, &["validate", "p.yaml"]);
        assert_eq!(out.code, 2, "{clv}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("step \"clv\" (line 7): {want}")),
            "{clv}: {}",
            out.stderr
        );
    }
}
