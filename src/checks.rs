//! Data checks on sources and sinks: `unique`, `not_null`, `columns`,
//! `range`, `accepted_values`, `row_count`.
//!
//! Checks are DataFusion queries over the table (one aggregate scan for all
//! counting checks, one grouped scan per `unique`), so they stream and run
//! wherever the engine runs. A failing check reports how many rows fail and a
//! few of them; `severity: error` (the default) stops the run before anything
//! is published, `warn` only logs.

use std::collections::BTreeMap;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{Expr, ExprFunctionExt, WindowFunctionDefinition, lit, when};
use datafusion::prelude::{DataFrame, col};
use serde::Deserialize;

use crate::error::{Error, Problem, Result};

/// A data check as written: exactly one kind plus an optional severity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawCheckSpec")]
pub struct CheckSpec {
    pub kind: CheckKind,
    pub severity: Severity,
}

/// `severity:` of a check.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[default]
    Error,
    Warn,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckSpec {
    unique: Option<OneOrMany>,
    not_null: Option<OneOrMany>,
    columns: Option<BTreeMap<String, String>>,
    range: Option<RangeSpec>,
    accepted_values: Option<AcceptedValuesSpec>,
    row_count: Option<RowCountSpec>,
    #[serde(default)]
    severity: Severity,
}

/// `col` or `[col, ...]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a column name or a list of column names")]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The names as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

impl TryFrom<RawCheckSpec> for CheckSpec {
    type Error = String;

    fn try_from(raw: RawCheckSpec) -> std::result::Result<Self, String> {
        let mut kinds = Vec::new();
        if let Some(c) = raw.unique {
            kinds.push(CheckKind::Unique(c.into_vec()));
        }
        if let Some(c) = raw.not_null {
            kinds.push(CheckKind::NotNull(c.into_vec()));
        }
        if let Some(c) = raw.columns {
            kinds.push(CheckKind::Columns(c));
        }
        if let Some(c) = raw.range {
            kinds.push(CheckKind::Range(c));
        }
        if let Some(c) = raw.accepted_values {
            kinds.push(CheckKind::AcceptedValues(c));
        }
        if let Some(c) = raw.row_count {
            kinds.push(CheckKind::RowCount(c));
        }
        if kinds.len() != 1 {
            let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
            return Err(format!(
                "a check needs exactly one of unique, not_null, columns, range, accepted_values, row_count; found {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
        Ok(CheckSpec {
            kind: kinds.remove(0),
            severity: raw.severity,
        })
    }
}

/// What a check tests.
#[derive(Debug, Clone)]
pub enum CheckKind {
    Unique(Vec<String>),
    NotNull(Vec<String>),
    Columns(BTreeMap<String, String>),
    Range(RangeSpec),
    AcceptedValues(AcceptedValuesSpec),
    RowCount(RowCountSpec),
}

/// `range: {column, min, max}` (either bound optional, both inclusive).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSpec {
    pub column: String,
    pub min: Option<Scalar>,
    pub max: Option<Scalar>,
}

/// `accepted_values: {column, values}`; nulls are not checked here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptedValuesSpec {
    pub column: String,
    pub values: Vec<Scalar>,
}

/// `row_count: {min, max}` (both inclusive, either optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowCountSpec {
    pub min: Option<u64>,
    pub max: Option<u64>,
}

/// A YAML scalar in a check, compared with the column after DataFusion's
/// type coercion (so `"2024-01-01"` works against a date column).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a number, a boolean or a string")]
pub enum Scalar {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

impl Scalar {
    fn lit(&self) -> Expr {
        match self {
            Scalar::Int(i) => lit(*i),
            Scalar::Float(f) => lit(*f),
            Scalar::Bool(b) => lit(*b),
            Scalar::Str(s) => lit(s.clone()),
        }
    }
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Str(s) => write!(f, "\"{s}\""),
        }
    }
}

