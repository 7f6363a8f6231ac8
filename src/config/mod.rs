//! The pipeline file as written: a serde model of `PIPELINE.md`.
//!
//! Nothing here is interpreted: `${...}` stays in the strings, names are not
//! yet checked against each other, SQL is not parsed. [`load`] reads and
//! parses the YAML (the YAML crate stays behind it); [`validate::resolve`]
//! turns a [`PipelineSpec`] into the typed, checked [`crate::runner::Plan`]
//! that everything after it works on. Every struct denies unknown keys so a
//! typo is an error with its line, not a silently ignored option.

pub mod validate;
pub mod vars;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::error::{Error, Result};

/// A pipeline file as parsed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub name: String,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    #[serde(default)]
    pub engine: EngineSpec,
    /// Object-store options (`aws_endpoint`, `aws_region`, ...), applied on
    /// top of the environment's own configuration.
    #[serde(default)]
    pub storage: BTreeMap<String, String>,
    pub sources: BTreeMap<String, SourceSpec>,
    #[serde(default)]
    pub steps: Vec<Spanned<StepSpec>>,
    #[serde(default)]
    pub sinks: Vec<Spanned<SinkSpec>>,
}

/// `engine:`: where the SQL runs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSpec {
    #[serde(default)]
    pub kind: EngineKind,
    pub url: Option<String>,
    pub target_partitions: Option<usize>,
    /// e.g. `4GiB`, `512MiB`; past it, DataFusion spills to disk.
    pub memory_limit: Option<String>,
}

/// The engine kinds of `engine.kind`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    #[default]
    Local,
    Ballista,
}

/// A source table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub url: String,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
}

/// Source file formats.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Parquet,
}

/// A step as written: a name and exactly one kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawStepSpec")]
pub struct StepSpec {
    pub name: String,
    pub kind: StepKindSpec,
    /// Keep the step's result in memory for its consumers (default: when it
    /// has more than one).
    pub cache: Option<bool>,
    /// Vars for this step's SQL only, overriding the pipeline's (so one SQL
    /// file can serve two steps, e.g. features now and a year ago).
    pub vars: BTreeMap<String, String>,
}

/// The step kinds; matched in one place, [`crate::runner::exec`].
#[derive(Debug)]
pub enum StepKindSpec {
    Sql(String),
    Clv(crate::stages::clv::ClvSpec),
    Segment(crate::stages::segment::SegmentSpec),
    Predict(crate::stages::predict::PredictSpec),
}

/// The wire form of a step: one optional field per kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStepSpec {
    name: String,
    sql: Option<String>,
    clv: Option<crate::stages::clv::ClvSpec>,
    segment: Option<crate::stages::segment::SegmentSpec>,
    predict: Option<crate::stages::predict::PredictSpec>,
    cache: Option<bool>,
    #[serde(default)]
    vars: BTreeMap<String, String>,
}

impl TryFrom<RawStepSpec> for StepSpec {
    type Error = String;

    fn try_from(raw: RawStepSpec) -> std::result::Result<Self, String> {
        let mut found = Vec::new();
        if raw.sql.is_some() {
            found.push("sql");
        }
        if raw.clv.is_some() {
            found.push("clv");
        }
        if raw.segment.is_some() {
            found.push("segment");
        }
        if raw.predict.is_some() {
            found.push("predict");
        }
        let kind = match (raw.sql, raw.clv, raw.segment, raw.predict) {
            (Some(sql), None, None, None) => StepKindSpec::Sql(sql),
            (None, Some(c), None, None) => StepKindSpec::Clv(c),
            (None, None, Some(s), None) => StepKindSpec::Segment(s),
            (None, None, None, Some(p)) => StepKindSpec::Predict(p),
            _ => {
                let found = if found.is_empty() {
                    "none".to_string()
                } else {
                    found.join(", ")
                };
                return Err(format!(
                    "step \"{}\": expected exactly one of sql, clv, segment, predict; found {found}",
                    raw.name
                ));
            }
        };
        if !raw.vars.is_empty() && !matches!(kind, StepKindSpec::Sql(_)) {
            return Err(format!("step \"{}\": vars applies to sql steps only", raw.name));
        }
        Ok(StepSpec {
            name: raw.name,
            kind,
            cache: raw.cache,
            vars: raw.vars,
        })
    }
}

/// A sink: a table written to a location.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    pub table: String,
    pub url: String,
    #[serde(default)]
    pub partition_by: Vec<String>,
    #[serde(default)]
    pub mode: SinkMode,
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
}

/// How a sink replaces what is already at its location.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkMode {
    /// The whole location is replaced when the run succeeds.
    #[default]
    Overwrite,
    /// Only the partitions present in the new data are replaced.
    OverwritePartitions,
    /// Files are added; a rerun with the same vars replaces its own files.
    Append,
}

impl SinkMode {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkMode::Overwrite => "overwrite",
            SinkMode::OverwritePartitions => "overwrite_partitions",
            SinkMode::Append => "append",
        }
    }
}

/// A data check as written: exactly one kind plus an optional severity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawCheckSpec")]
pub struct CheckSpec {
    pub kind: crate::checks::CheckKind,
    pub severity: Severity,
}

/// `severity:` of a check.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
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
    range: Option<crate::checks::RangeSpec>,
    accepted_values: Option<crate::checks::AcceptedValuesSpec>,
    row_count: Option<crate::checks::RowCountSpec>,
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
        use crate::checks::CheckKind;
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

/// Reads and parses a pipeline file.
///
/// # Errors
/// [`Error::Invalid`] naming the file (and the line, where the YAML parser
/// gives one) when the file cannot be read or does not match the format.
pub fn load(file: &Path) -> Result<PipelineSpec> {
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| Error::Invalid {
        file: shown.clone(),
        problems: vec![format!("cannot read the file: {e}")],
    })?;
    parse(&text).map_err(|problem| Error::Invalid {
        problems: vec![problem.replace("<input>", &shown)],
        file: shown,
    })
}

/// Parses pipeline YAML text; the error is one line plus the parser's snippet.
pub fn parse(text: &str) -> std::result::Result<PipelineSpec, String> {
    serde_saphyr::from_str::<PipelineSpec>(text).map_err(|e| {
        // The crate renders "error: line L column C: message" and a snippet;
        // keep both but drop the redundant "error: " prefix.
        let shown = e
            .to_string()
            .replace(", set DuplicateKeyPolicy in Options if acceptable", "");
        shown.strip_prefix("error: ").unwrap_or(&shown).trim_end().to_string()
    })
}
