//! What a scheduler relies on, through the real binary: a `--run-results`
//! path that cannot be written fails before anything is read (exit 2,
//! never a published run that exits 1); an invalid pipeline still leaves
//! its summary there; with `--log-format json` every stderr line is one
//! JSON object with unique keys — command-line errors and panics included;
//! a panic is caught, names its run, exits 1 and publishes nothing.

use std::path::Path;
use std::process::Command;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::common::{Output, crmflow, error_of, snapshot, tiny};

const PIPELINE: &str = "name: ops
vars:
  out: out
sources:
  customers:
    url: data/customers/
    checks:
      - unique: customer_id
      - not_null: [customer_id, signup_date]
  transactions: {url: data/transactions/}
steps:
  - name: totals
    sql: |
      SELECT c.customer_id, c.country, sum(t.amount) AS total
      FROM customers c JOIN transactions t USING (customer_id)
      GROUP BY c.customer_id, c.country
  - name: rich
    sql: SELECT customer_id, total FROM totals WHERE total > 100
  - name: by_country
    sql: SELECT country, count(*) AS n FROM totals GROUP BY country
sinks:
  - table: rich
    url: ${out}/rich/
    checks:
      - row_count: {min: 1}
  - table: by_country
    url: ${out}/by_country/
";

/// A JSON value parsed by a reader that rejects an object holding a key
/// twice (serde_json keeps the last one silently, as most parsers do).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Strict(Value::Array(out)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.insert(key.clone(), v).is_some() {
                return Err(de::Error::custom(format!("duplicate key \"{key}\"")));
            }
        }
        Ok(Strict(Value::Object(out)))
    }
}

/// Every line of `stderr` as a JSON object with unique keys.
#[track_caller]
fn json_lines(stderr: &str) -> Vec<Value> {
    assert!(!stderr.trim().is_empty(), "nothing on stderr");
    stderr
        .lines()
        .map(|l| match serde_json::from_str::<Strict>(l) {
            Ok(Strict(v)) if v.is_object() => v,
            Ok(_) => panic!("not a JSON object: {l}"),
            Err(e) => panic!("not JSON with unique keys ({e}): {l}"),
        })
        .collect()
}

/// Runs crmflow in `dir` with `env` on top of a `warn` log level.
fn crmflow_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crmflow"));
    cmd.args(args)
        .current_dir(dir)
        .env("CRMFLOW_LOG", "warn")
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the crmflow binary runs");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A directory with the tiny dataset and the pipeline, after one good run.
fn published() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    std::fs::write(d.join("p.yaml"), PIPELINE).unwrap();
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    dir
}

/// Every entry of `dir` (not recursive) whose name starts with a dot:
/// staging roots, locks, `.old` copies.
fn hidden(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // The sinks' manifests (beside them) are published output, not leftovers.
        .filter(|n| n.starts_with('.') && !n.ends_with(".crmflow-manifest.json"))
        .collect();
    out.sort();
    out
}

#[test]
fn unwritable_run_results_fail_before_anything_is_read_or_written() {
    let dir = published();
    let d = dir.path();
    let before = snapshot(&d.join("out"));
    std::fs::create_dir(d.join("results")).unwrap();
    for (path, cause) in [
        ("missing/run.json", "No such file or directory (os error 2)"),
        ("results", "Is a directory (os error 21)"),
    ] {
        let out = crmflow(d, &["run", "p.yaml", "--run-results", path]);
        assert_eq!(out.code, 2, "{path}: {}", out.stderr);
        assert_eq!(
            error_of(&out),
            format!("--run-results {path}: cannot be written: {cause}")
        );
        assert_eq!(out.stdout, "", "{path}");
        assert_eq!(snapshot(&d.join("out")), before, "{path}: the outputs changed");
        assert!(hidden(d).is_empty(), "{path}: {:?}", hidden(d));
        assert!(
            hidden(&d.join("out")).is_empty(),
            "{path}: {:?}",
            hidden(&d.join("out"))
        );
        assert!(!d.join("missing").exists());
    }
    // JSON mode: the same, as one ERROR event.
    let out = crmflow(
        d,
        &[
            "--log-format",
            "json",
            "run",
            "p.yaml",
            "--run-results",
            "missing/run.json",
        ],
    );
    assert_eq!(out.code, 2);
    let lines = json_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert_eq!(lines[0]["level"], "ERROR");
    assert_eq!(lines[0]["exit_code"], 2);
    assert_eq!(
        lines[0]["message"],
        "--run-results missing/run.json: cannot be written: No such file or directory (os error 2)"
    );
}

