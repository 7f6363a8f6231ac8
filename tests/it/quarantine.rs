//! `quarantine:` on a source, through the binary: the rows each row-level
//! check rejects land in the quarantine with their check's label and the
//! run id, every step reads the source without them, a check past its
//! threshold fails the run with nothing published (the quarantine neither),
//! a rerun replaces the quarantine, and the run results count per check.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use super::common::{crmflow, error_of, read_dir, snapshot, tiny, write_parquet};

/// Ten transactions, written by hand; customers 1-4 exist (`tiny`).
/// Row by row (amounts tell them apart):
///  1  id 1, customer 1, 10.0,  qty 1, books   clean
///  2  id 2, customer 1, 20.0,  qty 2, games   clean
///  3  id 3, customer 1, NULL,  qty 1, books   not_null(amount)
///  4  id 4, customer 2, 400.0, qty 3, games   expression (400 > 100 * 3)
///  5  id 5, customer 2, 50.0,  qty 1, toys    accepted_values
///  6  id 6, customer 2, 60.0,  qty 9, books   range(quantity), and the expression holds (60 <= 900)
///  7  id 7, customer 3, 70.0,  qty 2, NULL    clean (a null category passes)
///  8  id 8, customer 6, 80.0,  qty 1, games   relationships (no customer 6)
///  9  id 9, customer 4, 90.0,  qty 5, books   unique(transaction_id) (id 9 twice)
/// 10  id 9, customer 5, 100.0, qty 1, games   unique(transaction_id) and relationships (no customer 5)
fn transactions(dir: &Path, amount_3: Option<f64>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("transaction_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new("amount", DataType::Float64, true),
        Field::new("quantity", DataType::Int32, false),
        Field::new("product_category", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 9])) as ArrayRef,
            Arc::new(Int64Array::from(vec![1, 1, 1, 2, 2, 2, 3, 6, 4, 5])),
            Arc::new(Float64Array::from(vec![
                Some(10.0),
                Some(20.0),
                amount_3,
                Some(400.0),
                Some(50.0),
                Some(60.0),
                Some(70.0),
                Some(80.0),
                Some(90.0),
                Some(100.0),
            ])),
            Arc::new(Int32Array::from(vec![1, 2, 1, 3, 1, 9, 2, 1, 5, 1])),
            Arc::new(StringArray::from(vec![
                Some("books"),
                Some("games"),
                Some("books"),
                Some("games"),
                Some("toys"),
                Some("books"),
                None,
                Some("games"),
                Some("books"),
                Some("games"),
            ])),
        ],
    )
    .unwrap();
    write_parquet(&dir.join("data/tx/part-0.parquet"), &batch);
}

/// The pipeline: the transactions quarantined by six row-level checks
/// (`unique_threshold` on the `unique` check), a per-customer step and the
/// transactions as read downstream.
fn pipeline(dir: &Path, unique_threshold: &str) {
    let yaml = format!(
        "name: quarantine_test
sources:
  customers: {{url: data/customers/}}
  transactions:
    url: data/tx/
    quarantine: out/quarantine/transactions/
    checks:
      - not_null: amount
        max_failures: 2
      - range: {{column: quantity, min: 1, max: 5}}
        max_failures: 2
      - accepted_values: {{column: product_category, values: [books, games]}}
        max_failures: 2
      - unique: transaction_id
        {unique_threshold}
      - relationships: {{column: customer_id, to: customers.customer_id}}
        max_failures: 2
      - expression: \"amount <= 100 * quantity\"
        max_failure_rate: 0.2
      - row_count: {{min: 10, max: 10}}
steps:
  - name: per_customer
    sql: SELECT customer_id, count(*) AS n, sum(amount) AS total FROM transactions GROUP BY customer_id
  - name: clean
    sql: SELECT * FROM transactions
sinks:
  - table: per_customer
    url: out/per_customer/
  - table: clean
    url: out/clean/
"
    );
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
}

fn fixture(amount_3: Option<f64>, unique_threshold: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    tiny(&dir.path().join("data"));
    transactions(dir.path(), amount_3);
    pipeline(dir.path(), unique_threshold);
    dir
}

fn strings(batches: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for b in batches {
        let a = b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
        let a = a.as_any().downcast_ref::<StringArray>().unwrap();
        out.extend(a.iter().map(|v| v.map(str::to_string)));
    }
    out
}

fn i64s(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for b in batches {
        let a = b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
        let a = a.as_any().downcast_ref::<Int64Array>().unwrap();
        out.extend(a.iter().map(Option::unwrap));
    }
    out
}

/// (transaction_id, amount, _check, _run_id) of every quarantined row, sorted.
fn quarantined(dir: &Path) -> Vec<(i64, Option<f64>, String, String)> {
    let b = read_dir(&dir.join("out/quarantine/transactions"));
    let amounts = super::common::f64s(&b, "amount");
    let mut rows: Vec<_> = i64s(&b, "transaction_id")
        .into_iter()
        .zip(amounts)
        .zip(strings(&b, "_check").into_iter().zip(strings(&b, "_run_id")))
        .map(|((id, a), (c, r))| (id, a, c.unwrap(), r.unwrap()))
        .collect();
    // By id, then amount (the two rows with id 9 differ there), then check.
    rows.sort_by(|x, y| {
        x.0.cmp(&y.0)
            .then(x.1.unwrap_or(-1.0).total_cmp(&y.1.unwrap_or(-1.0)))
            .then(x.2.cmp(&y.2))
    });
    rows
}

