//! `format: delta` sinks and sources on the real binary, on local disk and on
//! the S3 test server. What a reader sees is read two independent ways: with
//! the Python `deltalake` package (tests/delta/read_delta.py, in
//! `target/delta-venv`, installed by `.ci/run` or here on first use; set
//! CRMFLOW_DELTA_PYTHON to another interpreter that has it), and by
//! replaying the `_delta_log` JSON commits here (adds minus removes, `txn`
//! actions).
//!
//! The fixture is the tiny dataset of `common::tiny`; the per-customer
//! purchase counts as of a day are counted by hand from its transactions:
//! - 2026-03-01: customer 1 has 3 (01-01, 03-01 twice), 2 has 1 (2025-06-15)
//! - 2026-06-15: 1 has 4 (and 05-30), 2 has 2 (and 2026-06-15)
//! - 2026-11-24: 1 has 4 (11-25 is later), 2 has 3 (and 11-24 23:59:59)
//! - customers 3 and 4 have none on every day.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::{Value, json};

use super::common::{Output, error_of, tiny};
use super::s3::Moto;

/// The Python with `deltalake` installed (target/delta-venv, installed on
/// first use).
fn python() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Ok(p) = std::env::var("CRMFLOW_DELTA_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/delta-venv");
    let bin = venv.join("bin/python");
    let ready = || {
        Command::new(&bin)
            .args(["-c", "import deltalake"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "deltalake==1.6.6", "pyarrow==26.0.1"])
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok && ready(),
            "could not install deltalake into {}; set CRMFLOW_DELTA_PYTHON",
            venv.display()
        );
    }
    bin
}

/// What the `deltalake` package reads at `uri` (optionally as of a
/// version), with the versions of the app transactions `txns`.
fn read_py(uri: &str, version: Option<i64>, txns: &[&str], env: &[(&str, String)]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/delta/read_delta.py");
    let mut cmd = Command::new(python());
    cmd.arg(script).arg(uri);
    if let Some(v) = version {
        cmd.args(["--version", &v.to_string()]);
    }
    for t in txns {
        cmd.args(["--txn", t]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "read_delta.py {uri}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The rows of a Delta read as `[day, customer, n]`.
fn rows(v: &Value) -> Vec<Value> {
    v["rows"].as_array().unwrap().clone()
}

fn day_rows(day: &str, counts: [i64; 4]) -> Vec<Value> {
    (1..=4).map(|c| json!([day, c, counts[c as usize - 1]])).collect()
}

/// The commits of a table's log, in version order, as lists of actions.
fn log(table: &Path) -> Vec<Vec<Value>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        })
        .collect()
}

/// Data files live in the table after replaying the log (adds minus
/// removes), sorted.
fn live_files(commits: &[Vec<Value>]) -> Vec<String> {
    let mut live = std::collections::BTreeSet::new();
    for c in commits {
        for a in c {
            if let Some(p) = a["add"]["path"].as_str() {
                live.insert(p.to_string());
            }
            if let Some(p) = a["remove"]["path"].as_str() {
                live.remove(p);
            }
        }
    }
    live.into_iter().collect()
}

/// Every `.parquet` file below `dir` (outside `_delta_log`).
fn parquet_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if !p.ends_with("_delta_log") {
                n += parquet_files(&p);
            }
        } else if p.extension().is_some_and(|x| x == "parquet") {
            n += 1;
        }
    }
    n
}

const DAILY: &str = "name: daily
vars:
  as_of: \"2026-11-24\"
  out: out
sources:
  customers: {url: data/customers/}
  transactions: {url: data/transactions/}
steps:
  - name: daily
    sql: |
      SELECT CAST(${as_of} AS DATE) AS as_of, c.customer_id, count(t.amount) AS n
      FROM customers c LEFT JOIN transactions t ON t.customer_id = c.customer_id
        AND CAST(t.transaction_ts AS DATE) <= CAST(${as_of} AS DATE)
      GROUP BY c.customer_id
sinks:
  - table: daily
    url: ${out}/daily/
    format: delta
    partition_by: [as_of]
    mode: MODE
";

/// Runs crmflow with `vars` and the failpoints (and S3 environment) given.
fn run(d: &Path, vars: &[&str], failpoints: &str, moto: Option<&Moto>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crmflow"));
    cmd.args(["run", "p.yaml"])
        .current_dir(d)
        .env("CRMFLOW_LOG", "warn")
        .env_remove("RUST_LOG")
        .env("CRMFLOW_FAILPOINTS", failpoints);
    for v in vars {
        cmd.args(["--var", v]);
    }
    if let Some(m) = moto {
        for (k, v) in s3_env(m) {
            cmd.env(k, v);
        }
    }
    let out = cmd.output().unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn s3_env(m: &Moto) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", m.port)),
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", m.port)),
        ("AWS_ALLOW_HTTP", "true".into()),
    ]
}

