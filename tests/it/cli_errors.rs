//! Every config mistake is an error before anything is read or written:
//! exit code 2 and a message naming the file, the step/sink/source and the
//! offending key or name (with the YAML line where the parser gives one).
//! One YAML per mistake in `tests/fixtures/invalid/`.

use super::common::{crmflow, error_of};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/invalid/{name}.yaml", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `validate` and `run` on the fixture and checks both fail the same
/// way, with exit code 2, without creating any output.
fn assert_invalid(name: &str, expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = fixture(name);
    let expected = expected.replace("{file}", &file);
    for cmd in ["validate", "run", "plan"] {
        let out = crmflow(dir.path(), &[cmd, &file]);
        assert_eq!(out.code, 2, "{cmd} {name}: {}", out.stderr);
        assert_eq!(error_of(&out), expected, "{cmd} {name}");
        assert!(out.stdout.is_empty(), "{cmd} {name} printed {}", out.stdout);
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "{name}: something was written"
    );
}

#[test]
fn unknown_key_names_line_and_key() {
    assert_invalid(
        "unknown_key",
        "invalid pipeline {file}: line 6 column 5: unknown field `sqll`, expected one of name, sql, clv, segment, predict, rfm, cache, vars
 --> {file}:6:5
  |
4 | steps:
5 |   - name: features
6 |     sqll: SELECT * FROM customers
  |     ^ unknown field `sqll`, expected one of name, sql, clv, segment, predict, rfm, cache, vars",
    );
}

#[test]
fn duplicate_source_name() {
    assert_invalid(
        "duplicate_source",
        "invalid pipeline {file}: line 4 column 3: duplicate mapping key: customers
 --> {file}:4:3
  |
2 | sources:
3 |   customers: {url: data/customers/}
4 |   customers: {url: data/other/}
  |   ^ duplicate mapping key: customers",
    );
}

#[test]
fn duplicate_step_name() {
    assert_invalid(
        "duplicate_step",
        "invalid pipeline {file}: step \"features\" (line 7): the name is already used by step \"features\" (line 5)",
    );
}

#[test]
fn unknown_reference_with_suggestion() {
    assert_invalid(
        "unknown_reference",
        "invalid pipeline {file}: step \"scores\" (line 7): table \"featurs\" is neither a source nor a step; did you mean \"features\"?",
    );
}

#[test]
fn cycle_is_spelled_out() {
    assert_invalid(
        "cycle",
        "invalid pipeline {file}: steps form a cycle: \"a\" reads \"c\", which reads \"b\", which reads \"a\"",
    );
}

#[test]
fn unresolved_var() {
    assert_invalid(
        "unresolved_var",
        "invalid pipeline {file}: source \"customers\": url: \"${dta}\" is not defined (define it under vars: or pass --var dta=...)",
    );
}

#[test]
fn step_with_two_kinds() {
    assert_invalid(
        "two_kinds",
        "invalid pipeline {file}: line 5 column 5: step \"seg\": expected exactly one of sql, clv, segment, predict, rfm; found sql, segment
 --> {file}:5:5
  |
3 |   customers: {url: data/customers/}
4 | steps:
5 |   - name: seg
  |     ^ step \"seg\": expected exactly one of sql, clv, segment, predict, rfm; found sql, segment
6 |     sql: SELECT * FROM customers
7 |     segment:
  |",
    );
}

#[test]
fn ballista_with_a_url_needs_a_scratch_directory() {
    assert_invalid(
        "ballista",
        "invalid pipeline {file}: engine: kind \"ballista\" with a url needs scratch: a directory every executor can write and the client can read (e.g. s3://bucket/tmp/crmflow/), where a run keeps the tables it reads more than once",
    );
}

#[test]
fn ballista_cluster_cannot_use_local_disk_unless_shared() {
    let why = "is on this machine's disk, which the executors of a remote Ballista cluster do not see; use an object store (s3://, gs://, az://), or a directory mounted at the same path on the client and every executor, listed in engine.shared_paths";
    assert_invalid(
        "ballista_local_disk",
        &format!(
            "invalid pipeline {{file}}: 2 problems:\n  - source \"customers\": url: /srv/crm/customers/ {why}\n  - sink \"customers\" (line 9): url: /srv/crm/out/customers/ {why}"
        ),
    );
}

#[test]
fn sink_of_an_unknown_table() {
    assert_invalid(
        "unknown_sink_table",
        "invalid pipeline {file}: sink \"customer\" (line 5): table \"customer\" is neither a source nor a step; did you mean \"customers\"?",
    );
}

#[test]
fn var_inside_sql_quotes() {
    assert_invalid(
        "var_in_quotes",
        "invalid pipeline {file}: step \"recent\" (line 7): ${as_of} is inside a quoted string or identifier; write it bare, it becomes a literal (e.g. DATE ${as_of}, not '${as_of}')",
    );
}

#[test]
fn bad_k_shape() {
    assert_invalid(
        "bad_k",
        "invalid pipeline {file}: line 9 column 10: k: a number of segments (k: 5) or a range to choose from by silhouette (k: {min: 2, max: 10})
 --> {file}:9:10
  |
7 |       input: customers
8 |       features: [age]
9 |       k: [2, 3]
  |          ^ k: a number of segments (k: 5) or a range to choose from by silhouette (k: {min: 2, max: 10})",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    assert_invalid(
        "many_problems",
        "invalid pipeline {file}: 5 problems:
  - source \"customers\": url: \"${data}\" is not defined (define it under vars: or pass --var data=...)
  - step \"seg\" (line 7): segment.features is empty
  - step \"seg\" (line 7): segment.k range needs 2 <= min <= max (got min 5, max 2)
  - step \"scores\" (line 5): table \"featurs\" is neither a source nor a step
  - sink \"scores\" (line 13): mode overwrite_partitions needs partition_by",
    );
}

#[test]
fn unknown_var_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = fixture("../../../pipelines/crm_nightly");
    let out = crmflow(dir.path(), &["validate", &file, "--var", "asof=2026-01-01"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        format!("invalid pipeline {file}: --var asof: the pipeline defines no var \"asof\"; did you mean \"as_of\"?")
    );
}

#[test]
fn missing_pipeline_file_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = crmflow(dir.path(), &["run", "nope.yaml"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        error_of(&out),
        "invalid pipeline nope.yaml: cannot read the file: No such file or directory (os error 2)"
    );
    let out = crmflow(dir.path(), &["run"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("required arguments were not provided"),
        "{}",
        out.stderr
    );
    let out = crmflow(dir.path(), &["run", "x.yaml", "--var", "novalue"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("\"novalue\" is not KEY=VALUE"), "{}", out.stderr);
}

#[test]
fn delta_options_are_checked() {
    assert_invalid(
        "delta_options",
        "invalid pipeline {file}: 5 problems:
  - source \"customers\": version and timestamp apply to format: delta only
  - source \"old\": timestamp \"yesterday\" is not an RFC 3339 time (e.g. 2026-11-24T00:00:00Z)
  - source \"past\": version must be 0 or more, got -1
  - source \"scores\": give version or timestamp, not both
  - sink \"ids\" (line 13): format: delta on S3 commits with a conditional put (If-None-Match); remove aws_conditional_put: disabled",
    );
}