const NOT_NULL: &str = "not_null(amount)";
const RANGE: &str = "range(quantity, min 1, max 5)";
const ACCEPTED: &str = "accepted_values(product_category: \"books\", \"games\")";
const UNIQUE: &str = "unique(transaction_id)";
const RELATIONSHIPS: &str = "relationships(customer_id -> customers.customer_id)";
const EXPRESSION: &str = "expression(amount <= 100 * quantity)";

fn summary(out: &super::common::Output) -> serde_json::Value {
    serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn failing_rows_go_to_the_quarantine_once_per_check_and_not_downstream() {
    let dir = fixture(None, "max_failures: 2");
    let d = dir.path();
    let out = crmflow(d, &["run", "p.yaml", "--run-results", "results.json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = summary(&out);
    let run_id = s["run_id"].as_str().unwrap().to_string();
    let q = |id: i64, amount: Option<f64>, check: &str| (id, amount, check.to_string(), run_id.clone());
    assert_eq!(
        quarantined(d),
        vec![
            q(3, None, NOT_NULL),
            q(4, Some(400.0), EXPRESSION),
            q(5, Some(50.0), ACCEPTED),
            q(6, Some(60.0), RANGE),
            q(8, Some(80.0), RELATIONSHIPS),
            q(9, Some(90.0), UNIQUE),
            q(9, Some(100.0), RELATIONSHIPS),
            q(9, Some(100.0), UNIQUE),
        ]
    );
    // The quarantine has the source's columns, then _check and _run_id.
    let b = read_dir(&d.join("out/quarantine/transactions"));
    let names: Vec<String> = b[0].schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(
        names,
        [
            "transaction_id",
            "customer_id",
            "amount",
            "quantity",
            "product_category",
            "_check",
            "_run_id"
        ]
    );
    assert!(d.join("out/quarantine/transactions/_SUCCESS").is_file());

    // Downstream sees rows 1, 2 and 7 only.
    let clean = read_dir(&d.join("out/clean"));
    let mut amounts: Vec<f64> = super::common::f64s(&clean, "amount")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    amounts.sort_by(f64::total_cmp);
    assert_eq!(amounts, vec![10.0, 20.0, 70.0]);
    let per = read_dir(&d.join("out/per_customer"));
    let mut per: Vec<(i64, i64, f64)> = i64s(&per, "customer_id")
        .into_iter()
        .zip(i64s(&per, "n"))
        .zip(super::common::f64s(&per, "total"))
        .map(|((c, n), t)| (c, n, t.unwrap()))
        .collect();
    per.sort_by_key(|r| r.0);
    assert_eq!(per, vec![(1, 2, 30.0), (3, 1, 70.0)]);

    // Run results: the quarantined rows per check, and the quarantine as a
    // published sink.
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("results.json")).unwrap()).unwrap();
    let checks: Vec<(String, bool, u64, Option<u64>)> = results["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["on"] == "source \"transactions\"")
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_string(),
                c["passed"].as_bool().unwrap(),
                c["failing"].as_u64().unwrap(),
                c["quarantined"].as_u64(),
            )
        })
        .collect();
    let c = |name: &str, n: u64| (name.to_string(), true, n, Some(n));
    assert_eq!(
        checks,
        vec![
            c(NOT_NULL, 1),
            c(RANGE, 1),
            c(ACCEPTED, 1),
            c(UNIQUE, 2),
            c(RELATIONSHIPS, 2),
            c(EXPRESSION, 1),
            ("row_count(min 10, max 10)".to_string(), true, 0, None),
        ]
    );
    let sink = results["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["table"] == "transactions_quarantine")
        .unwrap();
    assert_eq!(sink["rows"], 8);
    assert_eq!(sink["mode"], "overwrite");
    let mut published: Vec<&str> = results["published"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    published.sort();
    assert_eq!(published, ["clean", "per_customer", "transactions_quarantine"]);
    // The summary on stderr and the log say what went where.
    let want = format!(
        "  quarantined from source \"transactions\": {NOT_NULL} 1, {RANGE} 1, {ACCEPTED} 1, {UNIQUE} 2, {RELATIONSHIPS} 2, {EXPRESSION} 1\n"
    );
    assert!(out.stderr.contains(&want), "{}", out.stderr);
    let qdir = d.join("out/quarantine/transactions/");
    let logged = format!(
        "source \"transactions\": 2 rows failing check {UNIQUE} go to the quarantine at {}",
        qdir.display()
    );
    assert!(out.stderr.contains(&logged), "{}", out.stderr);
}

#[test]
fn past_the_threshold_the_run_fails_and_publishes_nothing_not_even_the_quarantine() {
    // A first run fails: no output at all, no quarantine directory.
    let dir = fixture(None, "max_failures: 1");
    let d = dir.path();
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        "source \"transactions\": check unique(transaction_id) failed: 2 of 10 rows fail, more than max_failures 1 allows; e.g. {transaction_id: 9, customer_id: 4, amount: 90.0, quantity: 5, product_category: books}, {transaction_id: 9, customer_id: 5, amount: 100.0, quantity: 1, product_category: games}"
    );
    assert!(
        !d.join("out").exists(),
        "{:?}",
        snapshot(d).iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let s = summary(&out);
    assert_eq!(s["status"], "failed");
    assert_eq!(s["published"], serde_json::json!([]));

    // After a good run, a failing one leaves every output as it was,
    // quarantine included.
    pipeline(d, "max_failures: 2");
    assert_eq!(crmflow(d, &["run", "p.yaml"]).code, 0);
    let before = snapshot(&d.join("out"));
    assert!(before.iter().any(|f| f.0 == "quarantine/transactions/_SUCCESS"));
    pipeline(d, "max_failures: 1");
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(snapshot(&d.join("out")), before);
}

#[test]
fn without_a_threshold_a_quarantine_takes_up_to_one_percent() {
    let dir = fixture(None, "");
    let d = dir.path();
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        "source \"transactions\": check unique(transaction_id) failed: 2 of 10 rows fail, more than max_failure_rate 0.01 allows; e.g. {transaction_id: 9, customer_id: 4, amount: 90.0, quantity: 5, product_category: books}, {transaction_id: 9, customer_id: 5, amount: 100.0, quantity: 1, product_category: games}"
    );
    assert!(!d.join("out").exists());
}

