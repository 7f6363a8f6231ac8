//! Data checks on sources and sinks: `unique`, `not_null`, `columns`,
//! `range`, `accepted_values`, `row_count`, `relationships`, `freshness`,
//! `expression`.
//!
//! Checks are DataFusion queries over the table (one aggregate scan for all
//! counting checks — `not_null`, `range`, `accepted_values`, `expression`,
//! `row_count`, `freshness` — one aggregate by key per `unique`, one anti-join
//! per `relationships`), so they stream and run wherever the engine runs. A
//! failing check reports how many rows fail and a few of them; row-level
//! checks may allow some (`max_failures: N`, `max_failure_rate: 0.01`;
//! default none); `severity: error` (the default) stops the run before
//! anything is published, `warn` only logs.

use std::collections::BTreeMap;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::DFSchema;
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::expr_fn::{count, max, sum};
use datafusion::logical_expr::{Expr, lit, when};
use datafusion::prelude::{DataFrame, SessionContext, col};

use crate::error::{Error, Problem, Result};

mod rows;
mod spec;
pub use rows::{failing_rows, passing_rows};
pub use spec::*;

/// Applies the pipeline's vars (`interpolate`) to the strings of checks that
/// are not SQL: `freshness`'s `max_age` and `as_of`. (An `expression` is
/// SQL, where vars would be text, not values: it takes none.)
///
/// # Errors
/// The first var that does not resolve, or a var in an expression.
pub fn bind(
    checks: &[CheckSpec],
    interpolate: impl Fn(&str) -> std::result::Result<String, String>,
) -> std::result::Result<Vec<CheckSpec>, String> {
    checks
        .iter()
        .map(|c| {
            let mut c = c.clone();
            let label = c.kind.label();
            match &mut c.kind {
                CheckKind::Freshness(f) => {
                    f.max_age = interpolate(&f.max_age).map_err(|e| format!("check {label}: max_age: {e}"))?;
                    if let Some(a) = &f.as_of {
                        f.as_of = Some(interpolate(a).map_err(|e| format!("check {label}: as_of: {e}"))?);
                    }
                }
                CheckKind::Expression(e) if e.contains("${") => {
                    return Err(format!(
                        "check {label}: vars are not applied in an expression (it is SQL, where a var would be text)"
                    ));
                }
                _ => {}
            }
            Ok(c)
        })
        .collect()
}

