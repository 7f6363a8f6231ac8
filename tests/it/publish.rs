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
        vec![
            ".customers_copy.crmflow-manifest.json",
            ".totals.crmflow-manifest.json",
            "customers_copy",
            "totals"
        ],
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
    assert_eq!(
        names(&d.join("out")),
        vec![
            ".customers_copy.crmflow-manifest.json",
            ".totals.crmflow-manifest.json",
            "customers_copy",
            "totals"
        ]
    );

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
    assert_eq!(names(&d.join("out")), vec![".totals.crmflow-manifest.json", "totals"]);
    assert_eq!(names(&d.join("out/totals")), vec!["_SUCCESS", "country=US"]);
    assert_eq!(
        std::fs::read(d.join("out/totals/_SUCCESS")).unwrap(),
        b"",
        "an empty marker"
    );
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
    assert_eq!(col("n").physical_type(), PhysicalType::INT64);
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
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("out/.totals.crmflow-manifest.json")).unwrap()).unwrap();
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

/// Starts a run whose only sink streams a practically endless table, waits
/// until that sink's staging directory exists (the write is under way),
/// sends `signal`, and checks the exit code, the message and that the
/// previous output is byte for byte what it was; with `staging_removed`,
/// also that no staging is left beside it.
fn interrupt_while_staging(signal: &str, code: i32, staging_removed: bool) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    write(d, "p.yaml", GOOD, "  - table: totals\n    url: ${out}/totals/\n");
    assert_eq!(crmflow(d, &["run", "p.yaml"]).code, 0);
    let before = snapshot(&d.join("out/totals"));
    // Rows stream into the sink as they are made: the staging directory
    // appears long before the table could end.
    let endless = "  - name: totals
    sql: |
      SELECT value AS customer_id, sin(CAST(value AS DOUBLE)) AS a, cos(CAST(value AS DOUBLE) * 1.7) AS b
      FROM generate_series(1, 5000000000)
";
    write(
        d,
        "endless.yaml",
        endless,
        "  - table: totals\n    url: ${out}/totals/\n",
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_crmflow"))
        .args(["run", "endless.yaml"])
        .current_dir(d)
        .env("CRMFLOW_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Staging lives outside the output tree: <dir>/.crmflow-staging/<sink key>/<run id>/.
    let staging = |d: &Path| -> Vec<String> {
        let root = d.join(".crmflow-staging");
        let Ok(keys) = std::fs::read_dir(&root) else {
            return vec![];
        };
        keys.flatten()
            .flat_map(|k| std::fs::read_dir(k.path()).into_iter().flatten().flatten())
            .map(|r| r.path().display().to_string())
            .collect()
    };
    // Poll (no timing assumption: a liveness bound only).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while staging(d).is_empty() {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the run ended ({status}) before its staging appeared: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(std::time::Instant::now() < deadline, "no staging directory appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap()
            .success()
    );
    // The process must end by itself (a liveness bound, not a timing check).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the run did not stop after SIG{signal}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "crmflow: error: interrupted by SIG{signal}; nothing was published"
        )),
        "{stderr}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "interrupted");
    assert!(
        snapshot(&d.join("out/totals")) == before,
        "the previous output changed: {:?}",
        names(&d.join("out/totals"))
    );
    if staging_removed {
        assert_eq!(
            names(&d.join("out")),
            vec![".totals.crmflow-manifest.json", "totals"],
            "a leftover beside the output"
        );
        assert!(
            !d.join(".crmflow-staging").exists(),
            "staging left behind: {:?}",
            staging(d)
        );
    }
}

#[test]
fn sigterm_while_staging_exits_143_and_publishes_nothing() {
    interrupt_while_staging("TERM", 143, false);
}

#[test]
fn sigint_while_staging_exits_130_and_publishes_nothing() {
    interrupt_while_staging("INT", 130, false);
}

#[test]
fn sigterm_while_staging_removes_the_staging() {
    interrupt_while_staging("TERM", 143, true);
}

