//! Unreadable sources fail the run (exit 1) with a message naming the
//! source and the path; `validate` plans SQL against real schemas from the
//! footers only.

use super::common::{crmflow, error_of, tiny};

fn pipeline(dir: &std::path::Path, sql: &str) {
    let yaml = format!(
        "name: t\nsources:\n  customers: {{url: data/customers/}}\n  transactions: {{url: data/transactions/}}\nsteps:\n  - name: s\n    sql: {sql}\nsinks:\n  - table: s\n    url: out/s/\n"
    );
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
}

#[test]
fn missing_empty_non_parquet_and_corrupt_sources() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    pipeline(d, "SELECT * FROM customers JOIN transactions USING (customer_id)");
    let root = d.canonicalize().unwrap();
    let shown = |rel: &str| format!("{}/{rel}", root.display());

    // Missing directory.
    std::fs::rename(d.join("data/transactions"), d.join("data/tx_moved")).unwrap();
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        format!(
            "source \"transactions\" ({0}): {0} does not exist",
            shown("data/transactions/")
        )
    );

    // Empty directory.
    std::fs::create_dir_all(d.join("data/transactions")).unwrap();
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        error_of(&out),
        format!(
            "source \"transactions\" ({0}): no Parquet files found in {0}",
            shown("data/transactions/")
        )
    );

    // A stray file that is not Parquet.
    std::fs::rename(
        d.join("data/tx_moved/part-0.parquet"),
        d.join("data/transactions/part-0.parquet"),
    )
    .unwrap();
    std::fs::write(d.join("data/transactions/notes.csv"), "a,b\n").unwrap();
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        error_of(&out),
        format!(
            "source \"transactions\" ({0}): {1} is not a Parquet file (expected only *.parquet files below {0})",
            shown("data/transactions/"),
            shown("data/transactions/notes.csv")
        )
    );

    // A .parquet file that is not Parquet.
    std::fs::remove_file(d.join("data/transactions/notes.csv")).unwrap();
    std::fs::write(d.join("data/transactions/part-1.parquet"), "not parquet at all").unwrap();
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 1);
    let err = error_of(&out);
    let prefix = format!(
        "source \"transactions\" ({}): {} is not a readable Parquet file: ",
        shown("data/transactions/"),
        shown("data/transactions/part-1.parquet")
    );
    assert!(err.starts_with(&prefix), "{err}");

    // Hidden and underscore files and directories (staging, _SUCCESS) are
    // ignored: here they are valid Parquet copies of the data, so reading
    // one would add rows. (Files beside the data: see the next test.)
    std::fs::remove_file(d.join("data/transactions/part-1.parquet")).unwrap();
    let tx = d.join("data/transactions");
    let real = std::fs::read(tx.join("part-0.parquet")).unwrap();
    std::fs::write(tx.join("_SUCCESS"), "{}").unwrap();
    std::fs::create_dir_all(tx.join(".staging")).unwrap();
    std::fs::create_dir_all(tx.join("_temporary/0")).unwrap();
    let junk = [".staging/x.parquet", "_temporary/0/part-0.parquet"];
    for j in junk {
        std::fs::write(tx.join(j), &real).unwrap();
    }
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The join has one row per transaction of the real file (8).
    let rows: usize = super::common::read_dir(&d.join("out/s"))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 8);
    let summary: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(summary["sinks"][0]["rows"], 8);
    // Left as they were.
    assert_eq!(std::fs::read(tx.join("_SUCCESS")).unwrap(), b"{}");
    for j in junk {
        assert_eq!(std::fs::read(tx.join(j)).unwrap(), real, "{j} changed");
    }
}

#[test]
fn hidden_and_underscore_parquet_files_beside_the_data_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    pipeline(d, "SELECT * FROM customers JOIN transactions USING (customer_id)");
    let tx = d.join("data/transactions");
    let real = std::fs::read(tx.join("part-0.parquet")).unwrap();
    for j in [".part-0.parquet", "_part-0.parquet"] {
        std::fs::write(tx.join(j), &real).unwrap();
    }
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows: usize = super::common::read_dir(&d.join("out/s"))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 8, "a hidden or underscore file was read");
}

