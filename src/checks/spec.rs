//! Checks as written (`CheckSpec`, parsed from YAML) and their kinds with
//! the parameters each needs; the parent module binds vars, validates them
//! against schemas and runs them.

use serde::Deserialize;
use std::collections::BTreeMap;

use datafusion::logical_expr::{Expr, lit};

/// A data check as written: exactly one kind plus an optional severity
/// and, for row-level checks, how many failing rows are allowed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawCheckSpec")]
pub struct CheckSpec {
    pub kind: CheckKind,
    pub severity: Severity,
    pub threshold: Threshold,
}

/// `max_failures` / `max_failure_rate` of a row-level check: the check
/// passes while the failing rows are within every bound given (none given:
/// no row may fail).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Threshold {
    /// Failing rows allowed.
    pub max_failures: Option<u64>,
    /// A fraction of the table's rows, 0 to 1.
    pub max_failure_rate: Option<f64>,
}

impl Threshold {
    /// Whether `failing` of `rows` rows is within the bounds.
    pub fn allows(&self, failing: u64, rows: u64) -> bool {
        let count = match (self.max_failures, self.max_failure_rate) {
            (Some(m), _) => failing <= m,
            (None, Some(_)) => true,
            (None, None) => failing == 0,
        };
        let rate = self.max_failure_rate.is_none_or(|r| failing as f64 <= r * rows as f64);
        count && rate
    }

    /// `max_failures 3`, `max_failure_rate 0.01`, both, or nothing.
    pub(super) fn describe(&self) -> Option<String> {
        let parts: Vec<String> = [
            self.max_failures.map(|m| format!("max_failures {m}")),
            self.max_failure_rate.map(|r| format!("max_failure_rate {r}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }
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
    relationships: Option<RelationshipsSpec>,
    freshness: Option<FreshnessSpec>,
    expression: Option<String>,
    #[serde(default)]
    severity: Severity,
    max_failures: Option<u64>,
    max_failure_rate: Option<f64>,
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
        if let Some(c) = raw.relationships {
            kinds.push(CheckKind::Relationships(Relationships::try_from(c)?));
        }
        if let Some(c) = raw.freshness {
            kinds.push(CheckKind::Freshness(c));
        }
        if let Some(c) = raw.expression {
            kinds.push(CheckKind::Expression(c));
        }
        if kinds.len() != 1 {
            let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
            return Err(format!(
                "a check needs exactly one of unique, not_null, columns, range, accepted_values, row_count, relationships, freshness, expression; found {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
        let kind = kinds.remove(0);
        let threshold = Threshold {
            max_failures: raw.max_failures,
            max_failure_rate: raw.max_failure_rate,
        };
        if threshold != Threshold::default() && !kind.is_row_level() {
            return Err(format!(
                "{}: max_failures and max_failure_rate apply to row-level checks (unique, not_null, range, accepted_values, relationships, expression)",
                kind.name()
            ));
        }
        if let Some(r) = threshold.max_failure_rate
            && !(0.0..=1.0).contains(&r)
        {
            return Err(format!("max_failure_rate {r} is not a fraction between 0 and 1"));
        }
        Ok(CheckSpec {
            kind,
            severity: raw.severity,
            threshold,
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
    Relationships(Relationships),
    Freshness(FreshnessSpec),
    /// A boolean SQL expression over a row; a row fails where it is false
    /// (null passes, as in a SQL `CHECK` constraint).
    Expression(String),
}

/// `relationships: {column, to: TABLE.COLUMN}` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelationshipsSpec {
    pub column: String,
    pub to: String,
}

/// Every non-null value of `column` exists in `to_table.to_column`.
#[derive(Debug, Clone)]
pub struct Relationships {
    pub column: String,
    pub to_table: String,
    pub to_column: String,
}

impl TryFrom<RelationshipsSpec> for Relationships {
    type Error = String;

    fn try_from(spec: RelationshipsSpec) -> std::result::Result<Self, String> {
        match spec.to.split_once('.') {
            Some((t, c)) if !t.is_empty() && !c.is_empty() && !c.contains('.') => Ok(Relationships {
                column: spec.column,
                to_table: t.to_string(),
                to_column: c.to_string(),
            }),
            _ => Err(format!(
                "relationships: to must be TABLE.COLUMN (e.g. customers.customer_id), not \"{}\"",
                spec.to
            )),
        }
    }
}

/// `freshness: {column, max_age, as_of}`: the newest value of `column` is at
/// most `max_age` (an SQL interval, `"2 days"`) before `as_of` (a date or
/// timestamp; default: now). Vars are applied to `max_age` and `as_of`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreshnessSpec {
    pub column: String,
    pub max_age: String,
    pub as_of: Option<String>,
}

impl FreshnessSpec {
    /// The oldest newest value allowed, as SQL over the table.
    pub(super) fn limit_sql(&self) -> String {
        let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let as_of = match &self.as_of {
            Some(a) => format!("CAST({} AS TIMESTAMP)", quote(a)),
            None => "now()".to_string(),
        };
        format!("{as_of} - INTERVAL {}", quote(&self.max_age))
    }
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
    pub(super) fn lit(&self) -> Expr {
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
            CheckKind::Relationships(_) => "relationships",
            CheckKind::Freshness(_) => "freshness",
            CheckKind::Expression(_) => "expression",
        }
    }

    /// Whether the check counts failing rows (and so takes a threshold).
    pub fn is_row_level(&self) -> bool {
        !matches!(
            self,
            CheckKind::Columns(_) | CheckKind::RowCount(_) | CheckKind::Freshness(_)
        )
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
            CheckKind::Relationships(r) => format!("relationships({} -> {}.{})", r.column, r.to_table, r.to_column),
            CheckKind::Freshness(f) => format!(
                "freshness({}, max_age {}, as_of {})",
                f.column,
                f.max_age,
                f.as_of.as_deref().unwrap_or("now")
            ),
            CheckKind::Expression(e) => format!("expression({e})"),
        }
    }

    /// The columns the check reads (to validate them against the schema).
    pub fn columns(&self) -> Vec<&str> {
        match self {
            CheckKind::Unique(c) | CheckKind::NotNull(c) => c.iter().map(String::as_str).collect(),
            CheckKind::Range(r) => vec![r.column.as_str()],
            CheckKind::AcceptedValues(a) => vec![a.column.as_str()],
            CheckKind::Relationships(r) => vec![r.column.as_str()],
            CheckKind::Freshness(f) => vec![f.column.as_str()],
            CheckKind::Columns(_) | CheckKind::RowCount(_) | CheckKind::Expression(_) => vec![],
        }
    }
}