#[test]
fn sigint_while_staging_removes_the_staging() {
    interrupt_while_staging("INT", 130, true);
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
    let manifest = std::fs::read_to_string(d.join("out/tok-98765/.c.crmflow-manifest.json")).unwrap();
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
    assert_eq!(names(&d.join("out")), vec![".rich.crmflow-manifest.json", "rich"]);
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
        "invalid pipeline p.yaml: --select rihc: no step is named \"rihc\"; did you mean \"rich\"?"
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

#[test]
fn unsigned_columns_are_written_as_signed_integers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    // Values beyond the signed range of the same width: a plain
    // reinterpretation would turn them negative.
    let steps = "  - name: u
    sql: |
      SELECT customer_id,
             arrow_cast(200 + customer_id, 'UInt8') AS u8,
             arrow_cast(60000 + customer_id, 'UInt16') AS u16,
             arrow_cast(4000000000 + customer_id, 'UInt32') AS u32,
             arrow_cast(10000000000000 + customer_id, 'UInt64') AS u64
      FROM customers
";
    write(d, "p.yaml", steps, "  - table: u\n    url: ${out}/u/\n");
    // The table itself is unsigned (as `plan` shows)...
    let plan = crmflow(d, &["plan", "p.yaml"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    for line in [
        "  u8: UInt8 not null",
        "  u16: UInt16 not null",
        "  u32: UInt32 not null",
        "  u64: UInt64 not null",
    ] {
        assert!(plan.stdout.lines().any(|l| l == line), "{line} not in\n{}", plan.stdout);
    }
    // ...and the file is signed, physically and logically.
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let file = parquet_files(&d.join("out/u"));
    assert_eq!(file.len(), 1, "{file:?}");
    let reader = SerializedFileReader::new(std::fs::File::open(&file[0]).unwrap()).unwrap();
    let schema = reader.metadata().file_metadata().schema_descr();
    for (name, physical) in [
        ("u8", PhysicalType::INT32),
        ("u16", PhysicalType::INT32),
        ("u32", PhysicalType::INT64),
        ("u64", PhysicalType::INT64),
    ] {
        let c = (0..schema.num_columns())
            .map(|i| schema.column(i))
            .find(|c| c.name() == name)
            .unwrap();
        assert_eq!(c.physical_type(), physical, "{name}");
        match c.logical_type_ref() {
            None => {}
            Some(LogicalType::Integer(t)) => assert!(t.is_signed, "{name} is unsigned in the file"),
            other => panic!("{name}: unexpected logical type {other:?}"),
        }
    }
    let b = read_dir(&d.join("out/u"));
    let types: Vec<(String, DataType)> = b[0]
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("customer_id".to_string(), DataType::Int64),
            ("u8".to_string(), DataType::Int16),
            ("u16".to_string(), DataType::Int32),
            ("u32".to_string(), DataType::Int64),
            ("u64".to_string(), DataType::Int64),
        ]
    );
    // Values preserved.
    let ints = |name: &str| -> Vec<i64> {
        b.iter()
            .flat_map(|batch| {
                let a =
                    datafusion::arrow::compute::cast(batch.column_by_name(name).unwrap(), &DataType::Int64).unwrap();
                a.as_any()
                    .downcast_ref::<datafusion::arrow::array::Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect()
    };
    let ids = ints("customer_id");
    assert_eq!(ids.len(), 4);
    for (name, base) in [
        ("u8", 200),
        ("u16", 60_000),
        ("u32", 4_000_000_000),
        ("u64", 10_000_000_000_000),
    ] {
        let want: Vec<i64> = ids.iter().map(|id| base + id).collect();
        assert_eq!(ints(name), want, "{name}");
    }
}

/// The Parquet files below `dir` (hidden and `_` names skipped), sorted.
fn parquet_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

const DAILY: &str = "  - name: daily
    sql: |
      SELECT CAST(${as_of} AS DATE) AS as_of, c.customer_id, count(t.amount) AS n
      FROM customers c LEFT JOIN transactions t ON t.customer_id = c.customer_id
        AND CAST(t.transaction_ts AS DATE) <= CAST(${as_of} AS DATE)
      GROUP BY c.customer_id
";

/// Runs the daily pipeline for a date; returns the run id.
fn run_daily(d: &Path, as_of: &str) -> String {
    let out = crmflow(d, &["run", "p.yaml", "--var", &format!("as_of={as_of}")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let summary: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    summary["run_id"].as_str().unwrap().to_string()
}

/// (partition directory, customer_id, n) of every row on disk, sorted, and
/// the data files relative to `dir`.
fn daily_rows(dir: &Path) -> (Vec<(String, i64, i64)>, Vec<String>) {
    let mut rows = Vec::new();
    let mut files = Vec::new();
    for f in parquet_files(dir) {
        let rel = f.strip_prefix(dir).unwrap().display().to_string();
        let part = rel.split('/').next().unwrap().to_string();
        let b = read_dir_file(&f);
        let ids = f64s(&b, "customer_id");
        let ns = f64s(&b, "n");
        for (i, n) in ids.into_iter().zip(ns) {
            rows.push((part.clone(), i.unwrap() as i64, n.unwrap() as i64));
        }
        files.push(rel);
    }
    rows.sort();
    (rows, files)
}

fn read_dir_file(f: &Path) -> Vec<datafusion::arrow::array::RecordBatch> {
    let file = std::fs::File::open(f).unwrap();
    datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn manifest(dir: &Path) -> (serde_json::Value, Vec<String>) {
    // The manifest is beside the sink directory.
    let name = dir.file_name().unwrap().to_string_lossy();
    let path = dir.parent().unwrap().join(format!(".{name}.crmflow-manifest.json"));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let files = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    (m, files)
}

/// Transactions per customer up to and including a day, from `tiny`.
fn daily_counts(part: &str) -> Vec<(String, i64, i64)> {
    let n: [i64; 4] = match part {
        "as_of=2026-03-01" => [3, 1, 0, 0],
        "as_of=2026-05-01" | "as_of=2026-05-02" => [3, 1, 0, 0],
        "as_of=2026-11-24" => [4, 3, 0, 0],
        _ => unreachable!("{part}"),
    };
    (1..=4).map(|id| (part.to_string(), id, n[id as usize - 1])).collect()
}

#[test]
fn overwrite_partitions_on_local_disk_replaces_only_the_rerun_partition() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let yaml = format!(
        "name: daily\nvars:\n  as_of: \"2026-11-24\"\nsources:\n  customers: {{url: data/customers/}}\n  transactions: {{url: data/transactions/}}\nsteps:\n{DAILY}sinks:\n  - table: daily\n    url: out/daily/\n    partition_by: [as_of]\n    mode: overwrite_partitions\n"
    );
    std::fs::write(d.join("p.yaml"), yaml).unwrap();
    let _first = run_daily(d, "2026-03-01");
    let second = run_daily(d, "2026-03-01");
    let third = run_daily(d, "2026-11-24");
    let sink = d.join("out/daily");
    let (rows, files) = daily_rows(&sink);
    let mut want = daily_counts("as_of=2026-03-01");
    want.extend(daily_counts("as_of=2026-11-24"));
    assert_eq!(rows, want, "one copy of each day's rows");
    // The rerun day holds the second run's files only; the new day the third's.
    for f in &files {
        let run = if f.starts_with("as_of=2026-03-01/") {
            &second
        } else {
            &third
        };
        assert!(
            f.rsplit('/').next().unwrap().starts_with(&format!("part-{run}-")),
            "{f} is not from run {run}"
        );
    }
    let (m, listed) = manifest(&sink);
    assert_eq!(listed, files, "the manifest lists exactly the files there");
    assert_eq!(m["rows"], 8);
    assert_eq!(m["mode"], "overwrite_partitions");
    assert_eq!(m["run_id"].as_str().unwrap(), third);
    assert_eq!(
        names(&d.join("out")),
        vec![".daily.crmflow-manifest.json", "daily"],
        "staging left behind"
    );
    assert_eq!(names(&sink), vec!["_SUCCESS", "as_of=2026-03-01", "as_of=2026-11-24"]);
}

#[test]
fn append_on_local_disk_adds_new_vars_and_replaces_a_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let yaml = format!(
        "name: daily\nvars:\n  as_of: \"2026-11-24\"\nsources:\n  customers: {{url: data/customers/}}\n  transactions: {{url: data/transactions/}}\nsteps:\n{DAILY}sinks:\n  - table: daily\n    url: out/daily/\n    partition_by: [as_of]\n    mode: append\n  - table: daily\n    url: out/flat/\n    mode: append\n"
    );
    std::fs::write(d.join("p.yaml"), yaml).unwrap();
    for as_of in ["2026-05-01", "2026-05-01", "2026-05-02", "2026-05-01"] {
        run_daily(d, as_of);
    }
    let sink = d.join("out/daily");
    let (rows, files) = daily_rows(&sink);
    let mut want = daily_counts("as_of=2026-05-01");
    want.extend(daily_counts("as_of=2026-05-02"));
    assert_eq!(rows, want, "one copy per set of vars");
    let (m, listed) = manifest(&sink);
    assert_eq!(listed, files);
    assert_eq!(m["rows"], 8);
    // Unpartitioned: the same, in one directory.
    let (m, listed) = manifest(&d.join("out/flat"));
    assert_eq!(m["rows"], 8);
    let (rows, files) = daily_rows(&d.join("out/flat"));
    assert_eq!(listed, files);
    assert_eq!(rows.len(), 8);
    let mut ids: Vec<i64> = rows.iter().map(|r| r.1).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 1, 2, 2, 3, 3, 4, 4]);
    assert_eq!(
        names(&d.join("out")),
        vec![
            ".daily.crmflow-manifest.json",
            ".flat.crmflow-manifest.json",
            "daily",
            "flat"
        ],
        "staging left behind"
    );
}

#[test]
fn a_run_removes_what_dead_runs_left_of_its_sinks_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    write(d, "p.yaml", GOOD, "  - table: totals\n    url: ${out}/totals/\n");
    assert_eq!(crmflow(d, &["run", "p.yaml"]).code, 0);
    let before = snapshot(&d.join("out/totals"));
    // Leftovers of killed runs, of any age: staging under the staging root,
    // staging beside the sink (the layout of earlier releases and of the
    // fallback), a `.old` copy, a manifest temp file; and a leftover of
    // another sink, which is not this run's to judge.
    let key = crmflow::sinks::staging::key(
        &crmflow::storage::Location::parse(d.join("out/totals").to_str().unwrap())
            .unwrap()
            .as_dir(),
    );
    let planted = [
        format!(".crmflow-staging/{key}/20261201T000000Z-0badc0de/part-0.parquet"),
        "out/.totals.crmflow-20261201T000001Z-cafef00d/segment=1/part-0.parquet".to_string(),
        "out/.totals.crmflow-20261201T000002Z-deadbeef.old/part-0.parquet".to_string(),
        "out/totals/_SUCCESS#3".to_string(),
        "out/.other.crmflow-20261201T000003Z-feedface/part-0.parquet".to_string(),
    ];
    for p in &planted {
        std::fs::create_dir_all(d.join(p).parent().unwrap()).unwrap();
        std::fs::write(d.join(p), "half-written").unwrap();
    }
    // The run also publishes, so compare the output before and after by
    // its rows: a failing run shows the clean-up happens first.
    let failing = GOOD.replace("GROUP BY", "WHERE 1 / (c.customer_id - c.customer_id) > 0 GROUP BY");
    write(d, "bad.yaml", &failing, "  - table: totals\n    url: ${out}/totals/\n");
    let out = crmflow(d, &["run", "bad.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        names(&d.join("out")),
        vec![
            ".other.crmflow-20261201T000003Z-feedface",
            ".totals.crmflow-manifest.json",
            "totals"
        ]
    );
    assert!(!d.join(".crmflow-staging").exists());
    let mut cleaned = before.clone();
    cleaned.retain(|(p, _)| !p.contains('#'));
    assert_eq!(snapshot(&d.join("out/totals")), cleaned, "the previous output changed");
    assert_eq!(crmflow(d, &["run", "p.yaml"]).code, 0);
    assert_eq!(
        names(&d.join("out")),
        vec![
            ".other.crmflow-20261201T000003Z-feedface",
            ".totals.crmflow-manifest.json",
            "totals"
        ]
    );
}

#[test]
fn a_missing_sink_is_restored_from_its_old_copy_before_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    write(d, "p.yaml", GOOD, "  - table: totals\n    url: ${out}/totals/\n");
    assert_eq!(crmflow(d, &["run", "p.yaml"]).code, 0);
    let before = snapshot(&d.join("out/totals"));
    // A swap without atomic exchange, killed between its two renames: the
    // sink is missing and its previous output sits in the `.old` copy.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crmflow"))
        .args(["run", "p.yaml"])
        .current_dir(d)
        .env("CRMFLOW_LOG", "warn")
        .env(
            "CRMFLOW_FAILPOINTS",
            "publish::no_exchange=error;publish::between_renames=abort",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "killed by the failpoint");
    assert!(!d.join("out/totals").exists());
    let old: Vec<String> = names(&d.join("out"))
        .into_iter()
        .filter(|n| n.ends_with(".old"))
        .collect();
    assert_eq!(old.len(), 1, "{:?}", names(&d.join("out")));
    // The next run, even one that fails, puts it back first.
    let failing = GOOD.replace("GROUP BY", "WHERE 1 / (c.customer_id - c.customer_id) > 0 GROUP BY");
    write(d, "bad.yaml", &failing, "  - table: totals\n    url: ${out}/totals/\n");
    assert_eq!(crmflow(d, &["run", "bad.yaml"]).code, 1);
    assert_eq!(snapshot(&d.join("out/totals")), before);
    assert_eq!(names(&d.join("out")), vec![".totals.crmflow-manifest.json", "totals"]);
}