#[test]
fn hive_partition_directories_become_columns() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    // Customers 1, 2 under region=emea/, 3, 4 under region=apac/.
    let all = d.join("data/customers/part-0.parquet");
    let batch = super::common::read_dir(&d.join("data/customers")).remove(0);
    std::fs::remove_file(&all).unwrap();
    super::common::write_parquet(&d.join("data/customers/region=emea/part-0.parquet"), &batch.slice(0, 2));
    super::common::write_parquet(&d.join("data/customers/region=apac/part-0.parquet"), &batch.slice(2, 2));
    pipeline(d, "SELECT customer_id, region, age FROM customers");
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let b = super::common::read_dir(&d.join("out/s"));
    let mut rows = Vec::new();
    for batch in &b {
        let region = datafusion::arrow::compute::cast(
            batch.column_by_name("region").unwrap(),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let region = region
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .unwrap();
        let ids = super::common::f64s(std::slice::from_ref(batch), "customer_id");
        let ages = super::common::f64s(std::slice::from_ref(batch), "age");
        for i in 0..batch.num_rows() {
            rows.push((
                ids[i].unwrap() as i64,
                region.value(i).to_string(),
                ages[i].unwrap() as i64,
            ));
        }
    }
    rows.sort();
    let want: Vec<(i64, String, i64)> = [(1, "emea"), (2, "emea"), (3, "apac"), (4, "apac")]
        .into_iter()
        .map(|(id, r)| (id, r.to_string(), 30 + id))
        .collect();
    assert_eq!(rows, want);
}

#[test]
fn validate_plans_sql_from_footers_and_reports_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    // Keep the footer, destroy the data pages: a reader of rows fails, a
    // reader of footers does not.
    let f = d.join("data/transactions/part-0.parquet");
    let mut bytes = std::fs::read(&f).unwrap();
    let reader =
        datafusion::parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&f).unwrap()).unwrap();
    let md = datafusion::parquet::file::reader::FileReader::metadata(&reader);
    for rg in md.row_groups() {
        for c in rg.columns() {
            let (start, len) = c.byte_range();
            for b in &mut bytes[start as usize..(start + len) as usize] {
                *b = 0xAB;
            }
        }
    }
    std::fs::write(&f, bytes).unwrap();

    let yaml = "name: t
sources:
  customers: {url: data/customers/}
  transactions: {url: data/transactions/}
steps:
  - name: good
    sql: SELECT customer_id, sum(amount) AS total FROM transactions GROUP BY customer_id
  - name: bad_column
    sql: SELECT customer_id, amout FROM transactions
  - name: bad_type
    sql: SELECT sum(country) AS x FROM customers
  - name: downstream
    sql: SELECT * FROM bad_column
sinks:
  - table: good
    url: out/good/
    partition_by: [country]
";
    std::fs::write(d.join("v.yaml"), yaml).unwrap();
    let out = crmflow(d, &["validate", "v.yaml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let err = error_of(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines[0], "invalid pipeline v.yaml: 3 problems:", "{err}");
    assert!(
        lines[1].starts_with("  - step \"bad_column\" (line 8): Schema error: No field named amout."),
        "{err}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("  - step \"bad_type\" (line 10): ")),
        "{err}"
    );
    assert!(
        err.ends_with(
            "  - sink \"good\": partition_by column \"country\" is not in table \"good\" (columns: customer_id, total)"
        ),
        "{err}"
    );

    // The valid part validates, though no row can be read...
    let ok = yaml.replace("    partition_by: [country]\n", "").replace(
        "  - name: bad_column\n    sql: SELECT customer_id, amout FROM transactions\n  - name: bad_type\n    sql: SELECT sum(country) AS x FROM customers\n  - name: downstream\n    sql: SELECT * FROM bad_column\n",
        "",
    );
    std::fs::write(d.join("ok.yaml"), &ok).unwrap();
    let out = crmflow(d, &["validate", "ok.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.trim(),
        "ok.yaml: pipeline \"t\" is valid: 2 sources, 1 steps, 1 sinks, 3 tables planned"
    );
    // ...which `run` proves: it reads rows and fails.
    let out = crmflow(d, &["run", "ok.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(!d.join("out/good").exists());
}

#[test]
fn run_plans_every_step_before_reading_rows() {
    // The source check would fail (it reads rows); the SQL error in the last
    // step is found first, from the footers, and is exit 2.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let yaml = "name: t
sources:
  customers:
    url: data/customers/
    checks:
      - row_count: {max: 0}
steps:
  - name: a
    sql: SELECT * FROM customers
  - name: b
    sql: SELECT nope FROM a
sinks:
  - table: b
    url: out/b/
";
    std::fs::write(d.join("p.yaml"), yaml).unwrap();
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        error_of(&out).starts_with("invalid pipeline p.yaml: step \"b\" (line 10): Schema error: No field named nope."),
        "{}",
        error_of(&out)
    );
    let summary: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(
        summary["checks"].as_array().unwrap().len(),
        0,
        "a check ran: rows were read"
    );
    assert!(!d.join("out").exists());
}