impl CheckKind {
    /// The check's key in YAML.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Unique(_) => "unique",
            CheckKind::NotNull(_) => "not_null",
            CheckKind::Columns(_) => "columns",
            CheckKind::Range(_) => "range",
            CheckKind::AcceptedValues(_) => "accepted_values",
            CheckKind::RowCount(_) => "row_count",
        }
    }

    /// A short rendering for messages, e.g. `not_null(signup_date)`.
    pub fn label(&self) -> String {
        match self {
            CheckKind::Unique(c) | CheckKind::NotNull(c) => format!("{}({})", self.name(), c.join(", ")),
            CheckKind::Columns(c) => format!(
                "columns({})",
                c.iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            CheckKind::Range(r) => format!(
                "range({}{}{})",
                r.column,
                r.min.as_ref().map(|m| format!(", min {m}")).unwrap_or_default(),
                r.max.as_ref().map(|m| format!(", max {m}")).unwrap_or_default()
            ),
            CheckKind::AcceptedValues(a) => format!(
                "accepted_values({}: {})",
                a.column,
                a.values.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
            CheckKind::RowCount(r) => format!(
                "row_count({}{})",
                r.min.map(|m| format!("min {m}")).unwrap_or_default(),
                r.max
                    .map(|m| format!("{}max {m}", if r.min.is_some() { ", " } else { "" }))
                    .unwrap_or_default()
            ),
        }
    }

    /// The columns the check reads (to validate them against the schema).
    pub fn columns(&self) -> Vec<&str> {
        match self {
            CheckKind::Unique(c) | CheckKind::NotNull(c) => c.iter().map(String::as_str).collect(),
            CheckKind::Range(r) => vec![r.column.as_str()],
            CheckKind::AcceptedValues(a) => vec![a.column.as_str()],
            CheckKind::Columns(_) | CheckKind::RowCount(_) => vec![],
        }
    }
}

/// Problems with checks that can be found from the schema alone: a column a
/// check reads does not exist. (`columns:` itself is evaluated at run time.)
pub fn validate_against(subject: &str, checks: &[CheckSpec], schema: &Schema) -> Vec<Problem> {
    let mut problems = Vec::new();
    for c in checks {
        for name in c.kind.columns() {
            if schema.field_with_name(name).is_err() {
                problems.push(Problem::new(
                    subject,
                    format!(
                        "check {} names column \"{name}\", which is not in the table (columns: {})",
                        c.kind.label(),
                        column_list(schema)
                    ),
                ));
            }
        }
    }
    problems
}

/// `a, b, c` for messages.
pub fn column_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The outcome of one check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// e.g. `not_null(signup_date)`.
    pub check: String,
    pub severity: Severity,
    pub passed: bool,
    /// Rows that fail (for `unique`: the rows whose key is not unique).
    pub failing: u64,
    /// The failure message (empty when passed).
    pub message: String,
}

/// Runs `checks` against `table`, logging each outcome. Failed checks are
/// outcomes, not errors: see [`failures`].
///
/// # Errors
/// A query failure.
pub async fn run(subject: &str, table: &DataFrame, checks: &[CheckSpec]) -> Result<Vec<Outcome>> {
    if checks.is_empty() {
        return Ok(Vec::new());
    }
    let fail = |e: datafusion::error::DataFusionError| Error::Checks {
        failures: vec![format!("{subject}: checks could not run: {e}")],
    };
    let schema = table.schema().as_arrow().clone();
    // One aggregate scan for every counting check.
    let mut aggs = vec![count(lit(1)).alias("__rows")];
    let mut predicates: Vec<Option<Expr>> = Vec::with_capacity(checks.len());
    for (i, c) in checks.iter().enumerate() {
        let pred = failing_predicate(&c.kind);
        if let Some(p) = &pred {
            aggs.push(sum(when(p.clone(), lit(1i64)).otherwise(lit(0i64)).map_err(fail)?).alias(format!("__c{i}")));
        }
        predicates.push(pred);
    }
    let counts = table
        .clone()
        .aggregate(vec![], aggs)
        .map_err(fail)?
        .collect()
        .await
        .map_err(fail)?;
    let counts = counts
        .first()
        .ok_or_else(|| fail(datafusion::error::DataFusionError::Execution("no result".into())))?;
    let int_at = |name: &str| -> u64 {
        counts
            .column_by_name(name)
            .and_then(|a| ScalarValue::try_from_array(a, 0).ok())
            .and_then(|v| match v {
                ScalarValue::Int64(Some(n)) => Some(n as u64),
                _ => None,
            })
            .unwrap_or(0)
    };
    let rows = int_at("__rows");

    let mut outcomes = Vec::new();
    for (i, (c, pred)) in checks.iter().zip(&predicates).enumerate() {
        let label = c.kind.label();
        let (failing, detail) = match (&c.kind, pred) {
            (CheckKind::Columns(expected), _) => {
                let problems = columns_problems(expected, &schema);
                (problems.len() as u64, problems.join("; "))
            }
            (CheckKind::RowCount(r), _) => {
                let bad = r.min.is_some_and(|m| rows < m) || r.max.is_some_and(|m| rows > m);
                (u64::from(bad), format!("the table has {rows} rows"))
            }
            (CheckKind::Unique(cols), _) => {
                // The rows whose key occurs more than once: a window count
                // per key, so the examples are whole rows.
                let keys: Vec<Expr> = cols.iter().map(|c| col(quoted(c))).collect();
                let per_key = Expr::from(WindowFunction::new(
                    WindowFunctionDefinition::AggregateUDF(count_udaf()),
                    vec![lit(1)],
                ))
                .partition_by(keys.clone())
                .build()
                .map_err(fail)?
                .alias("__n");
                let columns: Vec<Expr> = schema.fields().iter().map(|f| col(quoted(f.name()))).collect();
                let dups = table
                    .clone()
                    .window(vec![per_key])
                    .and_then(|d| d.filter(col("__n").gt(lit(1i64))))
                    .and_then(|d| d.select(columns.clone()))
                    .map_err(fail)?;
                let n = dups.clone().count().await.map_err(fail)? as u64;
                let examples = if n > 0 {
                    let order = keys
                        .iter()
                        .chain(columns.iter())
                        .map(|e| e.clone().sort(true, true))
                        .collect();
                    let b = dups
                        .sort(order)
                        .and_then(|d| d.limit(0, Some(3)))
                        .map_err(fail)?
                        .collect()
                        .await
                        .map_err(fail)?;
                    format!("; e.g. {}", render_rows(&b))
                } else {
                    String::new()
                };
                (n, format!("{n} of {rows} rows fail{examples}"))
            }
            (_, Some(p)) => {
                let n = int_at(&format!("__c{i}"));
                let examples = if n > 0 {
                    let b = table
                        .clone()
                        .filter(p.clone())
                        .and_then(|d| d.limit(0, Some(3)))
                        .map_err(fail)?;
                    let b = b.collect().await.map_err(fail)?;
                    format!("; e.g. {}", render_rows(&b))
                } else {
                    String::new()
                };
                (n, format!("{n} of {rows} rows fail{examples}"))
            }
            (_, None) => (0, String::new()),
        };
        let passed = failing == 0;
        let message = if passed {
            String::new()
        } else {
            format!("{subject}: check {label} failed: {detail}")
        };
        if passed {
            tracing::info!(subject, check = %label, "check passed");
        } else if c.severity == Severity::Warn {
            tracing::warn!("{message} (severity warn: the run goes on)");
        }
        outcomes.push(Outcome {
            check: label,
            severity: c.severity,
            passed,
            failing,
            message,
        });
    }
    Ok(outcomes)
}

