//! Checks on sources and sinks through the binary: each kind failing with
//! the README's message (table, check, how many rows fail, a few of them),
//! each passing, and `severity: warn` only logging.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::TimestampMicrosecondArray;
use datafusion::arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use super::common::{crmflow, error_of, read_dir, snapshot, tiny, ts, write_parquet};

/// Ten transactions (nullable columns): amounts null in rows 3 and 7, a
/// quantity of 9 in row 6, a `toys` category in row 5 and a null category
/// in row 8.
fn transactions(dir: &Path) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("transaction_id", DataType::Int64, true),
        Field::new("customer_id", DataType::Int64, true),
        Field::new(
            "transaction_ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("amount", DataType::Float64, true),
        Field::new("quantity", DataType::Int32, true),
        Field::new("product_category", DataType::Utf8, true),
    ]));
    let amount = [
        Some(10.0),
        Some(20.5),
        None,
        Some(40.0),
        Some(50.0),
        Some(60.25),
        None,
        Some(80.0),
        Some(90.0),
        Some(100.0),
    ];
    let quantity = [1, 2, 1, 3, 1, 9, 2, 1, 5, 1];
    let category = [
        Some("books"),
        Some("games"),
        Some("books"),
        Some("games"),
        Some("toys"),
        Some("books"),
        Some("games"),
        None,
        Some("books"),
        Some("games"),
    ];
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(1..=10)) as ArrayRef,
            Arc::new(Int64Array::from_iter_values([1, 1, 1, 2, 2, 2, 3, 3, 4, 4])),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values((1..=10).map(|d| ts(&format!("2026-03-{d:02} 12:00:00"))))
                    .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from(amount.to_vec())),
            Arc::new(Int32Array::from(quantity.to_vec())),
            Arc::new(StringArray::from(category.to_vec())),
        ],
    )
    .unwrap();
    write_parquet(&dir.join("data/tx/part-0.parquet"), &batch);
}

fn pipeline(dir: &Path, source_checks: &str, sink_checks: &str) {
    let yaml = format!(
        "name: checks_test
sources:
  customers: {{url: data/customers/}}
  transactions:
    url: data/tx/
    checks:
{source_checks}steps:
  - name: cust
    sql: SELECT * FROM customers
sinks:
  - table: cust
    url: out/cust/
    checks:
{sink_checks}"
    );
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
}

const PASSING_SOURCE: &str = "      - not_null: [transaction_id, customer_id]
      - range: {column: amount, min: 0, max: 100}
      - accepted_values: {column: product_category, values: [books, games, toys]}
      - columns: {amount: Float64, quantity: Int32, product_category: Utf8, transaction_ts: 'Timestamp(µs, \"UTC\")'}
      - unique: transaction_id
";

const PASSING_SINK: &str = "      - unique: customer_id
      - not_null: [customer_id, signup_date]
      - range: {column: signup_date, min: \"2025-01-01\", max: \"2026-12-31\"}
      - row_count: {min: 4, max: 4}
";

#[test]
fn failing_source_checks_report_counts_and_example_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    transactions(d);
    pipeline(
        d,
        "      - not_null: amount
      - range: {column: quantity, min: 1, max: 5}
      - accepted_values: {column: product_category, values: [books, games]}
      - columns: {amount: Float64, discount: Float64, product_category: Utf8, quantity: Int64}
      - unique: transaction_id
",
        PASSING_SINK,
    );
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        "4 problems:
  - source \"transactions\": check not_null(amount) failed: 2 of 10 rows fail; e.g. {transaction_id: 3, customer_id: 1, transaction_ts: 2026-03-03T12:00:00Z, amount: NULL, quantity: 1, product_category: books}, {transaction_id: 7, customer_id: 3, transaction_ts: 2026-03-07T12:00:00Z, amount: NULL, quantity: 2, product_category: games}
  - source \"transactions\": check range(quantity, min 1, max 5) failed: 1 of 10 rows fail; e.g. {transaction_id: 6, customer_id: 2, transaction_ts: 2026-03-06T12:00:00Z, amount: 60.25, quantity: 9, product_category: books}
  - source \"transactions\": check accepted_values(product_category: \"books\", \"games\") failed: 1 of 10 rows fail; e.g. {transaction_id: 5, customer_id: 2, transaction_ts: 2026-03-05T12:00:00Z, amount: 50.0, quantity: 1, product_category: toys}
  - source \"transactions\": check columns(amount: Float64, discount: Float64, product_category: Utf8, quantity: Int64) failed: column \"discount\" is missing; column \"quantity\" is Int32, expected Int64"
    );
    assert!(!d.join("out").exists(), "a failed source check published");
    // The JSON summary records every check, the passing unique too.
    let summary: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let checks: Vec<(String, bool, u64)> = summary["checks"]
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
        .collect();
    assert_eq!(
        checks,
        vec![
            ("not_null(amount)".to_string(), false, 2),
            ("range(quantity, min 1, max 5)".to_string(), false, 1),
            (
                "accepted_values(product_category: \"books\", \"games\")".to_string(),
                false,
                1
            ),
            (
                "columns(amount: Float64, discount: Float64, product_category: Utf8, quantity: Int64)".to_string(),
                false,
                2
            ),
            ("unique(transaction_id)".to_string(), true, 0),
        ]
    );
}

