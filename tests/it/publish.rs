//! Sinks publish only when the whole run succeeds: a failed or interrupted
//! run leaves the previous output byte for byte, reruns replace instead of
//! adding, and the output is BI-safe Parquet with a `_SUCCESS` manifest.

use std::path::Path;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::parquet::basic::{Compression, LogicalType, Type as PhysicalType};
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};

use super::common::{crmflow, error_of, f64s, read_dir, snapshot, tiny};

fn write(dir: &Path, name: &str, steps: &str, sinks: &str) {
    let yaml = format!(
        "name: pub_test\nvars:\n  out: out\nsources:\n  customers: {{url: data/customers/}}\n  transactions: {{url: data/transactions/}}\nsteps:\n{steps}sinks:\n{sinks}"
    );
    std::fs::write(dir.join(name), yaml).unwrap();
}

const GOOD: &str = "  - name: totals
    sql: |
      SELECT c.customer_id, c.country, count(t.amount) AS n, coalesce(sum(t.amount), 0.0) AS total,
             max(t.transaction_ts) AS last_ts, now() AS computed_at
      FROM customers c LEFT JOIN transactions t USING (customer_id)
      GROUP BY c.customer_id, c.country
";

/// The names in `dir`, to see leftovers such as staging directories.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn a_failed_run_leaves_the_previous_output_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let sinks =
        "  - table: totals\n    url: ${out}/totals/\n  - table: customers_copy\n    url: ${out}/customers_copy/\n";
    let copy = "  - name: customers_copy\n    sql: SELECT * FROM customers\n";
    write(d, "good.yaml", &format!("{GOOD}{copy}"), sinks);
    let out = crmflow(d, &["run", "good.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let before = snapshot(&d.join("out"));
    assert!(before.iter().any(|(p, _)| p == "totals/_SUCCESS"));

    // A step that fails at run time (division by zero), after the
    // other sink's table could have been written.
    let failing = format!(
        "{GOOD}  - name: customers_copy\n    sql: SELECT customer_id, 1 / (customer_id - customer_id) AS boom FROM customers\n"
    );
    write(d, "bad.yaml", &failing, sinks);
    let out = crmflow(d, &["run", "bad.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        error_of(&out).starts_with("sink \"customers_copy\" ("),
        "{}",
        error_of(&out)
    );
    assert_eq!(snapshot(&d.join("out")), before, "the previous output changed");
    assert_eq!(
        names(&d.join("out")),
        vec!["customers_copy", "totals"],
        "staging left behind"
    );

    // A failing sink check stops every sink from publishing.
    let checked = "  - table: totals\n    url: ${out}/totals/\n  - table: customers_copy\n    url: ${out}/customers_copy/\n    checks:\n      - row_count: {min: 10}\n";
    write(d, "check.yaml", &format!("{GOOD}{copy}"), checked);
    let out = crmflow(d, &["run", "check.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        "sink \"customers_copy\": check row_count(min 10) failed: the table has 4 rows"
    );
    assert_eq!(snapshot(&d.join("out")), before);
    assert_eq!(names(&d.join("out")), vec!["customers_copy", "totals"]);

    // The JSON summary on stdout says what happened.
    let summary: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(summary["status"], "failed");
    assert_eq!(
        summary["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["passed"] == false)
            .count(),
        1
    );
}

#[test]
fn reruns_replace_and_output_is_bi_safe() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    write(
        d,
        "p.yaml",
        GOOD,
        "  - table: totals\n    url: ${out}/totals/\n    partition_by: [country]\n",
    );
    for _ in 0..2 {
        let out = crmflow(d, &["run", "p.yaml"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    // Hive partitions, one set of rows, no staging left.
    assert_eq!(names(&d.join("out")), vec!["totals"]);
    assert_eq!(names(&d.join("out/totals")), vec!["_SUCCESS", "country=US"]);
    let batches = read_dir(&d.join("out/totals"));
    let mut ids: Vec<f64> = f64s(&batches, "customer_id").into_iter().map(Option::unwrap).collect();
    ids.sort_by(f64::total_cmp);
    assert_eq!(ids, vec![1.0, 2.0, 3.0, 4.0]);
    let mut totals: Vec<f64> = f64s(&batches, "total").into_iter().map(Option::unwrap).collect();
    totals.sort_by(f64::total_cmp);
    assert_eq!(totals, vec![0.0, 0.0, 310.0, 1214.5]);

    // Independent reader: physical and logical types, compression, stats.
    let file = std::fs::read_dir(d.join("out/totals/country=US"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let reader = SerializedFileReader::new(std::fs::File::open(&file).unwrap()).unwrap();
    let md = reader.metadata();
    let schema = md.file_metadata().schema_descr();
    let col = |name: &str| {
        (0..schema.num_columns())
            .map(|i| schema.column(i))
            .find(|c| c.name() == name)
            .unwrap()
    };
    let ts = col("last_ts");
    assert_eq!(ts.physical_type(), PhysicalType::INT64);
    assert_eq!(
        ts.logical_type_ref(),
        Some(&LogicalType::Timestamp(datafusion::parquet::basic::TimestampType {
            is_adjusted_to_u_t_c: true,
            unit: datafusion::parquet::basic::TimeUnit::MICROS
        }))
    );
    // now() is nanoseconds in DataFusion: written as microseconds too.
    assert_eq!(col("computed_at").logical_type_ref(), ts.logical_type_ref());
    assert_eq!(col("total").physical_type(), PhysicalType::DOUBLE);
    let n = col("n");
    assert_eq!(n.physical_type(), PhysicalType::INT64);
    assert!(!matches!(
        n.logical_type_ref(),
        Some(LogicalType::Integer(datafusion::parquet::basic::IntType {
            is_signed: false,
            ..
        }))
    ));
    for rg in md.row_groups() {
        for c in rg.columns() {
            assert!(matches!(c.compression(), Compression::ZSTD(_)), "{:?}", c.compression());
            assert!(c.statistics().is_some(), "no statistics for {}", c.column_path());
        }
    }
    // The Arrow schema embedded in the file says the same.
    let b = read_dir(&d.join("out/totals"));
    assert_eq!(
        b[0].schema().field_with_name("last_ts").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );

    // The manifest lists exactly the files there, with their rows.
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("out/totals/_SUCCESS")).unwrap()).unwrap();
    assert_eq!(m["pipeline"], "pub_test");
    assert_eq!(m["rows"], 4);
    assert_eq!(m["vars"]["out"], "out");
    let files: Vec<String> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(d.join("out/totals/country=US"))
        .unwrap()
        .map(|e| format!("country=US/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    on_disk.sort();
    assert_eq!(files, on_disk);
}

#[test]
fn sigterm_stops_the_run_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    write(d, "p.yaml", GOOD, "  - table: totals\n    url: ${out}/totals/\n");
    assert_eq!(crmflow(d, &["run", "p.yaml"]).code, 0);
    let before = snapshot(&d.join("out"));
    // A step that runs for a long time.
    let slow =
        "  - name: totals\n    sql: SELECT CAST(count(*) AS BIGINT) AS n FROM generate_series(1, 20000000000) a\n";
    write(d, "slow.yaml", slow, "  - table: totals\n    url: ${out}/totals/\n");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_crmflow"))
        .args(["run", "slow.yaml"])
        .current_dir(d)
        .env("CRMFLOW_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("crmflow: error: interrupted by SIGTERM; nothing was published"),
        "{stderr}"
    );
    assert_eq!(snapshot(&d.join("out")), before);
    assert_eq!(names(&d.join("out")), vec!["totals"]);
}

#[test]
fn values_from_the_environment_never_appear_in_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let yaml = "name: secret_test
vars:
  token: \"${env:CRM_TEST_TOKEN}\"
  out: \"out/${token}\"
storage:
  aws_secret_access_key: \"${env:CRM_TEST_TOKEN}\"
sources:
  customers: {url: data/customers/}
steps:
  - name: c
    sql: SELECT customer_id, ${token} AS t FROM customers
sinks:
  - table: c
    url: ${out}/c/
";
    std::fs::write(d.join("p.yaml"), yaml).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_crmflow"))
            .args(args)
            .current_dir(d)
            .env("CRMFLOW_LOG", "debug")
            .env("CRM_TEST_TOKEN", "tok-98765")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stdout, stderr) = run(&["run", "p.yaml", "--run-results", "results.json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let results = std::fs::read_to_string(d.join("results.json")).unwrap();
    let manifest = std::fs::read_to_string(d.join("out/tok-98765/c/_SUCCESS")).unwrap();
    let (_, plan, plan_err) = run(&["plan", "p.yaml"]);
    for (what, text) in [
        ("stdout", &stdout),
        ("stderr", &stderr),
        ("run results", &results),
        ("manifest", &manifest),
        ("plan", &plan),
        ("plan stderr", &plan_err),
    ] {
        assert!(!text.contains("tok-98765"), "the secret is in the {what}:\n{text}");
    }
    assert!(results.contains("\"token\":\"***\""), "{results}");
    assert!(plan.contains("out/***/c"), "{plan}");
    // A failure message is masked too.
    std::fs::write(
        d.join("bad.yaml"),
        yaml.replace("FROM customers", "FROM customers WHERE ${token} = nope"),
    )
    .unwrap();
    let (code, _, stderr) = run(&["run", "bad.yaml"]);
    assert_eq!(code, Some(2));
    assert!(!stderr.contains("tok-98765") && stderr.contains("***"), "{stderr}");
}

#[test]
fn select_runs_a_step_with_its_inputs_and_only_its_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let steps = format!(
        "{GOOD}  - name: rich\n    sql: SELECT * FROM totals WHERE total > 100\n  - name: other\n    sql: SELECT 1 AS x FROM customers\n"
    );
    let sinks = "  - table: totals\n    url: ${out}/totals/\n  - table: rich\n    url: ${out}/rich/\n  - table: other\n    url: ${out}/other/\n";
    write(d, "p.yaml", &steps, sinks);
    let out = crmflow(d, &["run", "p.yaml", "--select", "rich"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(names(&d.join("out")), vec!["rich"]);
    let summary: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let steps: Vec<&str> = summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, vec!["totals", "rich"]);
    assert_eq!(f64s(&read_dir(&d.join("out/rich")), "total").len(), 2);
    let out = crmflow(d, &["run", "p.yaml", "--select", "rihc"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        error_of(&out),
        "invalid pipeline p.yaml: --select rihc: no step is named \"rihc\""
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    write(d, "p.yaml", GOOD, "  - table: totals\n    url: ${out}/totals/\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crmflow"))
        .args(["--log-format", "json", "run", "p.yaml"])
        .current_dir(d)
        .env("CRMFLOW_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let done: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| {
            l["message"] == "step planned (a view: it streams into its consumer)" || l["message"] == "step done"
        })
        .collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["step"], "totals");
    assert!(lines.iter().any(|l| l["message"] == "published" && l["rows"] == 4));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "success");
}

#[test]
fn json_logs_carry_the_error_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    write(
        d,
        "p.yaml",
        "  - name: totals\n    sql: SELECT 1 / (customer_id - customer_id) AS boom FROM customers\n",
        "  - table: totals\n    url: ${out}/totals/\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crmflow"))
        .args(["--log-format", "json", "run", "p.yaml"])
        .current_dir(d)
        .env("CRMFLOW_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last: serde_json::Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "ERROR");
    assert_eq!(last["exit_code"], 1);
    assert!(
        last["message"].as_str().unwrap().starts_with("sink \"totals\" ("),
        "{last}"
    );
}
