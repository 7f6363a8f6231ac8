//! Run control on the real binary: `--select` with `+`, `--defer` reading
//! published outputs, failing steps that skip only their dependants,
//! `--fail-fast`, `--backfill` (skips, `--force`, `--keep-going`,
//! SIGTERM) and `crmflow gc`.
//!
//! The tiny dataset's totals, by hand (`common::tiny`): customer 1 spent
//! 100 + 50 + 25.5 + 40 + 999 = 1214.5 (the 999 on 2026-11-25), customer 2
//! 200 + 100 + 10 = 310 (the 10 on 2026-11-24); customers 3 and 4 nothing.

use std::path::Path;

use serde_json::Value;

use super::common::{Customer, Output, crmflow, error_of, f64s, read_dir, snapshot, tiny, write_crm};

/// totals <- transactions; big <- totals; ranked <- big; roster <-
/// customers (an independent branch); every step has a sink.
const PIPELINE: &str = "name: rc
vars:
  out: out
sources:
  customers: {url: data/customers/}
  transactions: {url: data/transactions/}
steps:
  - name: totals
    sql: SELECT customer_id, sum(amount) AS total FROM transactions GROUP BY customer_id
  - name: big
    sql: SELECT customer_id, total FROM totals WHERE total > 500
  - name: ranked
    sql: SELECT customer_id, total, rank() OVER (ORDER BY total DESC) AS r FROM big
  - name: roster
    sql: SELECT customer_id, signup_date FROM customers
SINKS";

const SINKS: &str = "sinks:
  - table: totals
    url: ${out}/totals/
  - table: big
    url: ${out}/big/
  - table: ranked
    url: ${out}/ranked/
  - table: roster
    url: ${out}/roster/
";

fn setup(d: &Path) {
    tiny(&d.join("data"));
    std::fs::write(d.join("p.yaml"), PIPELINE.replace("SINKS", SINKS)).unwrap();
}

/// The directories below `out` (published sinks and anything left behind).
fn outputs(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(d.join("out")) {
        Ok(r) => r
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect(),
        Err(_) => vec![],
    };
    v.sort();
    v
}

fn summary(out: &Output) -> Value {
    let last = out
        .stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no stdout:\n{}", out.stderr));
    serde_json::from_str(last).unwrap()
}