#[test]
fn failing_sink_checks_run_on_the_staged_output_and_publish_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    transactions(d);
    // A first, passing run publishes; the failing one must leave it.
    pipeline(d, PASSING_SOURCE, PASSING_SINK);
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let before = snapshot(&d.join("out"));
    pipeline(
        d,
        PASSING_SOURCE,
        "      - range: {column: signup_date, min: \"2026-01-01\"}
",
    );
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    // Customer 2 signed up on 2025-06-15; rows of more than six columns end in an ellipsis.
    assert_eq!(
        error_of(&out),
        "sink \"cust\": check range(signup_date, min \"2026-01-01\") failed: 1 of 4 rows fail; e.g. {customer_id: 2, signup_date: 2025-06-15, country: US, age: 32, gender: F, income: 42000.0, …}"
    );
    assert_eq!(snapshot(&d.join("out")), before, "the previous output changed");
    assert_eq!(
        std::fs::read_dir(d.join("out")).unwrap().count(),
        2,
        "staging left behind (the sink and its manifest are there)"
    );
}

#[test]
fn passing_checks_and_warn_checks_let_the_run_publish() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    transactions(d);
    pipeline(
        d,
        &format!(
            "{PASSING_SOURCE}      - not_null: amount
        severity: warn
"
        ),
        &format!(
            "{PASSING_SINK}      - accepted_values: {{column: customer_id, values: [1, 2, 3]}}
        severity: warn
"
        ),
    );
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Published, with every row.
    assert!(d.join("out/cust/_SUCCESS").exists());
    let rows: usize = read_dir(&d.join("out/cust")).iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 4);
    // The warnings are logged with the failure message.
    for msg in [
        "source \"transactions\": check not_null(amount) failed: 2 of 10 rows fail; e.g. {transaction_id: 3, ",
        "sink \"cust\": check accepted_values(customer_id: 1, 2, 3) failed: 1 of 4 rows fail; e.g. {customer_id: 4, ",
    ] {
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(msg))
            .unwrap_or_else(|| panic!("not logged: {msg}\n{}", out.stderr));
        assert!(line.contains("WARN"), "{line}");
        assert!(line.ends_with("(severity warn: the run goes on)"), "{line}");
    }
    let summary: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(summary["status"], "success");
    let checks = summary["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 11);
    let failed: Vec<(&str, &str)> = checks
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| (c["check"].as_str().unwrap(), c["severity"].as_str().unwrap()))
        .collect();
    assert_eq!(
        failed,
        vec![
            ("not_null(amount)", "warn"),
            ("accepted_values(customer_id: 1, 2, 3)", "warn")
        ]
    );
}

/// Customers with a duplicated id (2 appears twice) for `unique`.
fn duplicated_customers(dir: &Path) {
    use super::common::Customer;
    let c = |id, signup| Customer { id, signup, cost: 1.0 };
    super::common::write_crm(
        &dir.join("data"),
        &[
            c(1, "2026-01-01"),
            c(2, "2026-02-01"),
            c(3, "2026-03-01"),
            c(2, "2026-04-01"),
            c(5, "2026-05-01"),
        ],
        &[],
        &[],
    );
    std::fs::write(
        dir.join("p.yaml"),
        "name: unique_test
sources:
  customers:
    url: data/customers/
    checks:
      - unique: KEY
steps:
  - name: cust
    sql: SELECT * FROM customers
sinks:
  - table: cust
    url: out/cust/
",
    )
    .unwrap();
}

#[test]
fn unique_fails_on_a_duplicated_key_and_passes_on_a_unique_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    duplicated_customers(d);
    let yaml = std::fs::read_to_string(d.join("p.yaml")).unwrap();
    std::fs::write(d.join("p.yaml"), yaml.replace("KEY", "customer_id")).unwrap();
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let err = error_of(&out);
    assert!(
        err.starts_with("source \"customers\": check unique(customer_id) failed: "),
        "{err}"
    );
    assert!(err.contains("customer_id: 2"), "the duplicated key is not shown: {err}");
    assert!(!d.join("out").exists());
    // A composite key that is unique passes.
    std::fs::write(d.join("p.yaml"), yaml.replace("KEY", "[customer_id, signup_date]")).unwrap();
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let summary: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(summary["checks"][0]["check"], "unique(customer_id, signup_date)");
    assert_eq!(summary["checks"][0]["passed"], true);
}

#[test]

fn unique_failure_uses_the_documented_format() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    duplicated_customers(d);
    let yaml = std::fs::read_to_string(d.join("p.yaml")).unwrap();
    std::fs::write(d.join("p.yaml"), yaml.replace("KEY", "customer_id")).unwrap();
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        "source \"customers\": check unique(customer_id) failed: 2 of 5 rows fail; e.g. {customer_id: 2, signup_date: 2026-02-01, country: US, age: 32, gender: F, income: 42000.0, …}, {customer_id: 2, signup_date: 2026-04-01, country: US, age: 32, gender: F, income: 42000.0, …}"
    );
}
