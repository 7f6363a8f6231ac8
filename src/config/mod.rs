//! The pipeline file as written: a serde model of `PIPELINE.md`.
//!
//! Nothing here is interpreted: `${...}` stays in the strings, names are not
//! yet checked against each other, SQL is not parsed. [`load`] reads and
//! parses the YAML (the YAML crate stays behind it); [`crate::runner::resolve`]
//! turns a [`PipelineSpec`] into the typed, checked [`crate::runner::Plan`]
//! that everything after it works on. Every struct denies unknown keys so a
//! typo is an error with its line, not a silently ignored option.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;

use crate::checks::CheckSpec;
use crate::engine::EngineKind;
use crate::error::{Error, Problem, Result};
use crate::sinks::SinkMode;
use crate::stages::StageSpec;

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
    /// Where to write the HTML run report (a path or URL; `--report` wins).
    pub report: Option<String>,
}

/// `engine:`: where the SQL runs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSpec {
    #[serde(default)]
    pub kind: EngineKind,
    /// `df://host:port`: the scheduler of a Ballista cluster.
    pub url: Option<String>,
    /// Ballista in this process, for trying it out and for tests.
    #[serde(default)]
    pub standalone: bool,
    /// Ballista: where a run keeps tables read more than once (shared
    /// storage every executor reaches, e.g. `s3://bucket/tmp/crmflow/`).
    pub scratch: Option<String>,
    /// Ballista: local directories mounted at the same path on the client
    /// and every executor (the pipeline vouches for it).
    #[serde(default)]
    pub shared_paths: Vec<String>,
    pub target_partitions: Option<usize>,
    /// e.g. `4GiB`, `512MiB`; past it, DataFusion spills to disk.
    pub memory_limit: Option<String>,
}

/// A source table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub url: String,
    #[serde(default)]
    pub format: Format,
    /// `format: delta` only: the table version to read.
    pub version: Option<i64>,
    /// `format: delta` only: read the table as of this time (RFC 3339).
    pub timestamp: Option<String>,
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
    /// Where rows failing the row-level checks go (as Parquet, with `_check`
    /// and `_run_id`) instead of failing the run; they are left out of the
    /// table every step reads.
    pub quarantine: Option<String>,
}

/// Table formats of sources and sinks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// A directory of Parquet files (hive `key=value/` partitions).
    #[default]
    Parquet,
    /// A Delta Lake table (`_delta_log/` beside the data files), read and
    /// written through delta-rs (`sources::delta`, `sinks::delta`).
    Delta,
}

/// A step as written: a name and exactly one kind.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawStepSpec")]
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

/// The kind of a step as written: SQL, or one of the stages (whose keys
/// [`StageSpec::KEYS`] lists).
#[derive(Debug)]
pub enum StepKindSpec {
    Sql(String),
    Stage(StageSpec),
}

/// The wire form of a step: its keys as found, at most one value per kind.
#[derive(Debug)]
struct RawStepSpec {
    name: String,
    /// Every kind key found, in file order, with its value.
    kinds: Vec<(&'static str, StepKindSpec)>,
    cache: Option<bool>,
    vars: BTreeMap<String, String>,
}

/// The keys a step may have: `name`, `sql`, the stage keys, `cache`, `vars`.
fn step_fields() -> &'static [&'static str] {
    static FIELDS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    FIELDS.get_or_init(|| {
        let mut f = vec!["name", "sql"];
        f.extend(StageSpec::KEYS);
        f.extend(["cache", "vars"]);
        f
    })
}

impl<'de> Deserialize<'de> for RawStepSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_map(RawStepVisitor)
    }
}

struct RawStepVisitor;

impl<'de> Visitor<'de> for RawStepVisitor {
    type Value = RawStepSpec;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a step: a name and one of sql, ")?;
        f.write_str(&StageSpec::KEYS.join(", "))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<RawStepSpec, A::Error> {
        let (mut name, mut cache, mut vars) = (None, None, None);
        let mut kinds = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "name" => name = Some(map.next_value::<String>()?),
                "cache" => cache = map.next_value::<Option<bool>>()?,
                "vars" => vars = Some(map.next_value::<BTreeMap<String, String>>()?),
                "sql" => kinds.push(("sql", StepKindSpec::Sql(map.next_value::<String>()?))),
                other => match StageSpec::KEYS.iter().find(|k| **k == other) {
                    Some(k) => kinds.push((*k, StepKindSpec::Stage(map.next_value_seed(StageSeed(k))?))),
                    None => return Err(de::Error::unknown_field(other, step_fields())),
                },
            }
        }
        Ok(RawStepSpec {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            kinds,
            cache,
            vars: vars.unwrap_or_default(),
        })
    }
}

/// Deserializes the value under a stage key as that stage's spec.
struct StageSeed(&'static str);

impl<'de> DeserializeSeed<'de> for StageSeed {
    type Value = StageSpec;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<StageSpec, D::Error> {
        StageSpec::deserialize_kind(self.0, d)
    }
}

impl TryFrom<RawStepSpec> for StepSpec {
    type Error = String;

    fn try_from(mut raw: RawStepSpec) -> std::result::Result<Self, String> {
        if raw.kinds.len() != 1 {
            let mut found: Vec<&str> = raw.kinds.iter().map(|(k, _)| *k).collect();
            // Listed in the order of the expected keys, not of the file.
            found.sort_by_key(|k| step_fields().iter().position(|f| f == k));
            let found = if found.is_empty() {
                "none".to_string()
            } else {
                found.join(", ")
            };
            return Err(format!(
                "step \"{}\": expected exactly one of sql, {}; found {found}",
                raw.name,
                StageSpec::KEYS.join(", ")
            ));
        }
        let (_, kind) = raw.kinds.remove(0);
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
    pub format: Format,
    #[serde(default)]
    pub partition_by: Vec<String>,
    #[serde(default)]
    pub mode: SinkMode,
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
    /// Layout (see `sinks::layout`): sort order, sizes, bloom filters,
    /// column descriptions.
    #[serde(default)]
    pub sort_by: Vec<String>,
    /// e.g. `512MiB`.
    pub target_file_size: Option<String>,
    pub row_group_rows: Option<usize>,
    #[serde(default)]
    pub bloom_filters: Vec<String>,
    #[serde(default)]
    pub descriptions: std::collections::BTreeMap<String, String>,
}

/// Reads and parses a pipeline file.
///
/// # Errors
/// [`Error::Invalid`] naming the file (and the line, where the YAML parser
/// gives one) when the file cannot be read or does not match the format.
pub fn load(file: &Path) -> Result<PipelineSpec> {
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::invalid(&shown, vec![Problem::general(format!("cannot read the file: {e}"))]))?;
    parse(&text).map_err(|problem| Error::invalid(&shown, vec![Problem::general(problem.replace("<input>", &shown))]))
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
