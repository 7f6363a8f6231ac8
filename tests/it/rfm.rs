//! `rfm:` through the binary: scores and segments computed by hand on a
//! fixture with ties, a larger fixture against an independent pandas /
//! numpy implementation (tests/reference/rfm_pandas.py), an overridden map,
//! and the error messages.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use super::common::{close, crmflow, error_of, f64s, read_dir, write_parquet};

/// (id, recency_days, frequency, monetary) — ties in each column.
const HAND: &[(i64, i64, i64, Option<f64>)] = &[
    (1, 5, 10, Some(500.0)),
    (2, 5, 1, Some(20.0)),
    (3, 100, 3, Some(120.0)),
    (4, 30, 3, Some(120.0)),
    (5, 200, 1, Some(15.0)),
    (6, 30, 6, Some(300.0)),
    (7, 400, 0, Some(0.0)),
    (8, 10, 2, Some(60.0)),
    (9, 30, 8, Some(120.0)),
    (10, 365, 1, Some(35.0)),
];

fn write_rows(path: &Path, rows: &[(i64, i64, i64, Option<f64>)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("recency_days", DataType::Int64, false),
        Field::new("frequency", DataType::Int64, false),
        Field::new("monetary", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(Float64Array::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
        ],
    )
    .unwrap();
    write_parquet(path, &batch);
}

/// Writes the hand-computed fixture (for the report tests too).
pub fn write_hand_fixture(path: &Path) {
    write_rows(path, HAND);
}

fn pipeline(segments: &str) -> String {
    format!(
        "name: rfm_test
sources:
  features: {{url: data/features/}}
steps:
  - name: rfm
    rfm:
      input: features{segments}
sinks:
  - table: rfm
    url: out/rfm/
  - table: rfm_profile
    url: out/rfm_profile/
"
    )
}

fn run(dir: &Path, yaml: &str) -> super::common::Output {
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
    crmflow(dir, &["run", "p.yaml"])
}

fn strings(batches: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for b in batches {
        let a = b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
        let a = datafusion::arrow::compute::cast(a, &DataType::Utf8).unwrap();
        let a = a.as_any().downcast_ref::<StringArray>().unwrap();
        out.extend((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).to_string())));
    }
    out
}