#[test]
fn row_groups_hold_131072_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let steps = "  - name: big
    sql: SELECT value AS id, value % 7 AS k FROM generate_series(1, 1200000)
";
    write(d, "p.yaml", steps, "  - table: big\n    url: ${out}/big/\n");
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut total = 0;
    let mut full = 0;
    for f in parquet_files(&d.join("out/big")) {
        let reader = SerializedFileReader::new(std::fs::File::open(&f).unwrap()).unwrap();
        let sizes: Vec<i64> = reader.metadata().row_groups().iter().map(|rg| rg.num_rows()).collect();
        let (last, rest) = sizes.split_last().unwrap();
        assert!(rest.iter().all(|&n| n == 131_072), "{f:?}: {sizes:?}");
        assert!(*last > 0 && *last <= 131_072, "{f:?}: {sizes:?}");
        full += rest.len();
        total += sizes.iter().sum::<i64>();
    }
    assert_eq!(total, 1_200_000);
    assert!(
        full >= 2,
        "no file has a full row group before its last: nothing was checked"
    );
}

#[test]
fn partition_values_with_special_characters_publish_and_match_their_manifest() {
    // Listings return encoded paths (`region=50%25`); they used to be
    // encoded a second time on the way to the footer, failing the run.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let steps = "  - name: t
    sql: |
      SELECT customer_id, CASE customer_id WHEN 1 THEN 'München' WHEN 2 THEN 'a/b' WHEN 3 THEN '50%' ELSE 'a=b' END AS region
      FROM customers
";
    write(
        d,
        "p.yaml",
        steps,
        "  - table: t\n    url: ${out}/t/\n    partition_by: [region]\n",
    );
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("out/.t.crmflow-manifest.json")).unwrap()).unwrap();
    assert_eq!(m["rows"], 4);
    let listed = m["files"].as_array().unwrap();
    assert_eq!(listed.len(), 4);
    for f in listed {
        // The manifest names each file as Hive does: it exists.
        let p = f["path"].as_str().unwrap();
        assert!(
            d.join("out/t").join(p).exists(),
            "{p} is not there: {:?}",
            names(&d.join("out/t"))
        );
    }
}