/// Problems with checks that can be found from the schema alone: a column a
/// check reads does not exist. (`columns:` itself is evaluated at run time.)
pub fn validate_against(subject: &str, checks: &[CheckSpec], schema: &Schema) -> Vec<Problem> {
    let mut problems = Vec::new();
    let parse = |sql: &str| -> std::result::Result<DataType, String> {
        // A bare context knows DataFusion's functions, which is what a check
        // may use; the table's own schema resolves the columns.
        let df_schema = DFSchema::try_from(schema.clone()).map_err(|e| e.to_string())?;
        let expr = SessionContext::new()
            .parse_sql_expr(sql, &df_schema)
            .map_err(|e| e.to_string())?;
        use datafusion::logical_expr::ExprSchemable;
        expr.get_type(&df_schema).map_err(|e| e.to_string())
    };
    for c in checks {
        match &c.kind {
            CheckKind::Expression(sql) => match parse(sql) {
                Ok(DataType::Boolean) => {}
                Ok(t) => problems.push(Problem::new(
                    subject,
                    format!("check {} is {t}, not a boolean", c.kind.label()),
                )),
                Err(e) => problems.push(Problem::new(
                    subject,
                    format!("check {} does not plan: {e}", c.kind.label()),
                )),
            },
            CheckKind::Freshness(f) => {
                if let Ok(field) = schema.field_with_name(&f.column)
                    && !matches!(
                        field.data_type(),
                        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..)
                    )
                {
                    problems.push(Problem::new(
                        subject,
                        format!(
                            "check {} needs a date or timestamp column; \"{}\" is {}",
                            c.kind.label(),
                            f.column,
                            field.data_type()
                        ),
                    ));
                }
                if let Err(e) = parse(&f.limit_sql()) {
                    problems.push(Problem::new(
                        subject,
                        format!(
                            "check {}: max_age must be an SQL interval (\"2 days\") and as_of a date or timestamp: {e}",
                            c.kind.label()
                        ),
                    ));
                }
            }
            _ => {}
        }
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

/// Problems of checks that refer to other tables (`relationships`): the
/// table must be one of `tables` (name and schema), which holds what
/// `what` says (`a source` for a source's checks, which run before any step;
/// `a source or a step` for a sink's), and have the column.
pub fn validate_references(
    subject: &str,
    checks: &[CheckSpec],
    tables: &[(&str, &Schema)],
    what: &str,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for c in checks {
        let CheckKind::Relationships(r) = &c.kind else {
            continue;
        };
        match tables.iter().find(|(name, _)| *name == r.to_table) {
            None => problems.push(Problem::new(
                subject,
                format!(
                    "check {} refers to table \"{}\", which is not {what}",
                    c.kind.label(),
                    r.to_table
                ),
            )),
            Some((_, schema)) if schema.field_with_name(&r.to_column).is_err() => problems.push(Problem::new(
                subject,
                format!(
                    "check {} names column \"{}\", which is not in table \"{}\" (columns: {})",
                    c.kind.label(),
                    r.to_column,
                    r.to_table,
                    column_list(schema)
                ),
            )),
            Some(_) => {}
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
    /// Rows sent to the source's quarantine (`quarantine:`); absent for
    /// tables without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<u64>,
}

/// Runs `checks` against `table`, logging each outcome; `ctx` holds the
/// tables a `relationships` check refers to. Failed checks are outcomes, not
/// errors: see [`failures`].
///
/// # Errors
/// A query failure.
pub async fn run(subject: &str, table: &DataFrame, checks: &[CheckSpec], ctx: &SessionContext) -> Result<Vec<Outcome>> {
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
        let pred = failing_predicate(&c.kind, table).map_err(fail)?;
        if let Some(p) = &pred {
            aggs.push(sum(when(p.clone(), lit(1i64)).otherwise(lit(0i64)).map_err(fail)?).alias(format!("__c{i}")));
        }
        if let CheckKind::Freshness(f) = &c.kind {
            aggs.push(max(col(quoted(&f.column))).alias(format!("__m{i}")));
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
        // (failing rows, whether that passes, the detail of a failure)
        let (failing, passed, detail) = match (&c.kind, pred) {
            (CheckKind::Columns(expected), _) => {
                let problems = columns_problems(expected, &schema);
                (problems.len() as u64, problems.is_empty(), problems.join("; "))
            }
            (CheckKind::RowCount(r), _) => {
                let bad = r.min.is_some_and(|m| rows < m) || r.max.is_some_and(|m| rows > m);
                (u64::from(bad), !bad, format!("the table has {rows} rows"))
            }
            (CheckKind::Freshness(f), _) => {
                let newest = counts
                    .column_by_name(&format!("__m{i}"))
                    .map(|a| ScalarValue::try_from_array(a, 0))
                    .transpose()
                    .map_err(fail)?
                    .unwrap_or(ScalarValue::Null);
                let (fresh, shown) = freshness(table, ctx, f, &newest).await.map_err(fail)?;
                let detail = match shown {
                    None => format!("the table has no {} (no rows, or all null)", f.column),
                    Some(v) => format!(
                        "the newest {} is {v}, more than {} before {}",
                        f.column,
                        f.max_age,
                        f.as_of.as_deref().unwrap_or("now")
                    ),
                };
                (u64::from(!fresh), fresh, detail)
            }
            (CheckKind::Unique(cols), _) => {
                // The rows whose key occurs more than once, counted by an
                // aggregate; a failure's examples are whole rows, from the
                // window count per key that a quarantine uses.
                let keys: Vec<Expr> = cols.iter().map(|c| col(quoted(c))).collect();
                let columns: Vec<Expr> = schema.fields().iter().map(|f| col(quoted(f.name()))).collect();
                let n = rows::duplicate_count(table, cols).await.map_err(fail)?;
                let passed = c.threshold.allows(n, rows);
                let examples = if passed {
                    String::new()
                } else {
                    let dups = rows::duplicates(table, cols).map_err(fail)?;
                    examples(dups, &keys, &columns).await.map_err(fail)?
                };
                (n, passed, fail_detail(n, rows, &c.threshold, &examples))
            }
            (CheckKind::Relationships(r), _) => {
                // One anti-join: the rows whose value is not in the target.
                let key = col(quoted(&r.column));
                let orphans = rows::orphans(table, r, ctx).await.map_err(fail)?;
                let n = orphans.clone().count().await.map_err(fail)? as u64;
                let passed = c.threshold.allows(n, rows);
                let columns: Vec<Expr> = schema.fields().iter().map(|f| col(quoted(f.name()))).collect();
                let examples = if passed {
                    String::new()
                } else {
                    examples(orphans, &[key], &columns).await.map_err(fail)?
                };
                (n, passed, fail_detail(n, rows, &c.threshold, &examples))
            }
            (_, Some(p)) => {
                let n = int_at(&format!("__c{i}"));
                let passed = c.threshold.allows(n, rows);
                let examples = if passed {
                    String::new()
                } else {
                    let b = table
                        .clone()
                        .filter(p.clone())
                        .and_then(|d| d.limit(0, Some(3)))
                        .map_err(fail)?;
                    let b = b.collect().await.map_err(fail)?;
                    format!("; e.g. {}", render_rows(&b))
                };
                (n, passed, fail_detail(n, rows, &c.threshold, &examples))
            }
            (_, None) => (0, true, String::new()),
        };
        let message = if passed {
            String::new()
        } else {
            format!("{subject}: check {label} failed: {detail}")
        };
        if passed && failing > 0 {
            let within = c.threshold.describe().unwrap_or_default();
            tracing::info!(subject, check = %label, failing, rows, "check passed: {failing} of {rows} rows fail, within {within}");
        } else if passed {
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
            quarantined: None,
        });
    }
    Ok(outcomes)
}

/// `2 of 10 rows fail` (`, more than max_failures 1` with a threshold) and
/// the examples.
fn fail_detail(n: u64, rows: u64, threshold: &Threshold, examples: &str) -> String {
    match threshold.describe() {
        Some(t) => format!("{n} of {rows} rows fail, more than {t} allows{examples}"),
        None => format!("{n} of {rows} rows fail{examples}"),
    }
}

/// `; e.g. {row}, {row}, {row}`: the first three rows of `df` by `keys`,
/// then every column (so the examples do not depend on partitioning).
async fn examples(df: DataFrame, keys: &[Expr], columns: &[Expr]) -> datafusion::error::Result<String> {
    let order = keys
        .iter()
        .chain(columns.iter())
        .map(|e| e.clone().sort(true, true))
        .collect();
    let b = df.sort(order)?.limit(0, Some(3))?.collect().await?;
    Ok(format!("; e.g. {}", render_rows(&b)))
}

/// Whether `newest` (the column's maximum) is at or after the freshness
/// limit, and `newest` as shown (None when the column has no value).
async fn freshness(
    table: &DataFrame,
    ctx: &SessionContext,
    f: &FreshnessSpec,
    newest: &ScalarValue,
) -> datafusion::error::Result<(bool, Option<String>)> {
    if newest.is_null() {
        return Ok((false, None));
    }
    let ty = newest.data_type();
    let limit = datafusion::logical_expr::cast(table.parse_sql_expr(&f.limit_sql())?, ty);
    let b = ctx
        .read_empty()?
        .select(vec![lit(newest.clone()).gt_eq(limit).alias("fresh")])?
        .collect()
        .await?;
    let fresh = b
        .first()
        .and_then(|b| b.column_by_name("fresh"))
        .and_then(|a| ScalarValue::try_from_array(a, 0).ok())
        .is_some_and(|v| v == ScalarValue::Boolean(Some(true)));
    let shown = newest.to_array().ok().and_then(|a| {
        ArrayFormatter::try_new(a.as_ref(), &FormatOptions::default())
            .ok()
            .map(|f| f.value(0).to_string())
    });
    Ok((fresh, shown))
}

/// The messages of the failed `error` checks among `outcomes`.
pub fn failures(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| !o.passed && o.severity == Severity::Error)
        .map(|o| o.message.clone())
        .collect()
}

/// The predicate a failing row satisfies, for the row-level checks counted
/// in the shared scan.
fn failing_predicate(kind: &CheckKind, table: &DataFrame) -> datafusion::error::Result<Option<Expr>> {
    Ok(match kind {
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
        CheckKind::Expression(sql) => Some(table.parse_sql_expr(sql)?.is_false()),
        CheckKind::Unique(_)
        | CheckKind::Columns(_)
        | CheckKind::RowCount(_)
        | CheckKind::Relationships(_)
        | CheckKind::Freshness(_) => None,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_hold_every_bound_given_and_default_to_none() {
        let t = |max_failures, max_failure_rate| Threshold {
            max_failures,
            max_failure_rate,
        };
        assert!(t(None, None).allows(0, 10));
        assert!(!t(None, None).allows(1, 10));
        assert!(t(Some(2), None).allows(2, 10) && !t(Some(2), None).allows(3, 10));
        assert!(t(None, Some(0.2)).allows(2, 10) && !t(None, Some(0.2)).allows(3, 10));
        assert!(t(None, Some(0.2)).allows(0, 0));
        // Both: each must hold.
        assert!(!t(Some(1), Some(0.5)).allows(2, 10));
        assert!(!t(Some(5), Some(0.1)).allows(2, 10));
        assert_eq!(
            t(Some(1), Some(0.5)).describe().as_deref(),
            Some("max_failures 1, max_failure_rate 0.5")
        );
        assert_eq!(t(None, None).describe(), None);
    }

    #[test]
    fn vars_apply_to_freshness_and_never_to_expressions() {
        let spec = |yaml: &str| -> CheckSpec { serde_saphyr::from_str(yaml).unwrap() };
        let vars = |s: &str| Ok::<_, String>(s.replace("${as_of}", "2026-11-24").replace("${age}", "2 days"));
        let bound = bind(
            &[spec(
                "freshness: {column: ts, max_age: \"${age}\", as_of: \"${as_of}\"}",
            )],
            vars,
        )
        .unwrap();
        assert_eq!(bound[0].kind.label(), "freshness(ts, max_age 2 days, as_of 2026-11-24)");
        let err = bind(&[spec("expression: \"a < ${as_of}\"")], vars).unwrap_err();
        assert_eq!(
            err,
            "check expression(a < ${as_of}): vars are not applied in an expression (it is SQL, where a var would be text)"
        );
    }
}