fn ok(out: &Output) {
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn every_mode_is_one_commit_that_readers_see_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));

    // overwrite: each run replaces the table; version 0 stays readable.
    std::fs::write(d.join("p.yaml"), DAILY.replace("MODE", "overwrite")).unwrap();
    ok(&run(d, &["as_of=2026-11-24"], "", None));
    ok(&run(d, &["as_of=2026-03-01"], "", None));
    let t = d.join("out/daily");
    let uri = t.display().to_string();
    let now = read_py(&uri, None, &[], &[]);
    assert_eq!(now["version"], 1);
    assert_eq!(rows(&now), day_rows("2026-03-01", [3, 1, 0, 0]));
    assert_eq!(now["partition_columns"], json!(["as_of"]));
    assert_eq!(
        now["schema"],
        // as_of is a cast literal, customer_id the fixture's non-null
        // key, n a count: none can be NULL.
        json!([
            ["as_of", "date32[day]", false],
            ["customer_id", "int64", false],
            ["n", "int64", false]
        ])
    );
    assert_eq!(
        rows(&read_py(&uri, Some(0), &[], &[])),
        day_rows("2026-11-24", [4, 3, 0, 0])
    );
    let commits = log(&t);
    assert_eq!(commits.len(), 2);
    // Every file of version 0 was removed in the one commit of version 1.
    let v0: Vec<&str> = commits[0].iter().filter_map(|a| a["add"]["path"].as_str()).collect();
    let removed: Vec<&str> = commits[1].iter().filter_map(|a| a["remove"]["path"].as_str()).collect();
    assert_eq!(v0, removed);
    assert!(live_files(&commits).iter().all(|f| f.starts_with("as_of=2026-03-01/")));
    // No staging or probe is left in or beside the table.
    let beside: Vec<String> = std::fs::read_dir(d.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(beside, ["daily"]);

    // overwrite_partitions: a day replaces only its own partition.
    std::fs::write(d.join("p.yaml"), DAILY.replace("MODE", "overwrite_partitions")).unwrap();
    for as_of in ["2026-03-01", "2026-03-01", "2026-11-24"] {
        ok(&run(d, &[&format!("as_of={as_of}"), "out=parts"], "", None));
    }
    let parts = read_py(&d.join("parts/daily").display().to_string(), None, &[], &[]);
    assert_eq!(parts["version"], 2);
    let mut want = day_rows("2026-03-01", [3, 1, 0, 0]);
    want.extend(day_rows("2026-11-24", [4, 3, 0, 0]));
    assert_eq!(rows(&parts), want);
    let commits = log(&d.join("parts/daily"));
    // The rerun of 03-01 removed exactly the files of its first run.
    let first: Vec<&str> = commits[0].iter().filter_map(|a| a["add"]["path"].as_str()).collect();
    let removed: Vec<&str> = commits[1].iter().filter_map(|a| a["remove"]["path"].as_str()).collect();
    assert_eq!(first, removed);
    assert!(
        commits[2].iter().all(|a| a.get("remove").is_none()),
        "the 11-24 run removed files"
    );

    // append: once per vars. A rerun with the same vars adds nothing (no
    // commit at all), other vars add their rows.
    std::fs::write(d.join("p.yaml"), DAILY.replace("MODE", "append")).unwrap();
    for as_of in ["2026-06-15", "2026-06-15", "2026-03-01"] {
        ok(&run(d, &[&format!("as_of={as_of}"), "out=app"], "", None));
    }
    let t = d.join("app/daily");
    let commits = log(&t);
    assert_eq!(commits.len(), 2, "one commit per distinct vars");
    let txns: Vec<(String, i64)> = commits
        .iter()
        .flatten()
        .filter_map(|a| Some((a["txn"]["appId"].as_str()?.to_string(), a["txn"]["version"].as_i64()?)))
        .collect();
    assert_eq!(txns.len(), 2);
    assert_ne!(txns[0].0, txns[1].0);
    assert!(
        txns.iter()
            .all(|(id, v)| id.starts_with("crmflow/daily/daily/") && *v == 1),
        "{txns:?}"
    );
    let ids: Vec<&str> = txns.iter().map(|(id, _)| id.as_str()).collect();
    let app = read_py(&t.display().to_string(), None, &ids, &[]);
    assert_eq!(app["version"], 1);
    assert_eq!(app["txn"][ids[0]], 1);
    let mut want = day_rows("2026-03-01", [3, 1, 0, 0]);
    want.extend(day_rows("2026-06-15", [4, 2, 0, 0]));
    assert_eq!(rows(&app), want);
    // Run metadata in the commit.
    let info: Vec<&Value> = commits[1].iter().filter_map(|a| a.get("commitInfo")).collect();
    assert_eq!(info[0]["crmflow.pipeline"], "daily");
    assert_eq!(info[0]["crmflow.vars"]["as_of"], "2026-03-01");
}