/// (id, r, f, m, rfm_score, rfm_segment) sorted by id.
fn scored(dir: &Path) -> Vec<(i64, i64, i64, i64, String, String)> {
    let b = read_dir(dir);
    let ids = f64s(&b, "customer_id");
    let (r, f, m) = (f64s(&b, "r_score"), f64s(&b, "f_score"), f64s(&b, "m_score"));
    let (score, seg) = (strings(&b, "rfm_score"), strings(&b, "rfm_segment"));
    let mut out: Vec<_> = (0..ids.len())
        .map(|i| {
            (
                ids[i].unwrap() as i64,
                r[i].unwrap() as i64,
                f[i].unwrap() as i64,
                m[i].unwrap() as i64,
                score[i].clone().unwrap(),
                seg[i].clone().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn row(id: i64, r: i64, f: i64, m: i64, seg: &str) -> (i64, i64, i64, i64, String, String) {
    (id, r, f, m, format!("{r}{f}{m}"), seg.to_string())
}

#[test]
fn scores_and_segments_match_the_hand_computation_with_ties() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_rows(&d.join("data/features/part-0.parquet"), HAND);
    let out = run(d, &pipeline(""));
    assert_eq!(out.code, 0, "{}", out.stderr);
    // n = 10: score = 1 + floor(5 (rank - 1) / 10). Recency ranks, most days
    // first: 400 -> 1, 365 -> 2, 200 -> 3, 100 -> 4, 30 (x3) -> 5, 10 -> 8,
    // 5 (x2) -> 9. Frequency: 0 -> 1, 1 (x3) -> 2, 2 -> 5, 3 (x2) -> 6, 6 -> 8,
    // 8 -> 9, 10 -> 10. Monetary: 0 -> 1, 15 -> 2, 20 -> 3, 35 -> 4, 60 -> 5,
    // 120 (x3) -> 6, 300 -> 9, 500 -> 10. Segments from (r, fm = (f + m) / 2).
    let want = vec![
        row(1, 5, 5, 5, "Champions"),
        row(2, 5, 1, 2, "New Customers"),
        row(3, 2, 3, 3, "At Risk"),
        row(4, 3, 3, 3, "Need Attention"),
        row(5, 2, 1, 1, "Hibernating"),
        row(6, 3, 4, 5, "Loyal Customers"),
        row(7, 1, 1, 1, "Lost"),
        row(8, 4, 3, 3, "Potential Loyalist"),
        row(9, 3, 5, 3, "Loyal Customers"),
        row(10, 1, 1, 2, "Lost"),
    ];
    assert_eq!(scored(&d.join("out/rfm")), want);
    // The input columns are kept.
    let b = read_dir(&d.join("out/rfm"));
    assert_eq!(
        b[0].schema()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>(),
        [
            "customer_id",
            "recency_days",
            "frequency",
            "monetary",
            "r_score",
            "f_score",
            "m_score",
            "rfm_score",
            "rfm_segment"
        ]
    );
    // The profile: every segment of the map, in map order.
    let p = read_dir(&d.join("out/rfm_profile"));
    let names: Vec<String> = strings(&p, "rfm_segment").into_iter().map(Option::unwrap).collect();
    assert_eq!(
        names,
        [
            "Champions",
            "Loyal Customers",
            "Potential Loyalist",
            "New Customers",
            "Promising",
            "Need Attention",
            "About to Sleep",
            "Can't Lose Them",
            "At Risk",
            "Lost",
            "Hibernating"
        ]
    );
    let sizes: Vec<i64> = f64s(&p, "size").into_iter().map(|v| v.unwrap() as i64).collect();
    assert_eq!(sizes, [1, 2, 1, 1, 0, 1, 0, 0, 1, 2, 1]);
    let rules = strings(&p, "rule");
    assert_eq!(rules[0].as_deref(), Some("r 5, fm 4-5"));
    assert_eq!(rules[9].as_deref(), Some("r 1, fm 1"));
    let share = f64s(&p, "share");
    assert_eq!(share[1], Some(0.2));
    assert_eq!(share[4], Some(0.0));
    // Loyal Customers are 6 and 9; Lost 7 and 10. Total monetary 1290.
    let col = |c: &str| f64s(&p, c);
    assert_eq!(col("mean_recency_days")[1], Some(30.0));
    assert_eq!(col("mean_frequency")[1], Some(7.0));
    assert_eq!(col("mean_monetary")[1], Some(210.0));
    assert_eq!(col("mean_f_score")[1], Some(4.5));
    assert_eq!(col("mean_m_score")[9], Some(1.5));
    assert_eq!(col("mean_recency_days")[9], Some(382.5));
    assert_eq!(col("mean_monetary")[4], None);
    close(col("monetary_share")[1].unwrap(), 420.0 / 1290.0, 1e-15);
    close(col("monetary_share")[9].unwrap(), 35.0 / 1290.0, 1e-15);
    assert_eq!(col("monetary_share")[4], Some(0.0));
}

#[test]
fn nulls_rank_worst_and_an_overridden_map_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_rows(&d.join("data/features/part-0.parquet"), HAND);
    let map = "
      segments:
        - {name: Top, r: \"4-5\", f: \"4-5\"}
        - {name: Big spenders, m: 5}
        - {name: Rest}";
    let out = run(d, &pipeline(map));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got: Vec<(i64, String)> = scored(&d.join("out/rfm")).into_iter().map(|r| (r.0, r.5)).collect();
    let want: Vec<(i64, String)> = (1..=10)
        .map(|id| {
            let seg = match id {
                1 => "Top",
                6 => "Big spenders",
                _ => "Rest",
            };
            (id, seg.to_string())
        })
        .collect();
    assert_eq!(got, want);
    let p = read_dir(&d.join("out/rfm_profile"));
    let rules: Vec<String> = strings(&p, "rule").into_iter().map(Option::unwrap).collect();
    assert_eq!(rules, ["r 4-5, f 4-5", "m 5", "any"]);
    let sizes: Vec<i64> = f64s(&p, "size").into_iter().map(|v| v.unwrap() as i64).collect();
    assert_eq!(sizes, [1, 1, 8]);

    // n = 3: ranks 1, 2, 3 score 1, 2, 4; a null monetary is the worst and
    // the two equal values share rank 2.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_rows(
        &d.join("data/features/part-0.parquet"),
        &[(1, 9, 1, None), (2, 8, 2, Some(10.0)), (3, 7, 3, Some(10.0))],
    );
    let out = run(d, &pipeline(""));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got: Vec<(i64, i64, i64, i64)> = scored(&d.join("out/rfm"))
        .into_iter()
        .map(|r| (r.0, r.1, r.2, r.3))
        .collect();
    assert_eq!(got, [(1, 1, 1, 1), (2, 2, 2, 2), (3, 4, 4, 2)]);
}

#[test]
fn bad_columns_and_maps_are_named_word_for_word() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_rows(&d.join("data/features/part-0.parquet"), HAND);
    let yaml =
        pipeline("\n      monetary: spend").replace("input: features", "input: features\n      recency: rfm_score");
    let out = run(d, &yaml);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        "invalid pipeline p.yaml: 2 problems:
  - step \"rfm\" (line 5): column \"rfm_score\" is not in \"features\" (columns: customer_id, recency_days, frequency, monetary)
  - step \"rfm\" (line 5): column \"spend\" is not in \"features\" (columns: customer_id, recency_days, frequency, monetary)"
    );
    let map = "
      segments:
        - {name: Top, r: \"5-4\"}
        - {name: Rest, f: \"1-5\"}";
    let out = run(d, &pipeline(map));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        "invalid pipeline p.yaml: 3 problems:
  - step \"rfm\" (line 5): rfm.segments[0] (\"Top\").r: \"5-4\" is not a score range: write a score from 1 to 5 or a range like \"4-5\"
  - sink \"rfm\" (line 12): table \"rfm\" is neither a source nor a step
  - sink \"rfm_profile\" (line 14): table \"rfm_profile\" is neither a source nor a step"
    );
}

#[test]
fn rfm_matches_the_pandas_reference() {
    // tests/reference/rfm_fixture.csv: 1,500 customers with many ties and 3%
    // null monetary values, scored by tests/reference/rfm_pandas.py.
    let csv = include_str!("../reference/rfm_fixture.csv");
    let mut rows = Vec::new();
    let mut want = Vec::new();
    for line in csv.lines().skip(1) {
        let c: Vec<&str> = line.split(',').collect();
        let id: i64 = c[0].parse().unwrap();
        let monetary = (!c[3].is_empty()).then(|| c[3].parse::<f64>().unwrap());
        rows.push((id, c[1].parse().unwrap(), c[2].parse().unwrap(), monetary));
        let (r, f, m): (i64, i64, i64) = (c[4].parse().unwrap(), c[5].parse().unwrap(), c[6].parse().unwrap());
        want.push(row(id, r, f, m, c[7]));
    }
    assert_eq!(rows.len(), 1500);
    assert!(rows.iter().any(|r| r.3.is_none()));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Two files, so the rows arrive in more than one batch.
    write_rows(&d.join("data/features/part-0.parquet"), &rows[..700]);
    write_rows(&d.join("data/features/part-1.parquet"), &rows[700..]);
    let out = run(d, &pipeline(""));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got = scored(&d.join("out/rfm"));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    // Every one of the 125 score combinations occurs in the fixture.
    let combos: std::collections::BTreeSet<&str> = got.iter().map(|g| g.4.as_str()).collect();
    assert_eq!(combos.len(), 125);
}
