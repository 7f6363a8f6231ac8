//! What a run and a plan look like to a person and to a scheduler: the run
//! summary ([`RunSummary`], serialized as the last stdout line and the
//! `--run-results` file, rendered for stderr by [`render_summary`]) and the
//! text of `crmflow plan` ([`render_plan`]).

use std::fmt::Write as _;

use serde::Serialize;

use super::check::Checked;
use super::plan::Plan;
use crate::checks::Outcome;

/// How a run ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Success,
    Failed,
    /// The pipeline or the command line is invalid (exit 2).
    Invalid,
    Interrupted,
}

impl RunStatus {
    /// The name as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Success => "success",
            RunStatus::Failed => "failed",
            RunStatus::Invalid => "invalid",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Success,
    Error,
    /// Not run: it reads a step that failed, or `--fail-fast` stopped the run.
    Skipped,
    /// Not computed: read from its sinks' published output (`--defer`).
    Deferred,
}

impl StepStatus {
    /// The name as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Success => "success",
            StepStatus::Error => "error",
            StepStatus::Skipped => "skipped",
            StepStatus::Deferred => "deferred",
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub name: String,
    pub kind: &'static str,
    pub status: StepStatus,
    /// Why, unless it succeeded: the error, `depends on failed step "x"`,
    /// `deferred to URL`.
    pub reason: Option<String>,
    /// Rows, when the step was computed (cached); `None` for a view that
    /// streamed into its consumers.
    pub rows: Option<u64>,
    pub seconds: f64,
}

impl StepReport {
    /// A step that did not succeed (rows unknown).
    pub fn not_run(name: &str, kind: &'static str, status: StepStatus, reason: String, seconds: f64) -> Self {
        StepReport {
            name: name.to_string(),
            kind,
            status,
            reason: Some(reason),
            rows: None,
            seconds,
        }
    }
}

/// What one sink wrote.
#[derive(Debug, Clone, Serialize)]
pub struct SinkReport {
    pub table: String,
    pub url: String,
    pub mode: &'static str,
    pub rows: u64,
    pub files: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// A check outcome with where it ran.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub on: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The result of a run, printed as the last line of `run` and written by
/// `--run-results`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub pipeline: String,
    pub status: RunStatus,
    pub vars: std::collections::BTreeMap<String, String>,
    pub started_at: String,
    pub seconds: f64,
    pub steps: Vec<StepReport>,
    pub sinks: Vec<SinkReport>,
    pub checks: Vec<CheckReport>,
    /// Sinks whose new output is visible (all of them after a success).
    pub published: Vec<String>,
    /// Sinks that keep their previous output after a failed publish.
    pub not_published: Vec<String>,
    pub error: Option<String>,
}

/// The one-screen summary for stderr.
pub fn render_summary(s: &RunSummary) -> String {
    let mut e = String::new();
    let _ = writeln!(
        e,
        "\nrun {} of {}: {} in {:.2}s",
        s.run_id,
        s.pipeline,
        s.status.as_str(),
        s.seconds
    );
    if !s.steps.is_empty() {
        let _ = writeln!(e, "  {:<28} {:<8} {:>12} {:>9}", "step", "kind", "rows", "seconds");
        for st in &s.steps {
            let rows = match st.status {
                StepStatus::Success => st.rows.map_or("(view)".to_string(), |r| r.to_string()),
                other => other.as_str().to_string(),
            };
            let _ = write!(e, "  {:<28} {:<8} {:>12} {:>9.3}", st.name, st.kind, rows, st.seconds);
            match &st.reason {
                Some(r) => {
                    let _ = writeln!(e, "  {}", r.replace('\n', " "));
                }
                None => {
                    let _ = writeln!(e);
                }
            }
        }
    }
    if !s.sinks.is_empty() {
        let _ = writeln!(
            e,
            "  {:<28} {:<8} {:>12} {:>9}  location",
            "sink", "files", "rows", "seconds"
        );
        for sk in &s.sinks {
            let _ = writeln!(
                e,
                "  {:<28} {:<8} {:>12} {:>9.3}  {}",
                sk.table, sk.files, sk.rows, sk.seconds, sk.url
            );
        }
    }
    let failed = s.checks.iter().filter(|c| !c.outcome.passed).count();
    if !s.checks.is_empty() {
        let _ = writeln!(e, "  checks: {} run, {failed} failed", s.checks.len());
    }
    match s.status {
        RunStatus::Success if !s.sinks.is_empty() => {
            let _ = writeln!(e, "  published {} sinks", s.sinks.len());
        }
        RunStatus::Success | RunStatus::Running => {}
        RunStatus::Failed | RunStatus::Invalid | RunStatus::Interrupted if s.published.is_empty() => {
            let _ = writeln!(e, "  nothing was published; previous outputs are untouched");
        }
        RunStatus::Failed | RunStatus::Invalid | RunStatus::Interrupted => {
            let _ = writeln!(
                e,
                "  published: {}; not published: {} (previous outputs untouched)",
                s.published.join(", "),
                s.not_published.join(", ")
            );
        }
    }
    e
}

