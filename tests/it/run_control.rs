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
            // The manifests beside the sinks are their commit records.
            .filter(|n| !n.ends_with(".crmflow-manifest.json"))
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
    // The log says it too (an info event of the step).
    let logged = std::process::Command::new(env!("CARGO_BIN_EXE_crmflow"))
        .args(["--log-format", "json", "run", "p.yaml", "--select", "big", "--defer"])
        .current_dir(d)
        .env("CRMFLOW_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(logged.status.code(), Some(0));
    let events: Vec<Value> = String::from_utf8_lossy(&logged.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["fields"]["step"] == "totals" || e["step"] == "totals")
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let message = events[0]["fields"]["message"]
        .as_str()
        .or(events[0]["message"].as_str());
    assert_eq!(message, Some(format!("step {reason} (not computed: --defer)").as_str()));

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

const BACKFILL: &str = "name: bf
vars:
  out: out
  as_of: \"2026-11-24\"
sources:
  transactions: {url: data/transactions/}
steps:
  - name: totals
    sql: SELECT customer_id, sum(amount) AS total FROM transactions WHERE CAST(transaction_ts AS DATE) <= DATE ${as_of} GROUP BY customer_id
sinks:
  - table: totals
    url: ${out}/${as_of}/totals/
";

const DAYS: [&str; 3] = ["2026-11-23", "2026-11-24", "2026-11-25"];

/// By hand: the 10.00 of customer 2 counts from 2026-11-24, the 999.00 of
/// customer 1 from 2026-11-25.
fn want_totals(day: &str) -> Vec<(i64, f64)> {
    match day {
        "2026-11-23" => vec![(1, 215.5), (2, 300.0)],
        "2026-11-24" => vec![(1, 215.5), (2, 310.0)],
        _ => vec![(1, 1214.5), (2, 310.0)],
    }
}

fn manifest(d: &Path, day: &str) -> Value {
    let path = d.join(format!("out/{day}/.totals.crmflow-manifest.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// (value, status, reason) of each value of a backfill summary.
fn values(s: &Value) -> Vec<(String, String, Option<String>)> {
    s["values"]
        .as_array()
        .unwrap_or_else(|| panic!("not a backfill summary: {s}"))
        .iter()
        .map(|v| {
            (
                v["value"].as_str().unwrap().to_string(),
                v["status"].as_str().unwrap().to_string(),
                v["reason"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn backfill(d: &Path, file: &str, extra: &[&str]) -> Output {
    let mut args = vec!["run", file, "--backfill", "as_of=2026-11-23..2026-11-25"];
    args.extend(extra);
    crmflow(d, &args)
}

#[test]
fn backfill_runs_each_value_once_and_skips_what_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    std::fs::write(d.join("p.yaml"), BACKFILL).unwrap();
    let out = backfill(d, "p.yaml", &["--run-results", "r.json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "a line per value and the summary:\n{}", out.stdout);
    let s = summary(&out);
    let results: Value = serde_json::from_str(&std::fs::read_to_string(d.join("r.json")).unwrap()).unwrap();
    assert_eq!(results, s);
    assert_eq!(s["status"], "success");
    assert_eq!(s["backfill"], "as_of=2026-11-23..2026-11-25");
    assert_eq!((s["succeeded"].as_u64(), s["skipped"].as_u64()), (Some(3), Some(0)));
    let mut run_ids = std::collections::BTreeSet::new();
    let hash = manifest(d, DAYS[0])["pipeline_hash"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 16);
    for (i, day) in DAYS.iter().enumerate() {
        let v = &s["values"][i];
        assert_eq!(
            (v["value"].as_str(), v["status"].as_str()),
            (Some(*day), Some("success"))
        );
        // Each value's own line, then its own run, publish and manifest.
        let line: Value = serde_json::from_str(lines[i]).unwrap();
        assert_eq!(&line, v);
        let run_id = v["run_id"].as_str().unwrap();
        assert_eq!(v["run"]["vars"]["as_of"], *day);
        let m = manifest(d, day);
        assert_eq!(
            (m["run_id"].as_str(), m["vars"]["as_of"].as_str()),
            (Some(run_id), Some(*day))
        );
        assert_eq!(m["pipeline_hash"], hash.as_str());
        assert_eq!(totals(&d.join(format!("out/{day}/totals"))), want_totals(day));
        assert!(
            out.stderr
                .contains(&format!("backfill as_of={day}: success (run {run_id}, ")),
            "{}",
            out.stderr
        );
        run_ids.insert(run_id.to_string());
    }
    assert_eq!(run_ids.len(), 3);

    // Again: every value is already published with this pipeline and vars.
    let before = snapshot(&d.join("out"));
    let out = backfill(d, "p.yaml", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let why = format!(
        "already published: every sink's _SUCCESS holds pipeline hash {hash} and these vars (--force reruns it)"
    );
    let skipped: Vec<_> = DAYS.iter().map(|day| step(day, "skipped", Some(&why))).collect();
    assert_eq!(values(&summary(&out)), skipped);
    assert!(
        out.stderr
            .contains(&format!("backfill as_of=2026-11-24: skipped: {why}\n")),
        "{}",
        out.stderr
    );
    assert_eq!(snapshot(&d.join("out")), before);

    // --force reruns; --every 2d takes the 23rd and the 25th only.
    let out = backfill(d, "p.yaml", &["--force", "--every", "2d"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = summary(&out);
    assert_eq!(
        values(&s),
        vec![step("2026-11-23", "success", None), step("2026-11-25", "success", None)]
    );
    assert_eq!(manifest(d, "2026-11-25")["run_id"], s["values"][1]["run_id"]);
    assert_eq!(
        snapshot(&d.join("out/2026-11-24")),
        before
            .iter()
            .filter_map(|(p, b)| p.strip_prefix("2026-11-24/").map(|p| (p.to_string(), b.clone())))
            .collect::<Vec<_>>()
    );

    // An edited pipeline file is another pipeline: nothing is skipped.
    std::fs::write(d.join("p.yaml"), format!("{BACKFILL}# edited\n")).unwrap();
    let out = backfill(d, "p.yaml", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let statuses: Vec<String> = values(&summary(&out)).into_iter().map(|v| v.1).collect();
    assert_eq!(statuses, vec!["success"; 3]);
    assert_ne!(manifest(d, DAYS[1])["pipeline_hash"], hash.as_str());

    let out = backfill(d, "p.yaml", &["--var", "as_of=2026-01-01"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        error_of(&out),
        "--var as_of and --backfill as_of=2026-11-23..2026-11-25 both set \"as_of\": give one"
    );
    let out = crmflow(d, &["run", "p.yaml", "--backfill", "asof=2026-11-23..2026-11-25"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        error_of(&out),
        "invalid pipeline p.yaml: --var asof: the pipeline defines no var \"asof\"; did you mean \"as_of\"?"
    );
}

/// The backfill pipeline whose 2026-11-24 fails at run time (an integer
/// division by zero for that value only).
fn failing_on_the_24th(d: &Path) {
    let yaml = BACKFILL.replace(
        "sum(amount) AS total",
        "sum(amount) AS total, 1 / (CASE WHEN ${as_of} = '2026-11-24' THEN count(*) - count(*) ELSE 1 END) AS one",
    );
    std::fs::write(d.join("f.yaml"), yaml).unwrap();
}

#[test]
fn backfill_stops_at_the_first_failure_unless_keep_going() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    failing_on_the_24th(d);
    let out = backfill(d, "f.yaml", &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let s = summary(&out);
    let got = values(&s);
    assert_eq!(got[0], step("2026-11-23", "success", None));
    assert_eq!((got[1].0.as_str(), got[1].1.as_str()), ("2026-11-24", "failed"));
    let failure = got[1].2.clone().unwrap();
    let sink = format!("sink \"totals\" ({}/out/2026-11-24/totals/): ", d.display());
    assert!(
        failure.starts_with(&sink) && failure.contains("Divide by zero"),
        "{failure}"
    );
    assert_eq!(
        got[2],
        step(
            "2026-11-25",
            "not_run",
            Some("not run: as_of=2026-11-24 failed (--keep-going runs the rest)")
        )
    );
    assert_eq!(s["status"], "failed");
    assert_eq!(
        error_of(&out),
        format!(
            "backfill: 1 of 3 values failed (as_of=2026-11-24); nothing of a failed value was published; first, as_of=2026-11-24: {failure}"
        )
    );
    assert_eq!(outputs(d), vec!["2026-11-23"]);
    assert_eq!(totals(&d.join("out/2026-11-23/totals")), want_totals("2026-11-23"));

    let out = backfill(d, "f.yaml", &["--keep-going"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let statuses: Vec<String> = values(&summary(&out)).into_iter().map(|v| v.1).collect();
    assert_eq!(statuses, vec!["skipped", "failed", "success"]);
    assert_eq!(outputs(d), vec!["2026-11-23", "2026-11-25"]);
    assert_eq!(totals(&d.join("out/2026-11-25/totals")), want_totals("2026-11-25"));
}

/// Every file below `dir` (relative), empty when it does not exist.
fn files(dir: &Path) -> Vec<String> {
    if !dir.exists() {
        return vec![];
    }
    snapshot(dir).into_iter().map(|(p, _)| p).collect()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Starts crmflow paused at a failpoint.
fn spawn_paused(d: &Path, failpoints: &str, args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_crmflow"))
        .args(args)
        .current_dir(d)
        .env("CRMFLOW_LOG", "warn")
        .env("CRMFLOW_FAILPOINTS", failpoints)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn sigterm_during_a_backfill_value_cleans_its_staging_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    std::fs::write(d.join("p.yaml"), BACKFILL).unwrap();
    let args = ["run", "p.yaml", "--backfill", "as_of=2026-11-23..2026-11-25"];
    let child = spawn_paused(d, "run::staged=sleep(20000)", &args);
    let staged = || {
        files(&d.join("out/.crmflow-staging"))
            .iter()
            .any(|f| f.ends_with(".parquet"))
    };
    wait_for("the first value's staging", staged);
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(143), "{}", String::from_utf8_lossy(&out.stderr));
    let s: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(s["status"], "interrupted");
    let stopped = Some("not run: interrupted while as_of=2026-11-23 ran");
    let got = values(&s);
    assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("2026-11-23", "interrupted"));
    assert_eq!(
        got[1..].to_vec(),
        vec![
            step("2026-11-24", "not_run", stopped),
            step("2026-11-25", "not_run", stopped)
        ]
    );
    // Nothing published, no staging, no lock left.
    assert_eq!(files(&d.join("out")), Vec::<String>::new());
}

#[test]
fn gc_removes_stale_staging_but_never_a_live_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    // A live run, paused with its sink staged and its lock held.
    let live = spawn_paused(d, "run::staged=sleep(8000)", &["run", "p.yaml", "--select", "totals"]);
    let root = d.join(".crmflow-staging");
    wait_for("the live run's staging", || {
        files(&root).iter().any(|f| f.ends_with(".parquet"))
    });
    let lease: Value = serde_json::from_slice(&std::fs::read(d.join("out/.totals.crmflow.lock")).unwrap()).unwrap();
    let live_id = lease["run_id"].as_str().unwrap().to_string();
    let key_dir = std::fs::read_dir(&root).unwrap().next().unwrap().unwrap().path();
    let key = key_dir.file_name().unwrap().to_string_lossy().to_string();
    assert!(key.starts_with("totals-"), "{key}");
    // Planted: a dead run's staging from 2025 and a young one of a dead run.
    let old_id = "20250101T000000Z-deadbeef".to_string();
    let young_id = format!("{}-0badf00d", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
    for id in [&old_id, &young_id] {
        std::fs::create_dir_all(key_dir.join(id).join("segment=1")).unwrap();
        std::fs::write(key_dir.join(id).join("segment=1/part-0.parquet"), b"not parquet").unwrap();
    }
    let line = |id: &str, tail: &str| {
        format!(
            "{} staging {}/{key}/{id}/ (sink \"totals\", run {id}){}",
            tail.split('|').next().unwrap(),
            root.display(),
            tail.split('|').nth(1).unwrap_or("")
        )
    };
    let mut ids = vec![old_id.clone(), live_id.clone(), young_id.clone()];
    ids.sort();
    let expect = |old: &str, young: &str, last: &str| {
        let mut s = String::new();
        for id in &ids {
            let l = if *id == old_id {
                line(id, old)
            } else if *id == live_id {
                line(id, "kept|: the run holds the sink's lock")
            } else {
                line(id, young)
            };
            s.push_str(&l);
            s.push('\n');
        }
        s.push_str(last);
        s.push('\n');
        s
    };

    let out = crmflow(d, &["gc", "p.yaml", "--dry-run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        expect(
            "would remove",
            "kept|: younger than --older-than",
            "gc: would remove 1 staging directories of pipeline \"rc\" (2 kept)"
        )
    );
    assert!(key_dir.join(&old_id).exists());

    let out = crmflow(d, &["gc", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        expect(
            "removed",
            "kept|: younger than --older-than",
            "gc: removed 1 staging directories of pipeline \"rc\" (2 kept)"
        )
    );
    assert!(!key_dir.join(&old_id).exists());
    assert!(key_dir.join(&young_id).exists());

    let out = crmflow(d, &["gc", "p.yaml", "--older-than", "0s"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    ids.retain(|i| *i != old_id);
    let mut want = String::new();
    for id in &ids {
        want.push_str(&if *id == live_id {
            line(id, "kept|: the run holds the sink's lock")
        } else {
            line(id, "removed")
        });
        want.push('\n');
    }
    want.push_str("gc: removed 1 staging directories of pipeline \"rc\" (1 kept)\n");
    assert_eq!(out.stdout, want);
    assert!(!key_dir.join(&young_id).exists());

    // The live run's staging was untouched: it publishes.
    let done = live.wait_with_output().unwrap();
    assert_eq!(done.status.code(), Some(0), "{}", String::from_utf8_lossy(&done.stderr));
    assert_eq!(totals(&d.join("out/totals")), vec![(1, 1214.5), (2, 310.0)]);
    assert!(!root.exists(), "staging left: {:?}", files(&root));
    let out = crmflow(d, &["gc", "p.yaml", "--older-than", "1w"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        error_of(&out),
        "--older-than 1w: expected a number and s, m, h or d (e.g. 30m, 1h, 2d)"
    );
}