#[test]
fn a_run_killed_before_its_commit_leaves_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    for mode in ["overwrite", "overwrite_partitions", "append"] {
        let out_dir = format!("out-{mode}");
        std::fs::write(d.join("p.yaml"), DAILY.replace("MODE", mode)).unwrap();
        ok(&run(d, &["as_of=2026-11-24", &format!("out={out_dir}")], "", None));
        let t = d.join(&out_dir).join("daily");
        let uri = t.display().to_string();
        let before = read_py(&uri, None, &[], &[]);
        assert_eq!(before["version"], 0);

        // Killed (SIGABRT, no cleanup) while it writes the data files of the
        // next version, and after they are written, before its commit.
        for (failpoint, wrote) in [("delta::data:daily=abort", false), ("delta::commit:daily=abort", true)] {
            let out = run(d, &["as_of=2026-03-01", &format!("out={out_dir}")], failpoint, None);
            assert_eq!(
                out.code, -1,
                "{mode}: the run was not killed by {failpoint}: {}",
                out.stderr
            );
            let after = read_py(&uri, None, &[], &[]);
            assert_eq!(after, before, "{mode}: a reader sees something else after {failpoint}");
            assert_eq!(rows(&after), day_rows("2026-11-24", [4, 3, 0, 0]));
            assert_eq!(log(&t).len(), 1, "{mode}: {failpoint}");
            assert_eq!(
                parquet_files(&t) > live_files(&log(&t)).len(),
                wrote,
                "{mode}: {failpoint}: data files written into the table"
            );
        }

        // The next run takes over the dead run's lock and commits.
        ok(&run(d, &["as_of=2026-03-01", &format!("out={out_dir}")], "", None));
        let next = read_py(&uri, None, &[], &[]);
        assert_eq!(next["version"], 1, "{mode}");
        let mut want = day_rows("2026-03-01", [3, 1, 0, 0]);
        if mode != "overwrite" {
            want.extend(day_rows("2026-11-24", [4, 3, 0, 0]));
        }
        assert_eq!(rows(&next), want, "{mode}");
    }
}

#[test]
fn delta_tables_on_s3_commit_once_per_version() {
    let moto = Moto::start();
    moto.bucket("crm");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let env = s3_env(&moto);

    std::fs::write(d.join("p.yaml"), DAILY.replace("MODE", "overwrite_partitions")).unwrap();
    for as_of in ["2026-03-01", "2026-11-24", "2026-03-01"] {
        ok(&run(
            d,
            &[&format!("as_of={as_of}"), "out=s3://crm/out"],
            "",
            Some(&moto),
        ));
    }
    let got = read_py("s3://crm/out/daily", None, &[], &env);
    assert_eq!(got["version"], 2);
    let mut want = day_rows("2026-03-01", [3, 1, 0, 0]);
    want.extend(day_rows("2026-11-24", [4, 3, 0, 0]));
    assert_eq!(rows(&got), want);

    std::fs::write(d.join("p.yaml"), DAILY.replace("MODE", "append")).unwrap();
    for _ in 0..2 {
        ok(&run(d, &["as_of=2026-06-15", "out=s3://crm/app"], "", Some(&moto)));
    }
    let got = read_py("s3://crm/app/daily", None, &[], &env);
    assert_eq!(got["version"], 0);
    assert_eq!(rows(&got), day_rows("2026-06-15", [4, 2, 0, 0]));

    // The commit is a put-if-absent on S3: a second writer of the same
    // version is refused by the server.
    let store = moto.store("crm");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let v0 = object_store::path::Path::from("app/daily/_delta_log/00000000000000000000.json");
    let again = rt.block_on(object_store::ObjectStore::put_opts(
        store.as_ref(),
        &v0,
        b"{}".to_vec().into(),
        object_store::PutMode::Create.into(),
    ));
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
}

const READ_BACK: &str = "name: back
sources:
  daily: {url: src/daily/, format: delta AS_OF}