/// The text of `crmflow plan`: sources, steps in run order, sinks, then each
/// table's schema and each SQL step's logical plan.
pub fn render_plan(plan: &Plan, checked: &Checked) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "pipeline {} ({})", plan.name, plan.file.display());
    let _ = writeln!(out, "\nsources:");
    for s in &plan.sources {
        let _ = writeln!(out, "  {} <- {}", s.name, s.location);
    }
    let _ = writeln!(out, "\nsteps, in run order:");
    for (i, s) in plan.steps.iter().enumerate() {
        let extra: Vec<&str> = s.outputs.iter().skip(1).map(String::as_str).collect();
        let _ = writeln!(
            out,
            "  {}. {} [{}{}] <- {}{}",
            i + 1,
            s.name,
            s.kind.name(),
            if s.cache { ", cached" } else { "" },
            if s.inputs.is_empty() {
                "-".to_string()
            } else {
                s.inputs.join(", ")
            },
            if extra.is_empty() {
                String::new()
            } else {
                format!("; also makes {}", extra.join(", "))
            }
        );
    }
    let _ = writeln!(out, "\nsinks:");
    for s in &plan.sinks {
        let parts = if s.partition_by.is_empty() {
            String::new()
        } else {
            format!(" partitioned by {}", s.partition_by.join(", "))
        };
        let _ = writeln!(out, "  {} -> {} ({}{parts})", s.table, s.location, s.mode.as_str());
    }
    for t in &checked.tables {
        let _ = writeln!(out, "\ntable {} ({}):", t.name, t.kind);
        for f in t.schema.fields() {
            let _ = writeln!(
                out,
                "  {}: {}{}",
                f.name(),
                f.data_type(),
                if f.is_nullable() { "" } else { " not null" }
            );
        }
        if let Some(lp) = &t.plan {
            let _ = writeln!(out, "  logical plan:");
            for line in lp.display_indent().to_string().lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::checks::Severity;

    fn summary(status: RunStatus) -> RunSummary {
        RunSummary {
            run_id: "20261201T000000Z-00000001".into(),
            pipeline: "demo".into(),
            status,
            vars: BTreeMap::from([("as_of".to_string(), "2026-11-24".to_string())]),
            started_at: "2026-12-01T00:00:00.000Z".into(),
            seconds: 1.234,
            steps: vec![
                StepReport {
                    name: "features".into(),
                    kind: "sql",
                    status: StepStatus::Success,
                    reason: None,
                    rows: Some(5000),
                    seconds: 0.0494,
                },
                StepReport {
                    name: "segments".into(),
                    kind: "segment",
                    status: StepStatus::Success,
                    reason: None,
                    rows: None,
                    seconds: 0.1426,
                },
            ],
            sinks: vec![SinkReport {
                table: "features".into(),
                url: "/out/features/".into(),
                mode: "overwrite",
                rows: 5000,
                files: 2,
                bytes: 1000,
                seconds: 0.1011,
            }],
            checks: vec![CheckReport {
                on: "sink \"features\"".into(),
                outcome: Outcome {
                    check: "row_count".into(),
                    severity: Severity::Error,
                    passed: true,
                    failing: 0,
                    message: String::new(),
                },
            }],
            published: vec!["features".into()],
            not_published: vec![],
            error: None,
        }
    }

    #[test]
    fn the_summary_renders_as_documented() {
        let want = "
run 20261201T000000Z-00000001 of demo: success in 1.23s
  step                         kind             rows   seconds
  features                     sql              5000     0.049
  segments                     segment        (view)     0.143
  sink                         files            rows   seconds  location
  features                     2                5000     0.101  /out/features/
  checks: 1 run, 0 failed
  published 1 sinks
";
        assert_eq!(render_summary(&summary(RunStatus::Success)), want);
        // A failure part way through publishing names both lists.
        let mut s = summary(RunStatus::Failed);
        s.not_published = vec!["profile".into(), "model".into()];
        let partly = render_summary(&s);
        assert!(partly.starts_with("\nrun 20261201T000000Z-00000001 of demo: failed in 1.23s\n"));
        assert!(
            partly.ends_with(
                "  checks: 1 run, 0 failed\n  published: features; not published: profile, model (previous outputs untouched)\n"
            ),
            "{partly}"
        );
        s.published.clear();
        let nothing = render_summary(&s);
        assert!(
            nothing.ends_with("  checks: 1 run, 0 failed\n  nothing was published; previous outputs are untouched\n")
        );
    }

    #[test]
    fn the_summary_serializes_statuses_and_severities_as_names() {
        let json = serde_json::to_value(summary(RunStatus::Interrupted)).unwrap();
        assert_eq!(json["status"], "interrupted");
        assert_eq!(json["checks"][0]["severity"], "error");
        assert_eq!(json["checks"][0]["on"], "sink \"features\"");
        assert_eq!(json["steps"][1]["rows"], serde_json::Value::Null);
    }

    #[tokio::test]
    async fn the_plan_renders_steps_sinks_and_schemas() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("data")).unwrap();
        let yaml = format!(
            "name: tiny
sources:
  numbers: {{url: \"{}/data/n.parquet\"}}
steps:
  - name: doubled
    sql: SELECT n * 2 AS m FROM numbers
sinks:
  - table: doubled
    url: \"{}/out/doubled/\"
",
            d.display(),
            d.display()
        );
        // One Parquet file with a non-null Int64 column n.
        let ctx = datafusion::prelude::SessionContext::new();
        let df = ctx.sql("SELECT CAST(1 AS BIGINT) AS n").await.unwrap();
        df.write_parquet(
            d.join("data/n.parquet").to_str().unwrap(),
            datafusion::dataframe::DataFrameWriteOptions::new().with_single_file_output(true),
            None,
        )
        .await
        .unwrap();
        let spec = crate::config::parse(&yaml).unwrap();
        let plan = super::super::resolve::resolve(spec, Path::new("tiny.yaml"), &BTreeMap::new()).unwrap();
        let checked = super::super::check::check(&plan, false).await.unwrap();
        let root = d.display();
        let want = format!(
            "pipeline tiny (tiny.yaml)

sources:
  numbers <- {root}/data/n.parquet

steps, in run order:
  1. doubled [sql] <- numbers

sinks:
  doubled -> {root}/out/doubled/ (overwrite)

table numbers (source):
  n: Int64 not null

table doubled (sql):
  m: Int64 not null
  logical plan:
    Projection: numbers.n * Int64(2) AS m
      TableScan: numbers
"
        );
        assert_eq!(render_plan(&plan, &checked), want);
    }
}