#[test]
fn an_invalid_pipeline_replaces_old_run_results_with_its_error() {
    let dir = published();
    let d = dir.path();
    std::fs::write(d.join("run.json"), "{\"status\":\"success\"}\n").unwrap();
    std::fs::write(
        d.join("p.yaml"),
        PIPELINE.replace("FROM totals WHERE", "FROM totls WHERE"),
    )
    .unwrap();
    let out = crmflow(d, &["run", "p.yaml", "--var", "out=out", "--run-results", "run.json"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stdout, "");
    let error = error_of(&out);
    assert_eq!(
        error,
        "invalid pipeline p.yaml: step \"rich\" (line 17): table \"totls\" is neither a source nor a step; did you mean \"totals\"?"
    );
    let Strict(v) = serde_json::from_str(&std::fs::read_to_string(d.join("run.json")).unwrap()).unwrap();
    assert_eq!(v["status"], "invalid");
    assert_eq!(v["pipeline"], "ops");
    assert_eq!(v["error"], error.as_str());
    assert_eq!(v["vars"], serde_json::json!({"out": "out"}));
    assert_eq!(v["published"], serde_json::json!([]));
    assert_eq!(v["run_id"].as_str().unwrap().len(), 25);
}

#[test]
fn json_log_lines_have_unique_keys_and_name_their_step() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    std::fs::write(d.join("p.yaml"), PIPELINE).unwrap();
    for level in ["info", "debug"] {
        let out = crmflow_env(d, &["--log-format", "json", "run", "p.yaml"], &[("CRMFLOW_LOG", level)]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let lines = json_lines(&out.stderr);
        let started: Vec<&Value> = lines.iter().filter(|l| l["message"] == "step started").collect();
        assert_eq!(started.len(), 3, "{level}");
        for (l, (step, kind)) in started
            .iter()
            .zip([("totals", "sql"), ("rich", "sql"), ("by_country", "sql")])
        {
            assert_eq!(
                l["span"],
                serde_json::json!({"name": "step", "step": step, "step_kind": kind}),
                "{level}"
            );
        }
        let checks: Vec<&Value> = lines.iter().filter(|l| l["message"] == "check passed").collect();
        assert_eq!(checks.len(), 3, "{level}");
        assert_eq!(
            checks[0]["span"],
            serde_json::json!({"name": "source", "source": "customers"})
        );
        assert_eq!(checks[2]["span"], serde_json::json!({"name": "sink", "table": "rich"}));
    }
}

#[test]
fn command_line_errors_are_json_in_json_mode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (args, message) in [
        (
            &["--log-format", "json", "run", "p.yaml", "--bogus"][..],
            "unexpected argument '--bogus' found",
        ),
        (
            &["run", "p.yaml", "--var", "as_of", "--log-format", "json"][..],
            "invalid value 'as_of' for '--var <KEY=VALUE>': \"as_of\" is not KEY=VALUE",
        ),
        (
            &["--log-format=json", "run", "p.yaml", "--var", "=x"][..],
            "invalid value '=x' for '--var <KEY=VALUE>': \"=x\" has an empty KEY",
        ),
        (
            &["--log-format", "json", "frobnicate"][..],
            "unrecognized subcommand 'frobnicate'",
        ),
        (
            &["--log-format", "json", "run"][..],
            "the following required arguments were not provided:\n  <PIPELINE>",
        ),
    ] {
        let out = crmflow(d, args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{args:?}");
        let lines = json_lines(&out.stderr);
        assert_eq!(lines.len(), 1, "{args:?}: {}", out.stderr);
        let l = &lines[0];
        assert_eq!(l["level"], "ERROR", "{args:?}");
        assert_eq!(l["exit_code"], 2, "{args:?}");
        assert_eq!(l["message"], message, "{args:?}");
        let detail = l["detail"].as_str().unwrap();
        assert!(detail.starts_with(&format!("error: {message}")), "{detail}");
        assert!(detail.ends_with("For more information, try '--help'."), "{detail}");
    }
    // Text mode keeps clap's own text; --help is not an error in either.
    let out = crmflow(d, &["run", "p.yaml", "--bogus"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.starts_with("error: unexpected argument '--bogus' found\n"),
        "{}",
        out.stderr
    );
    let out = crmflow(d, &["--log-format", "json", "run", "--help"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.starts_with("Run a pipeline"), "{}", out.stdout);
    assert_eq!(std::fs::read_dir(d).unwrap().count(), 0, "something was written");
}

/// A panic at `failpoint` (the step task, or the run's own task after
/// every sink is staged): exit 1, the panic logged as JSON with the run id,
/// the summary in run results and on stdout, nothing published, nothing
/// left, and the next run publishes.
#[test]
fn a_panic_is_caught_logged_with_the_run_id_and_publishes_nothing() {
    let dir = published();
    let d = dir.path();
    let before = snapshot(&d.join("out"));
    for (failpoint, error, location) in [
        (
            "run::step:rich=panic",
            "step \"rich\": panicked: failpoint run::step:rich",
            Some(serde_json::json!({"name": "step", "step": "rich", "step_kind": "sql"})),
        ),
        ("run::staged=panic", "panicked: failpoint run::staged", None),
    ] {
        let out = crmflow_env(
            d,
            &[
                "--log-format",
                "json",
                "run",
                "p.yaml",
                "--var",
                "out=out",
                "--run-results",
                "run.json",
            ],
            &[("CRMFLOW_FAILPOINTS", failpoint), ("CRMFLOW_LOG", "info")],
        );
        assert_eq!(out.code, 1, "{failpoint}: {}", out.stderr);
        let lines = json_lines(&out.stderr);
        let results = std::fs::read_to_string(d.join("run.json")).unwrap();
        assert_eq!(out.stdout, results, "{failpoint}");
        let Strict(summary) = serde_json::from_str(&results).unwrap();
        assert_eq!(summary["status"], "failed", "{failpoint}");
        assert_eq!(summary["error"], error, "{failpoint}");
        assert_eq!(summary["published"], serde_json::json!([]), "{failpoint}");
        let run_id = summary["run_id"].as_str().unwrap();
        let panicked: Vec<&Value> = lines
            .iter()
            .filter(|l| l["message"].as_str().unwrap_or("").starts_with("panicked: ") && l.get("exit_code").is_none())
            .collect();
        assert_eq!(panicked.len(), 1, "{failpoint}: {}", out.stderr);
        let p = panicked[0];
        assert_eq!(p["level"], "ERROR");
        assert_eq!(p["run_id"], run_id, "{failpoint}");
        assert!(p["location"].as_str().unwrap().starts_with("src/failpoint.rs:"), "{p}");
        if let Some(span) = location {
            assert_eq!(p["span"], span, "{failpoint}");
        }
        let last = lines.last().unwrap();
        assert_eq!(last["level"], "ERROR");
        assert_eq!(last["exit_code"], 1);
        assert_eq!(last["message"], error);
        assert_eq!(snapshot(&d.join("out")), before, "{failpoint}: the outputs changed");
        assert_eq!(hidden(d), Vec::<String>::new(), "{failpoint}");
        assert_eq!(hidden(&d.join("out")), Vec::<String>::new(), "{failpoint}");
    }
    // Text mode: no "thread 'main' panicked" from Rust, one ERROR line.
    let out = crmflow_env(d, &["run", "p.yaml"], &[("CRMFLOW_FAILPOINTS", "run::staged=panic")]);
    assert_eq!(out.code, 1);
    assert!(!out.stderr.contains("thread '"), "{}", out.stderr);
    assert_eq!(error_of(&out), "panicked: failpoint run::staged");
    // The locks were released: the next run publishes.
    let out = crmflow(d, &["run", "p.yaml", "--var", "out=out"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}
