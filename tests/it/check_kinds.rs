//! `relationships`, `freshness`, `expression` and the thresholds of
//! row-level checks (`max_failures`, `max_failure_rate`) through the binary:
//! each failing with its message word for word, each passing, and each
//! mistake in them an exit-2 problem before any row is read.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use super::common::{crmflow, error_of, tiny, ts, write_parquet};

/// Seven transactions of the tiny customers (ids 1-4): customer 9 does not
/// exist (rows 4 and 5), row 6 has no customer; row 5 costs 500 for 5
/// items, row 7 has no amount; the newest is 2026-03-07 12:00 UTC.
fn transactions(dir: &Path) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("transaction_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, true),
        Field::new(
            "transaction_ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("amount", DataType::Float64, true),
        Field::new("quantity", DataType::Int32, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(1..=7)) as ArrayRef,
            Arc::new(Int64Array::from(vec![
                Some(1),
                Some(1),
                Some(2),
                Some(9),
                Some(9),
                None,
                Some(3),
            ])),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values((1..=7).map(|d| ts(&format!("2026-03-0{d} 12:00:00"))))
                    .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from(vec![
                Some(10.0),
                Some(20.0),
                Some(30.0),
                Some(40.0),
                Some(500.0),
                Some(60.0),
                None,
            ])),
            Arc::new(Int32Array::from(vec![1, 2, 3, 4, 5, 6, 7])),
        ],
    )
    .unwrap();
    write_parquet(&dir.join("data/tx/part-0.parquet"), &batch);
}

/// A pipeline whose `transactions` source has `checks` (YAML list items,
/// indented six spaces).
fn run_with(dir: &Path, checks: &str, args: &[&str]) -> super::common::Output {
    let yaml = format!(
        "name: check_kinds
vars:
  as_of: \"2026-03-08\"
sources:
  transactions:
    url: data/tx/
    checks:
{checks}  customers: {{url: data/customers/}}
steps:
  - name: spend
    sql: SELECT customer_id, sum(amount) AS total FROM transactions GROUP BY customer_id
sinks:
  - table: spend
    url: out/spend/
"
    );
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
    let mut all = vec!["run", "p.yaml"];
    all.extend_from_slice(args);
    crmflow(dir, &all)
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    tiny(&dir.path().join("data"));
    transactions(dir.path());
    dir
}

/// (check, passed, failing) of every check in the run's summary.
fn outcomes(stdout: &str) -> Vec<(String, bool, u64)> {
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    summary["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_string(),
                c["passed"].as_bool().unwrap(),
                c["failing"].as_u64().unwrap(),
            )
        })
        .collect()
}

const ORPHANS: &str = "{transaction_id: 4, customer_id: 9, transaction_ts: 2026-03-04T12:00:00Z, amount: 40.0, quantity: 4}, {transaction_id: 5, customer_id: 9, transaction_ts: 2026-03-05T12:00:00Z, amount: 500.0, quantity: 5}";

#[test]
fn relationships_fail_on_values_missing_from_the_other_table_and_nulls_pass() {
    let dir = setup();
    let d = dir.path();
    let out = run_with(
        d,
        "      - relationships: {column: customer_id, to: customers.customer_id}\n",
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        format!(
            "source \"transactions\": check relationships(customer_id -> customers.customer_id) failed: 2 of 7 rows fail; e.g. {ORPHANS}"
        )
    );
    assert!(!d.join("out").exists(), "a failed check published");
}

#[test]
fn thresholds_let_a_few_failing_rows_pass() {
    let dir = setup();
    let d = dir.path();
    // Two orphans of seven rows: within max_failures 2 and a rate of 0.3.
    let out = run_with(
        d,
        "      - relationships: {column: customer_id, to: customers.customer_id}
        max_failures: 2
      - relationships: {column: customer_id, to: customers.customer_id}
        max_failure_rate: 0.3
      - not_null: amount
        max_failures: 1
",
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        outcomes(&out.stdout),
        vec![
            (
                "relationships(customer_id -> customers.customer_id)".to_string(),
                true,
                2
            ),
            (
                "relationships(customer_id -> customers.customer_id)".to_string(),
                true,
                2
            ),
            ("not_null(amount)".to_string(), true, 1),
        ]
    );
    assert!(d.join("out/spend/_SUCCESS").exists());
    // Past them: the rate is 2/7 = 0.29 > 0.2, and 1 null > 0 allowed.
    let out = run_with(
        d,
        "      - relationships: {column: customer_id, to: customers.customer_id}
        max_failure_rate: 0.2
      - not_null: amount
        max_failures: 0
      - relationships: {column: customer_id, to: customers.customer_id}
        max_failures: 1
        max_failure_rate: 0.5
",
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        format!(
            "3 problems:
  - source \"transactions\": check relationships(customer_id -> customers.customer_id) failed: 2 of 7 rows fail, more than max_failure_rate 0.2 allows; e.g. {ORPHANS}
  - source \"transactions\": check not_null(amount) failed: 1 of 7 rows fail, more than max_failures 0 allows; e.g. {{transaction_id: 7, customer_id: 3, transaction_ts: 2026-03-07T12:00:00Z, amount: NULL, quantity: 7}}
  - source \"transactions\": check relationships(customer_id -> customers.customer_id) failed: 2 of 7 rows fail, more than max_failures 1, max_failure_rate 0.5 allows; e.g. {ORPHANS}"
        )
    );
}