steps:
  - name: copy
    sql: SELECT as_of, customer_id, n FROM daily
sinks:
  - table: copy
    url: copy/
";

#[test]
fn delta_tables_are_sources_as_of_a_version_or_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    std::fs::write(d.join("p.yaml"), DAILY.replace("MODE", "overwrite")).unwrap();
    ok(&run(d, &["as_of=2026-11-24", "out=src"], "", None));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ok(&run(d, &["as_of=2026-03-01", "out=src"], "", None));

    let read = |as_of: &str| -> Vec<Value> {
        std::fs::write(d.join("p.yaml"), READ_BACK.replace(" AS_OF", as_of)).unwrap();
        ok(&run(d, &[], "", None));
        let mut rows: Vec<Value> = Vec::new();
        for b in super::common::read_dir(&d.join("copy")) {
            let days = b
                .column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Date32Array>()
                .unwrap();
            let ids = b
                .column(1)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .unwrap();
            let ns = b
                .column(2)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .unwrap();
            for r in 0..b.num_rows() {
                rows.push(json!([
                    days.value_as_date(r).unwrap().to_string(),
                    ids.value(r),
                    ns.value(r)
                ]));
            }
        }
        rows.sort_by_key(|r| r.to_string());
        rows
    };
    assert_eq!(read(""), day_rows("2026-03-01", [3, 1, 0, 0]));
    assert_eq!(read(", version: 0"), day_rows("2026-11-24", [4, 3, 0, 0]));
    assert_eq!(
        read(&format!(", timestamp: \"{between}\"")),
        day_rows("2026-11-24", [4, 3, 0, 0])
    );

    std::fs::write(d.join("p.yaml"), READ_BACK.replace(" AS_OF", ", version: 7")).unwrap();
    let out = run(d, &[], "", None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let err = error_of(&out);
    let src = d.join("src/daily/").display().to_string();
    assert!(
        err.starts_with(&format!(
            "source \"daily\" ({src}): cannot read version 7 of the Delta table at {src}: "
        )),
        "{err}"
    );
    std::fs::write(
        d.join("p.yaml"),
        READ_BACK.replace("src/daily/", "data/customers/").replace(" AS_OF", ""),
    )
    .unwrap();
    let out = run(d, &[], "", None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let cust = d.join("data/customers/").display().to_string();
    assert_eq!(
        error_of(&out),
        format!("source \"daily\" ({cust}): {cust} is not a Delta table (no _delta_log/ there)")
    );
}

#[test]
fn a_failed_sink_check_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    for mode in ["overwrite", "overwrite_partitions", "append"] {
        let out_dir = format!("out-{mode}");
        let yaml = DAILY.replace("MODE", mode);
        std::fs::write(d.join("p.yaml"), &yaml).unwrap();
        ok(&run(d, &["as_of=2026-11-24", &format!("out={out_dir}")], "", None));
        let t = d.join(&out_dir).join("daily");
        let before = read_py(&t.display().to_string(), None, &[], &[]);
        // Four customers a day: a check for at most three fails.
        std::fs::write(
            d.join("p.yaml"),
            format!("{yaml}    checks:\n      - row_count: {{max: 3}}\n"),
        )
        .unwrap();
        let out = run(d, &["as_of=2026-03-01", &format!("out={out_dir}")], "", None);
        assert_eq!(out.code, 1, "{mode}: {}", out.stderr);
        assert_eq!(
            error_of(&out),
            "sink \"daily\": check row_count(max 3) failed: the table has 4 rows",
            "{mode}"
        );
        assert_eq!(read_py(&t.display().to_string(), None, &[], &[]), before, "{mode}");
        assert_eq!(log(&t).len(), 1, "{mode}: a commit was written");
        assert_eq!(
            parquet_files(&t),
            live_files(&log(&t)).len(),
            "{mode}: data files were written"
        );
    }
}