/// The messages of the failed `error` checks among `outcomes`.
pub fn failures(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| !o.passed && o.severity == Severity::Error)
        .map(|o| o.message.clone())
        .collect()
}

/// The predicate a failing row satisfies, for row-level checks.
fn failing_predicate(kind: &CheckKind) -> Option<Expr> {
    match kind {
        CheckKind::NotNull(cols) => cols.iter().map(|c| col(quoted(c)).is_null()).reduce(Expr::or),
        CheckKind::Range(r) => {
            let c = col(quoted(&r.column));
            let lo = r.min.as_ref().map(|m| c.clone().lt(m.lit()));
            let hi = r.max.as_ref().map(|m| c.clone().gt(m.lit()));
            match (lo, hi) {
                (Some(a), Some(b)) => Some(a.or(b)),
                (a, b) => a.or(b),
            }
        }
        CheckKind::AcceptedValues(a) => {
            let c = col(quoted(&a.column));
            let values: Vec<Expr> = a.values.iter().map(Scalar::lit).collect();
            Some(c.clone().is_not_null().and(c.in_list(values, true)))
        }
        CheckKind::Unique(_) | CheckKind::Columns(_) | CheckKind::RowCount(_) => None,
    }
}

/// A column name as a DataFusion column reference that is never parsed
/// (so `a.b` or `Customer ID` are taken literally).
fn quoted(name: &str) -> datafusion::common::Column {
    datafusion::common::Column::new_unqualified(name)
}

/// Problems of a `columns:` check.
fn columns_problems(expected: &BTreeMap<String, String>, schema: &Schema) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, ty) in expected {
        match schema.field_with_name(name) {
            Err(_) => problems.push(format!("column \"{name}\" is missing")),
            Ok(f) => match ty.parse::<DataType>() {
                Err(_) => problems.push(format!(
                    "\"{ty}\" is not an Arrow type name (e.g. Int64, Utf8, Date32, Timestamp(µs, \"UTC\"))"
                )),
                Ok(want) if same_type(&want, f.data_type()) => {}
                Ok(want) => problems.push(format!("column \"{name}\" is {}, expected {want}", f.data_type())),
            },
        }
    }
    problems
}

/// Type equality that treats the string (and binary) encodings DataFusion
/// picks on read (`Utf8View`, `LargeUtf8`) as the same logical type.
pub fn same_type(a: &DataType, b: &DataType) -> bool {
    use DataType::*;
    let norm = |t: &DataType| match t {
        Utf8View | LargeUtf8 => Utf8,
        BinaryView | LargeBinary => Binary,
        Dictionary(_, v) => v.as_ref().clone(),
        other => other.clone(),
    };
    norm(a) == norm(b)
}

/// `{a: 1, b: NULL}, {...}` for up to six columns of each row.
pub fn render_rows(batches: &[RecordBatch]) -> String {
    let opts = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for b in batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .take(6)
            .map(|a| ArrayFormatter::try_new(a.as_ref(), &opts))
            .collect();
        for r in 0..b.num_rows() {
            let mut cells = Vec::new();
            for (f, field) in fmts.iter().zip(b.schema().fields()) {
                let v = match f {
                    Ok(f) => f.value(r).to_string(),
                    Err(_) => "?".to_string(),
                };
                cells.push(format!("{}: {v}", field.name()));
            }
            if b.num_columns() > 6 {
                cells.push("…".to_string());
            }
            rows.push(format!("{{{}}}", cells.join(", ")));
        }
    }
    rows.join(", ")
}