#[test]
fn a_rerun_replaces_the_quarantine() {
    let dir = fixture(None, "max_failures: 2");
    let d = dir.path();
    assert_eq!(crmflow(d, &["run", "p.yaml"]).code, 0);
    assert_eq!(quarantined(d).len(), 8);
    // Row 3 fixed upstream: the next run's quarantine holds seven rows, all
    // of that run, and row 3 goes downstream.
    transactions(d, Some(30.0));
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run_id = summary(&out)["run_id"].as_str().unwrap().to_string();
    let q = quarantined(d);
    assert_eq!(
        q.iter().map(|r| (r.0, r.2.as_str())).collect::<Vec<_>>(),
        vec![
            (4, EXPRESSION),
            (5, ACCEPTED),
            (6, RANGE),
            (8, RELATIONSHIPS),
            (9, UNIQUE),
            (9, RELATIONSHIPS),
            (9, UNIQUE)
        ]
    );
    assert!(q.iter().all(|r| r.3 == run_id));
    let mut amounts: Vec<f64> = super::common::f64s(&read_dir(&d.join("out/clean")), "amount")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    amounts.sort_by(f64::total_cmp);
    assert_eq!(amounts, vec![10.0, 20.0, 30.0, 70.0]);
}

#[test]
fn quarantine_mistakes_are_exit_2_problems() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let yaml = "name: q
sources:
  customers:
    url: data/customers/
    quarantine: data/customers/bad/
    checks:
      - row_count: {min: 1}
  transactions:
    url: data/transactions/
    quarantine: out/a/
    checks:
      - not_null: amount
steps:
  - name: customers_quarantine
    sql: SELECT * FROM customers
sinks:
  - table: customers_quarantine
    url: out/a/x/
";
    std::fs::write(d.join("p.yaml"), yaml).unwrap();
    let out = crmflow(d, &["validate", "p.yaml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let root = d.display();
    assert_eq!(
        error_of(&out),
        format!(
            "invalid pipeline p.yaml: 4 problems:
  - source \"customers\": quarantine needs a row-level check (unique, not_null, range, accepted_values, relationships, expression) whose failing rows it takes
  - source \"customers\": quarantine: its table \"customers_quarantine\" clashes with step \"customers_quarantine\"
  - source \"customers\": quarantine {root}/data/customers/bad/ overlaps source \"customers\" ({root}/data/customers/); a quarantine must not replace a source
  - source \"transactions\": quarantine {root}/out/a/ overlaps sink \"customers_quarantine\" ({root}/out/a/x/)"
        )
    );
}

#[test]
fn a_source_without_failing_rows_publishes_an_empty_quarantine() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let yaml = "name: q
sources:
  transactions:
    url: data/transactions/
    quarantine: out/quarantine/
    checks:
      - not_null: amount
steps:
  - name: n
    sql: SELECT count(*) AS n FROM transactions
sinks:
  - table: n
    url: out/n/
";
    std::fs::write(d.join("p.yaml"), yaml).unwrap();
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = summary(&out);
    assert_eq!(s["checks"][0]["quarantined"], 0);
    assert_eq!(s["published"], serde_json::json!(["n", "transactions_quarantine"]));
    assert!(d.join("out/quarantine/_SUCCESS").is_file());
    let rows: usize = read_dir(&d.join("out/quarantine")).iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 0);
    assert_eq!(i64s(&read_dir(&d.join("out/n")), "n"), vec![8]);
}