#[test]
fn outside_overwrite_the_schema_stays_and_descriptions_are_column_comments() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let described = "    descriptions:\n      n: purchases up to as_of\n      customer_id: the CRM id\n";
    let spend = |mode: &str| {
        DAILY
            .replace("MODE", mode)
            .replace("count(t.amount) AS n", "count(t.amount) AS n, sum(t.amount) AS spend")
    };
    std::fs::write(
        d.join("p.yaml"),
        format!("{}{described}", DAILY.replace("MODE", "append")),
    )
    .unwrap();
    ok(&run(d, &["as_of=2026-03-01"], "", None));
    let t = d.join("out/daily");
    let uri = t.display().to_string();
    let got = read_py(&uri, None, &[], &[]);
    assert_eq!(
        got["comments"],
        json!({"customer_id": "the CRM id", "n": "purchases up to as_of"})
    );
    let table = d.join("out/daily/").display().to_string();
    let hint = |mode: &str| format!("mode {mode} does not change the table's schema (mode overwrite replaces it)");
    // A new column, a column left out, a changed type, another
    // partitioning: refused before anything is published.
    let cases = [
        (
            spend("append"),
            format!(
                "column \"spend\" is not in the Delta table at {table} (columns: as_of, customer_id, n); {}",
                hint("append")
            ),
        ),
        (
            DAILY
                .replace("MODE", "overwrite_partitions")
                .replace(", count(t.amount) AS n", ""),
            format!(
                "column \"n\" of the Delta table at {table} is missing here; {}",
                hint("overwrite_partitions")
            ),
        ),
        (
            DAILY
                .replace("MODE", "append")
                .replace("count(t.amount) AS n", "CAST(count(t.amount) AS DOUBLE) AS n"),
            format!(
                "column \"n\" is Int64 in the Delta table at {table} and Float64 here; {}",
                hint("append")
            ),
        ),
        (
            DAILY
                .replace("MODE", "append")
                .replace("partition_by: [as_of]", "partition_by: []"),
            format!(
                "the Delta table at {table} is partitioned by [as_of], the sink by []; mode append keeps the table's partitioning (mode overwrite replaces it)"
            ),
        ),
    ];
    for (yaml, want) in cases {
        std::fs::write(d.join("p.yaml"), yaml).unwrap();
        let out = run(d, &["as_of=2026-06-15"], "", None);
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert_eq!(error_of(&out), format!("sink \"daily\" ({table}): {want}"));
        assert_eq!(read_py(&uri, None, &[], &[]), got);
    }
    // overwrite replaces the schema and the comments in one commit.
    std::fs::write(
        d.join("p.yaml"),
        format!(
            "{}    descriptions:\n      spend: amount up to as_of\n",
            spend("overwrite")
        ),
    )
    .unwrap();
    ok(&run(d, &["as_of=2026-06-15"], "", None));
    let now = read_py(&uri, None, &[], &[]);
    assert_eq!(now["version"], 1);
    assert_eq!(now["comments"], json!({"spend": "amount up to as_of"}));
    // By hand: customer 1 by 06-15 spent 100 + 50 + 25.5 + 40, customer 2
    // 200 + 100; 3 and 4 nothing (NULL: no transactions).
    assert_eq!(
        rows(&now),
        vec![
            json!(["2026-06-15", 1, 4, 215.5]),
            json!(["2026-06-15", 2, 2, 300.0]),
            json!(["2026-06-15", 3, 0, null]),
            json!(["2026-06-15", 4, 0, null]),
        ]
    );
}

#[test]
fn delta_sinks_refuse_a_parquet_directory_and_ballista() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    // A Parquet output already there: not turned into a Delta table.
    std::fs::write(
        d.join("p.yaml"),
        DAILY.replace("MODE", "overwrite").replace("    format: delta\n", ""),
    )
    .unwrap();
    ok(&run(d, &[], "", None));
    std::fs::write(d.join("p.yaml"), DAILY.replace("MODE", "overwrite")).unwrap();
    let out = run(d, &[], "", None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let t = d.join("out/daily/").display().to_string();
    let err = error_of(&out);
    assert!(
        err.starts_with(&format!("sink \"daily\" ({t}): {t} holds files (as_of=2026-11-24/")),
        "{err}"
    );
    assert!(
        err.ends_with("but no Delta table (no _delta_log/); remove them or write elsewhere"),
        "{err}"
    );
    assert!(!d.join("out/daily/_delta_log").exists());

    let mut ballista = DAILY.replace("MODE", "overwrite");
    ballista = ballista.replace("sources:", "engine: {kind: ballista, standalone: true}\nsources:");
    std::fs::write(d.join("p.yaml"), ballista).unwrap();
    let out = super::common::crmflow(d, &["validate", "p.yaml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "sink \"daily\" (line 17): format: delta is read and written by the local engine only (engine: kind: local)"
        ),
        "{}",
        out.stderr
    );

    std::fs::write(
        d.join("p.yaml"),
        "name: v\nsources:\n  c: {url: data/customers/, version: 3}\nsinks:\n  - table: c\n    url: o/\n",
    )
    .unwrap();
    let out = super::common::crmflow(d, &["validate", "p.yaml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("version and timestamp apply to format: delta only"),
        "{}",
        out.stderr
    );
}
