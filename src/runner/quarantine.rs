//! `quarantine:` on a source: the rows its row-level checks reject go to a
//! Parquet output of their own, with `_check` (the check's label) and
//! `_run_id`, and every step reads the source without them.
//!
//! The quarantine is a sink of the plan, `<source>_quarantine`, so it is
//! probed, locked, staged and published with the run's other sinks (same
//! two-phase protocol, `mode: overwrite`): a run that fails publishes no
//! quarantine either. Its rows are one query (a `UNION ALL` of each check's
//! failing rows, so a row failing two checks appears once per check), and
//! the source every step reads is a view that leaves out the rows any
//! row-level check rejects: both stream, nothing is collected.
//!
//! With a quarantine, a check's threshold bounds the quarantined rows: past
//! it, the check fails as any check does (`severity: error` fails the run;
//! `warn` logs, and the rows still go to the quarantine). A row-level check
//! that gives no threshold gets [`DEFAULT_RATE`].

use std::collections::HashMap;

use datafusion::logical_expr::{Expr, lit};
use datafusion::prelude::DataFrame;

use crate::checks::{self, CheckSpec, Outcome};
use crate::engine::Engine;
use crate::engine::expr::column;
use crate::error::{Error, Problem, Result};
use crate::sinks::{Sink, SinkMode};
use crate::sources::Source;

/// `max_failure_rate` of a row-level check of a quarantined source that
/// gives neither bound: a source where more than 1% of the rows fail a
/// check is broken, not dirty.
pub const DEFAULT_RATE: f64 = 0.01;

/// The columns a quarantine adds to the source's.
pub const COLUMNS: [&str; 2] = ["_check", "_run_id"];

/// The name of a source's quarantine table and sink.
pub fn table_name(source: &str) -> String {
    format!("{source}_quarantine")
}

/// Gives the row-level checks without a threshold the default one.
pub fn default_thresholds(checks: &mut [CheckSpec]) {
    for c in checks.iter_mut() {
        if c.kind.is_row_level() && c.threshold == checks::Threshold::default() {
            c.threshold.max_failure_rate = Some(DEFAULT_RATE);
        }
    }
}

/// The quarantine sinks of `sources`, checked against each other, the
/// sources, the pipeline's sinks and the names of tables (`owner`: table ->
/// step, `""` for a source).
pub fn sinks(
    sources: &[Source],
    pipeline_sinks: &[Sink],
    owner: &HashMap<String, String>,
    p: &mut Vec<Problem>,
) -> Vec<Sink> {
    let overlap = |a: &crate::storage::Location, b: &crate::storage::Location| {
        let (a, b) = (a.as_dir().url().to_string(), b.as_dir().url().to_string());
        a.starts_with(&b) || b.starts_with(&a)
    };
    let mut out: Vec<Sink> = Vec::new();
    for s in sources {
        let Some(location) = &s.quarantine else { continue };
        let problem = |m: String| Problem::source(&s.name, m);
        let before = p.len();
        if !s.checks.iter().any(|c| c.kind.is_row_level()) {
            p.push(problem(
                "quarantine needs a row-level check (unique, not_null, range, accepted_values, relationships, expression) whose failing rows it takes".into(),
            ));
        }
        if location.parent_and_name().is_none() {
            p.push(problem(format!(
                "quarantine {location} is the root of its store; write below a prefix (e.g. {location}quarantine/)"
            )));
        }
        let table = table_name(&s.name);
        if let Some(step) = owner.get(&table) {
            let what = if step.is_empty() {
                "a source".to_string()
            } else {
                format!("step \"{step}\"")
            };
            p.push(problem(format!(
                "quarantine: its table \"{table}\" clashes with {what}"
            )));
        }
        for src in sources.iter().filter(|o| overlap(&o.location, location)) {
            p.push(problem(format!(
                "quarantine {location} overlaps source \"{}\" ({}); a quarantine must not replace a source",
                src.name, src.location
            )));
        }
        for k in pipeline_sinks.iter().filter(|k| overlap(&k.location, location)) {
            p.push(problem(format!(
                "quarantine {location} overlaps sink \"{}\" ({})",
                k.table, k.location
            )));
        }
        for q in out.iter().filter(|q| overlap(&q.location, location)) {
            p.push(problem(format!(
                "quarantine {location} overlaps the quarantine of source \"{}\" ({})",
                q.quarantine_of.as_deref().unwrap_or_default(),
                q.location
            )));
        }
        if p.len() == before {
            out.push(Sink {
                table,
                location: location.clone(),
                staging_root: location.clone(),
                format: crate::config::Format::Parquet,
                partition_by: vec![],
                mode: SinkMode::Overwrite,
                checks: vec![],
                quarantine_of: Some(s.name.clone()),
                layout: Default::default(),
            });
        }
    }
    out
}