#[test]
fn freshness_compares_the_newest_value_with_as_of_minus_max_age() {
    let dir = setup();
    let d = dir.path();
    let checks = "      - freshness: {column: transaction_ts, max_age: \"2 days\", as_of: \"${as_of}\"}\n";
    // Newest 2026-03-07 12:00; limit 2026-03-06 00:00.
    let out = run_with(d, checks, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        outcomes(&out.stdout),
        vec![(
            "freshness(transaction_ts, max_age 2 days, as_of 2026-03-08)".to_string(),
            true,
            0
        )]
    );
    let out = run_with(d, checks, &["--var", "as_of=2026-03-20"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        "source \"transactions\": check freshness(transaction_ts, max_age 2 days, as_of 2026-03-20) failed: the newest transaction_ts is 2026-03-07T12:00:00Z, more than 2 days before 2026-03-20"
    );
    // Exactly at the limit is fresh: 2026-03-07 12:00 is 36 hours before 03-09 00:00.
    let out = run_with(
        d,
        "      - freshness: {column: transaction_ts, max_age: \"36 hours\", as_of: \"2026-03-09\"}\n",
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn expression_fails_where_false_and_passes_where_null() {
    let dir = setup();
    let d = dir.path();
    let out = run_with(d, "      - expression: \"amount <= 10 * quantity\"\n", &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    // Row 7 (amount NULL) passes, as in a SQL CHECK constraint.
    assert_eq!(
        error_of(&out),
        "source \"transactions\": check expression(amount <= 10 * quantity) failed: 1 of 7 rows fail; e.g. {transaction_id: 5, customer_id: 9, transaction_ts: 2026-03-05T12:00:00Z, amount: 500.0, quantity: 5}"
    );
    let out = run_with(d, "      - expression: \"amount <= 100 * quantity\"\n", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn mistakes_in_the_new_checks_are_problems_before_any_row_is_read() {
    let dir = setup();
    let d = dir.path();
    let out = run_with(
        d,
        "      - relationships: {column: customer_id, to: custmers.customer_id}
      - relationships: {column: customer_id, to: customers.id}
      - expression: \"amount * 2\"
      - freshness: {column: amount, max_age: \"2 days\"}
      - freshness: {column: transaction_ts, max_age: \"two days\"}
",
        &[],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        "invalid pipeline p.yaml: 5 problems:
  - source \"transactions\": check expression(amount * 2) is Float64, not a boolean
  - source \"transactions\": check freshness(amount, max_age 2 days, as_of now) needs a date or timestamp column; \"amount\" is Float64
  - source \"transactions\": check freshness(transaction_ts, max_age two days, as_of now): max_age must be an SQL interval (\"2 days\") and as_of a date or timestamp: Arrow error: Parser error: Invalid input syntax for type interval: \"two days\"
  - source \"transactions\": check relationships(customer_id -> custmers.customer_id) refers to table \"custmers\", which is not a source
  - source \"transactions\": check relationships(customer_id -> customers.id) names column \"id\", which is not in table \"customers\" (columns: customer_id, signup_date, country, age, gender, income, acquisition_cost, channel)"
    );
    assert!(!d.join("out").exists());
    for (checks, message) in [
        (
            "      - row_count: {min: 1}\n        max_failures: 3\n",
            "row_count: max_failures and max_failure_rate apply to row-level checks (unique, not_null, range, accepted_values, relationships, expression)",
        ),
        (
            "      - not_null: amount\n        max_failure_rate: 5\n",
            "max_failure_rate 5 is not a fraction between 0 and 1",
        ),
        (
            "      - relationships: {column: customer_id, to: customers}\n",
            "relationships: to must be TABLE.COLUMN (e.g. customers.customer_id), not \"customers\"",
        ),
        (
            "      - expression: \"amount < ${as_of}\"\n",
            "source \"transactions\": check expression(amount < ${as_of}): vars are not applied in an expression (it is SQL, where a var would be text)",
        ),
    ] {
        let out = run_with(d, checks, &[]);
        assert_eq!(out.code, 2, "{checks}: {}", out.stderr);
        let err = error_of(&out);
        assert!(err.contains(message), "{checks}: {err}");
    }
}
