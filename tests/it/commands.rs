//! `plan`, `validate --check-storage` and `run --run-results` through the
//! binary: what they print and write, word for word.

use std::path::Path;

use super::common::{crmflow, tiny};

const SMALL: &str = "name: small
vars:
  min_total: 100
sources:
  customers: {url: data/customers/}
  transactions: {url: data/transactions/}
steps:
  - name: totals
    sql: |
      SELECT c.customer_id, c.country, sum(t.amount) AS total
      FROM customers c JOIN transactions t USING (customer_id)
      GROUP BY c.customer_id, c.country
  - name: rich
    sql: SELECT customer_id, total FROM totals WHERE total > ${min_total}
  - name: by_country
    sql: SELECT country, count(*) AS n FROM totals GROUP BY country
sinks:
  - table: rich
    url: out/rich/
  - table: by_country
    url: out/by_country/
    partition_by: [country]
    mode: overwrite_partitions
";

const PLAN: &str = r#"pipeline small (p.yaml)

sources:
  customers <- <dir>/data/customers/
  transactions <- <dir>/data/transactions/

steps, in run order:
  1. totals [sql, cached] <- customers, transactions
  2. rich [sql] <- totals
  3. by_country [sql] <- totals

sinks:
  rich -> <dir>/out/rich/ (overwrite)
  by_country -> <dir>/out/by_country/ (overwrite_partitions partitioned by country)

table customers (source):
  customer_id: Int64 not null
  signup_date: Date32 not null
  country: Utf8View not null
  age: Int32 not null
  gender: Utf8View not null
  income: Float64 not null
  acquisition_cost: Float64 not null
  channel: Utf8View not null

table transactions (source):
  transaction_id: Int64 not null
  customer_id: Int64 not null
  transaction_ts: Timestamp(µs, "UTC") not null
  amount: Float64 not null
  quantity: Int32 not null
  product_category: Utf8View not null

table totals (sql):
  customer_id: Int64 not null
  country: Utf8View not null
  total: Float64
  logical plan:
    Projection: c.customer_id, c.country, sum(t.amount) AS total
      Aggregate: groupBy=[[c.customer_id, c.country]], aggr=[[sum(t.amount)]]
        Inner Join: Using c.customer_id = t.customer_id
          SubqueryAlias: c
            TableScan: customers
          SubqueryAlias: t
            TableScan: transactions

table rich (sql):
  customer_id: Int64 not null
  total: Float64
  logical plan:
    Projection: totals.customer_id, totals.total
      Filter: totals.total > Int64(100)
        SubqueryAlias: totals
          Projection: c.customer_id, c.country, sum(t.amount) AS total
            Aggregate: groupBy=[[c.customer_id, c.country]], aggr=[[sum(t.amount)]]
              Inner Join: Using c.customer_id = t.customer_id
                SubqueryAlias: c
                  TableScan: customers
                SubqueryAlias: t
                  TableScan: transactions

table by_country (sql):
  country: Utf8View not null
  n: Int64 not null
  logical plan:
    Projection: totals.country, count(Int64(1)) AS count(*) AS n
      Aggregate: groupBy=[[totals.country]], aggr=[[count(Int64(1))]]
        SubqueryAlias: totals
          Projection: c.customer_id, c.country, sum(t.amount) AS total
            Aggregate: groupBy=[[c.customer_id, c.country]], aggr=[[sum(t.amount)]]
              Inner Join: Using c.customer_id = t.customer_id
                SubqueryAlias: c
                  TableScan: customers
                SubqueryAlias: t
                  TableScan: transactions
"#;

/// Every entry below `dir`, relative, sorted (to see leftovers).
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn plan_prints_the_graph_schemas_and_logical_plans() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    std::fs::write(d.join("p.yaml"), SMALL).unwrap();
    let out = crmflow(d, &["plan", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let root = d.canonicalize().unwrap().display().to_string();
    let text = out.stdout.replace(&root, "<dir>");
    // The var is a literal in the plan (Int64(100)); `totals` is read twice,
    // so it is cached; the step graph is in run order.
    assert_eq!(text, PLAN);
    assert!(!d.join("out").exists(), "plan wrote something");
}

#[test]
fn validate_check_storage_probes_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    std::fs::write(d.join("p.yaml"), SMALL).unwrap();
    // One sink's parent exists, the other's does not (the probe goes to the
    // nearest existing directory).
    std::fs::create_dir_all(d.join("out")).unwrap();
    let yaml = SMALL.replace("url: out/by_country/", "url: deep/er/by_country/");
    std::fs::write(d.join("p.yaml"), yaml).unwrap();
    let before = tree(d);
    let out = crmflow(d, &["validate", "--check-storage", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "p.yaml: pipeline \"small\" is valid: 2 sources, 3 steps, 2 sinks, 5 tables planned\n"
    );
    assert_eq!(tree(d), before, "validate --check-storage left something behind");
}

#[test]
fn run_results_file_holds_the_last_stdout_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    std::fs::write(d.join("p.yaml"), SMALL).unwrap();
    std::fs::create_dir_all(d.join("results")).unwrap();
    for (yaml, code, status) in [
        (SMALL.to_string(), 0, "success"),
        (
            SMALL.replace("total > ${min_total}", "customer_id / (customer_id - customer_id) > 1"),
            1,
            "failed",
        ),
    ] {
        std::fs::write(d.join("p.yaml"), yaml).unwrap();
        let out = crmflow(d, &["run", "p.yaml", "--run-results", "results/run.json"]);
        assert_eq!(out.code, code, "{}", out.stderr);
        let last = out.stdout.lines().last().unwrap();
        let written = std::fs::read_to_string(d.join("results/run.json")).unwrap();
        assert_eq!(written, format!("{last}\n"));
        let v: serde_json::Value = serde_json::from_str(&written).unwrap();
        assert_eq!(v["status"], status);
        assert_eq!(v["pipeline"], "small");
        assert_eq!(v["vars"]["min_total"], "100");
        let id = v["run_id"].as_str().unwrap();
        assert_eq!(id.len(), 25, "{id}");
        assert!(
            chrono::NaiveDateTime::parse_from_str(&id[..16], "%Y%m%dT%H%M%SZ").is_ok() && id.as_bytes()[16] == b'-',
            "{id}"
        );
        assert!(
            id[17..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{id}"
        );
    }
}