/// Orders sources so that a source comes after the sources its
/// `relationships` checks read (which then see them without their
/// quarantined rows); sources in a cycle keep their order.
pub fn order(sources: Vec<Source>) -> Vec<Source> {
    let nodes: Vec<(String, Vec<String>)> = sources
        .iter()
        .map(|s| {
            let reads = s
                .checks
                .iter()
                .filter_map(|c| match &c.kind {
                    checks::CheckKind::Relationships(r) if r.to_table != s.name => Some(r.to_table.clone()),
                    _ => None,
                })
                .collect();
            (s.name.clone(), reads)
        })
        .collect();
    match super::plan::order(&nodes) {
        Ok(order) => {
            let mut slots: Vec<Option<Source>> = sources.into_iter().map(Some).collect();
            order.into_iter().filter_map(|i| slots[i].take()).collect()
        }
        Err(_) => sources,
    }
}

/// After a quarantined source's checks passed: registers its quarantine
/// table (`<source>_quarantine`, for its sink) and replaces the source by
/// its rows that no row-level check rejects; records the quarantined rows
/// in `outcomes` (one per check, in order) and logs them.
///
/// # Errors
/// A plan DataFusion cannot build, naming the source.
pub async fn apply(engine: &Engine, source: &Source, outcomes: &mut [Outcome], run_id: &str) -> Result<()> {
    let Some(location) = &source.quarantine else {
        return Ok(());
    };
    let ctx = engine.context();
    let name = source.name.as_str();
    let err = |e: datafusion::error::DataFusionError| Error::source(name, location, format!("quarantine: {e}"));
    let raw = ctx.table(name).await.map_err(err)?;
    let columns: Vec<Expr> = raw.schema().fields().iter().map(|f| column(f.name())).collect();
    let mut parts: Option<DataFrame> = None;
    let mut row_level: Vec<CheckSpec> = Vec::new();
    for (c, o) in source.checks.iter().zip(outcomes.iter_mut()) {
        let Some(failing) = checks::failing_rows(&c.kind, &raw, ctx).await.map_err(err)? else {
            continue;
        };
        row_level.push(c.clone());
        let mut select = columns.clone();
        select.push(lit(c.kind.label()).alias(COLUMNS[0]));
        select.push(lit(run_id).alias(COLUMNS[1]));
        let part = failing.select(select).map_err(err)?;
        parts = Some(match parts {
            None => part,
            Some(p) => p.union(part).map_err(err)?,
        });
        o.quarantined = Some(o.failing);
        if o.failing > 0 {
            tracing::warn!(
                source = name,
                check = %o.check,
                rows = o.failing,
                "source \"{name}\": {} rows failing check {} go to the quarantine at {location}",
                o.failing,
                o.check
            );
        }
    }
    let Some(quarantined) = parts else {
        return Ok(());
    };
    let passing = checks::passing_rows(&raw, &row_level, ctx).await.map_err(err)?;
    ctx.register_table(table_name(name).as_str(), quarantined.into_view())
        .map_err(err)?;
    ctx.deregister_table(name).map_err(err)?;
    ctx.register_table(name, passing.into_view()).map_err(err)?;
    Ok(())
}