/// (name, status, reason) of each step in the summary.
fn steps(s: &Value) -> Vec<(String, String, Option<String>)> {
    s["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| {
            (
                st["name"].as_str().unwrap().to_string(),
                st["status"].as_str().unwrap().to_string(),
                st["reason"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn step(name: &str, status: &str, reason: Option<&str>) -> (String, String, Option<String>) {
    (name.to_string(), status.to_string(), reason.map(str::to_string))
}

fn ok(name: &str) -> (String, String, Option<String>) {
    step(name, "success", None)
}

/// customer_id and total of a sink, sorted by customer.
fn totals(dir: &Path) -> Vec<(i64, f64)> {
    let b = read_dir(dir);
    let ids = f64s(&b, "customer_id");
    let t = f64s(&b, "total");
    let mut v: Vec<(i64, f64)> = ids
        .iter()
        .zip(&t)
        .map(|(i, t)| (i.unwrap() as i64, t.unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn select_with_plus_chooses_the_steps_and_only_their_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        // (selectors, steps run, sinks written)
        (&["big"], &["totals", "big"], &["big"]),
        (&["+big"], &["totals", "big"], &["big", "totals"]),
        (&["big+"], &["totals", "big", "ranked"], &["big", "ranked"]),
        (&["+ranked"], &["totals", "big", "ranked"], &["big", "ranked", "totals"]),
        (&["roster,big"], &["totals", "big", "roster"], &["big", "roster"]),
        (
            &["roster", "totals+"],
            &["totals", "big", "ranked", "roster"],
            &["big", "ranked", "roster", "totals"],
        ),
    ];
    for (selectors, want_steps, want_sinks) in cases {
        let _ = std::fs::remove_dir_all(d.join("out"));
        let mut args = vec!["run", "p.yaml"];
        for s in *selectors {
            args.extend(["--select", s]);
        }
        let out = crmflow(d, &args);
        assert_eq!(out.code, 0, "{selectors:?}: {}", out.stderr);
        let s = summary(&out);
        let ran: Vec<String> = steps(&s).into_iter().map(|(n, st, _)| format!("{n}:{st}")).collect();
        let want: Vec<String> = want_steps.iter().map(|n| format!("{n}:success")).collect();
        assert_eq!(ran, want, "{selectors:?}");
        assert_eq!(outputs(d), *want_sinks, "{selectors:?}");
    }
    // The steps read what they read: big keeps customer 1 only.
    assert_eq!(totals(&d.join("out/big")), vec![(1, 1214.5)]);

    let out = crmflow(d, &["run", "p.yaml", "--select", "ranked,+bgi"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        error_of(&out),
        "invalid pipeline p.yaml: --select +bgi: no step is named \"bgi\"; did you mean \"big\"?"
    );
    let out = crmflow(d, &["run", "p.yaml", "--select", "nothing_like_it"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        error_of(&out),
        "invalid pipeline p.yaml: --select nothing_like_it: no step is named \"nothing_like_it\""
    );
}

/// The tiny dataset with customer 2's transactions multiplied by 10, so
/// that a table computed now differs from the one published before.
fn change_source(d: &Path) {
    let _ = std::fs::remove_dir_all(d.join("data"));
    write_crm(
        &d.join("data"),
        &[Customer {
            id: 1,
            signup: "2026-01-01",
            cost: 1.0,
        }],
        &[(1, "2026-01-01 10:00:00", 1.0), (2, "2025-06-15 08:00:00", 3000.0)],
        &[(1, "2026-08-27 00:00:00", "web_visit")],
    );
}

#[test]
fn defer_reads_unselected_steps_from_their_published_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    assert_eq!(crmflow(d, &["run", "p.yaml"]).code, 0);
    let published_totals = snapshot(&d.join("out/totals"));
    change_source(&d);

    // Deferred: big reads the published totals (1214.5 and 310), not the
    // new source (1.0 and 3000.0); totals is neither computed nor written.
    let out = crmflow(
        d,
        &["run", "p.yaml", "--select", "big", "--defer", "--run-results", "r.json"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(totals(&d.join("out/big")), vec![(1, 1214.5)]);
    assert_eq!(snapshot(&d.join("out/totals")), published_totals);
    let url = format!("{}/out/totals/", d.display());
    let reason = format!("deferred to {url}");
    let want = vec![step("totals", "deferred", Some(&reason)), ok("big")];
    assert_eq!(steps(&summary(&out)), want);
    let results: Value = serde_json::from_str(&std::fs::read_to_string(d.join("r.json")).unwrap()).unwrap();
    assert_eq!(steps(&results), want);
    let line = out
        .stderr
        .lines()
        .find(|l| l.trim_start().starts_with("totals "))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    assert!(line.ends_with(&format!("  {reason}")), "{line}");
    assert_eq!(line.split_whitespace().nth(2), Some("deferred"), "{line}");

    // Without --defer the unselected step is computed from the new source.
    let out = crmflow(d, &["run", "p.yaml", "--select", "big"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(totals(&d.join("out/big")), vec![(2, 3000.0)]);
    assert_eq!(steps(&summary(&out)), vec![ok("totals"), ok("big")]);

    // ranked reads big only: totals is not needed, even unpublished.
    std::fs::remove_dir_all(d.join("out/totals")).unwrap();
    let out = crmflow(d, &["run", "p.yaml", "--select", "ranked", "--defer"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let big_url = format!("{}/out/big/", d.display());
    assert_eq!(
        steps(&summary(&out)),
        vec![
            step("big", "deferred", Some(&format!("deferred to {big_url}"))),
            ok("ranked")
        ]
    );

    // A step to defer whose sink was never published.
    let out = crmflow(
        d,
        &["run", "p.yaml", "--select", "big", "--defer", "--run-results", "r.json"],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        format!(
            "invalid pipeline p.yaml: --defer: step \"totals\" is not selected and its sink \"totals\" has no published output ({url} has no _SUCCESS)"
        )
    );
    assert_eq!(out.stdout, "");
    let results: Value = serde_json::from_str(&std::fs::read_to_string(d.join("r.json")).unwrap()).unwrap();
    assert_eq!(results["status"], "invalid");

    // A step to defer without any sink.
    let no_sink = PIPELINE.replace(
        "SINKS",
        &SINKS.replace("  - table: totals\n    url: ${out}/totals/\n", ""),
    );
    std::fs::write(d.join("q.yaml"), no_sink).unwrap();
    let out = crmflow(d, &["run", "q.yaml", "--select", "big", "--defer"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        "invalid pipeline q.yaml: --defer: step \"totals\" is not selected and no sink writes its table \"totals\" (read by step \"big\"); select it (--select +big) or give \"totals\" a sink"
    );
}

/// Runs with failpoints (debug builds).
fn run_failing(d: &Path, failpoints: &str, args: &[&str]) -> Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crmflow"))
        .args(args)
        .current_dir(d)
        .env("CRMFLOW_LOG", "warn")
        .env("CRMFLOW_FAILPOINTS", failpoints)
        .output()
        .unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_failing_step_skips_only_its_dependants_and_nothing_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    // A fifth step, independent of the others, that fails on the data
    // itself ('US' is no integer) when it is computed (cached).
    let yaml = PIPELINE.replace(
        "SINKS",
        &format!(
            "  - name: bad_cast\n    cache: true\n    sql: SELECT CAST(country AS INT) AS c FROM customers\n{SINKS}"
        ),
    );
    std::fs::write(d.join("p.yaml"), &yaml).unwrap();
    // Published once without the failing step.
    let good = crmflow(d, &["run", "p.yaml", "--select", "totals+,roster"]);
    assert_eq!(good.code, 0, "{}", good.stderr);
    let before = snapshot(&d.join("out"));

    let out = run_failing(
        d,
        "run::step:totals=error",
        &["run", "p.yaml", "--run-results", "r.json"],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let s = summary(&out);
    let got = steps(&s);
    let skipped = Some("depends on failed step \"totals\"");
    assert_eq!(
        got[..4].to_vec(),
        vec![
            step("totals", "error", Some("step \"totals\": failpoint run::step:totals")),
            step("big", "skipped", skipped),
            step("ranked", "skipped", skipped),
            ok("roster"),
        ]
    );
    assert_eq!(got[4].0, "bad_cast");
    assert_eq!(got[4].1, "error");
    let cast_error = got[4].2.clone().unwrap();
    assert!(cast_error.starts_with("step \"bad_cast\": "), "{cast_error}");
    assert!(cast_error.contains("'US'"), "{cast_error}");
    assert_eq!(s["status"], "failed");
    assert_eq!(s["published"], serde_json::json!([]));
    assert_eq!(
        error_of(&out),
        format!("2 problems:\n  - step \"totals\": failpoint run::step:totals\n  - {cast_error}")
    );
    let results: Value = serde_json::from_str(&std::fs::read_to_string(d.join("r.json")).unwrap()).unwrap();
    assert_eq!(steps(&results), got);
    // roster ran and was staged, but nothing was published or left behind.
    assert_eq!(snapshot(&d.join("out")), before);
    assert_eq!(outputs(d), vec!["big", "ranked", "roster", "totals"]);
    assert!(!d.join(".crmflow-staging").exists());

    // --fail-fast: the first failure stops the run.
    let out = run_failing(d, "run::step:totals=error", &["run", "p.yaml", "--fail-fast"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(error_of(&out), "step \"totals\": failpoint run::step:totals");
    let stopped = Some("not run: --fail-fast stopped the run after step \"totals\" failed");
    assert_eq!(
        steps(&summary(&out)),
        vec![
            step("totals", "error", Some("step \"totals\": failpoint run::step:totals")),
            step("big", "skipped", stopped),
            step("ranked", "skipped", stopped),
            step("roster", "skipped", stopped),
            step("bad_cast", "skipped", stopped),
        ]
    );
    assert_eq!(snapshot(&d.join("out")), before);

    // A failing sink check of an independent branch is reported with the
    // failed step.
    let checked = yaml.replace(
        "  - table: roster\n    url: ${out}/roster/\n",
        "  - table: roster\n    url: ${out}/roster/\n    checks:\n      - row_count: {min: 10}\n",
    );
    std::fs::write(d.join("c.yaml"), checked).unwrap();
    let out = run_failing(
        d,
        "run::step:totals=error",
        &["run", "c.yaml", "--select", "totals+,roster"],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        "2 problems:\n  - step \"totals\": failpoint run::step:totals\n  - sink \"roster\": check row_count(min 10) failed: the table has 4 rows"
    );
    assert_eq!(snapshot(&d.join("out")), before);
}
