//! The planning pass: register the sources (footers, never rows) and plan
//! every step against their real schemas, collecting every problem.
//!
//! `validate` and `plan` run it on their own ([`check`]); `run` runs it
//! before reading any row ([`check_before_run`]), so a pipeline that cannot
//! run fails with exit 2 and nothing read. SQL steps are planned; stage
//! steps check their input columns and contribute empty tables of their
//! output schema.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::empty::EmptyTable;
use datafusion::logical_expr::LogicalPlan;

use super::plan::{Plan, Step, StepKind};
use crate::checks;
use crate::engine::Engine;
use crate::error::{Error, Problem, Result};
use crate::stages::Stage;

/// What the planning pass learned: each table's schema and logical plan.
#[derive(Debug)]
pub struct Checked {
    pub tables: Vec<TableInfo>,
}

/// One table of the plan.
#[derive(Debug)]
pub struct TableInfo {
    pub name: String,
    /// `source`, `sql`, `clv`, ...
    pub kind: String,
    /// The step that makes it (its own name for a step's main table).
    pub step: Option<String>,
    pub inputs: Vec<String>,
    pub schema: SchemaRef,
    pub plan: Option<LogicalPlan>,
}

/// The engine a plan runs on, with crmflow's functions registered.
///
/// # Errors
/// The engine cannot be built.
pub fn engine(plan: &Plan) -> Result<Engine> {
    Engine::new(&plan.engine, plan.storage.clone(), crate::stages::functions())
}

/// Registers the sources and plans every step without reading rows; with
/// `check_storage`, also probes every sink location for writability.
///
/// # Errors
/// [`Error::Invalid`] with every problem found.
pub async fn check(plan: &Plan, check_storage: bool) -> Result<Checked> {
    let engine = engine(plan)?;
    let mut problems = Vec::new();
    if check_storage {
        for sink in &plan.sinks {
            if let Err(e) = crate::sinks::probe(&engine, sink, "validate").await {
                problems.push(Problem::general(plan.vars.mask(&e.render())));
            }
        }
    }
    walk(plan, &engine, problems, false).await
}

/// The planning pass of `run`, on a planning engine that shares the run's
/// runtime (its object stores and footer cache, so footers are read once).
/// An unreadable source is the run's failure (exit 1), not a problem.
///
/// # Errors
/// The source's error, or [`Error::Invalid`] with every problem found.
pub async fn check_before_run(plan: &Plan, run: &Engine) -> Result<Checked> {
    walk(plan, &run.planning(), Vec::new(), true).await
}

async fn walk(plan: &Plan, engine: &Engine, mut problems: Vec<Problem>, before_run: bool) -> Result<Checked> {
    let ctx = engine.context();
    let mut tables = Vec::new();
    let mut failed: HashSet<String> = HashSet::new();
    for s in &plan.sources {
        match crate::sources::register(engine, s).await {
            Ok(schema) => {
                let subject = format!("source \"{}\"", s.name);
                problems.extend(checks::validate_against(&subject, &s.checks, &schema));
                if s.quarantine.is_some() {
                    for c in super::quarantine::COLUMNS {
                        if schema.field_with_name(c).is_ok() {
                            problems.push(Problem::new(
                                &subject,
                                format!("has a column \"{c}\", which its quarantine adds; rename it"),
                            ));
                        }
                    }
                }
                tables.push(TableInfo {
                    name: s.name.clone(),
                    kind: "source".into(),
                    step: None,
                    inputs: vec![],
                    schema,
                    plan: None,
                });
            }
            Err(e) if before_run => return Err(e),
            Err(e) => {
                problems.push(Problem::general(plan.vars.mask(&e.render())));
                failed.insert(s.name.clone());
            }
        }
    }
    for step in &plan.steps {
        if step.inputs.iter().any(|i| failed.contains(i)) {
            failed.extend(step.outputs.iter().cloned());
            continue;
        }
        match schemas(step, engine).await {
            Ok((schemas, lp)) => {
                for (name, schema) in step.outputs.iter().zip(schemas) {
                    let provider: Arc<dyn datafusion::catalog::TableProvider> = match &lp {
                        Some(lp) => Arc::new(datafusion::catalog::view::ViewTable::new(lp.clone(), None)),
                        None => Arc::new(EmptyTable::new(schema.clone())),
                    };
                    let _ = ctx.register_table(name.as_str(), provider);
                    tables.push(TableInfo {
                        name: name.clone(),
                        kind: step.kind.name().into(),
                        step: Some(step.name.clone()),
                        inputs: step.inputs.clone(),
                        schema,
                        plan: lp.clone(),
                    });
                }
            }
            Err(p) => {
                problems.extend(p);
                failed.extend(step.outputs.iter().cloned());
            }
        }
    }
    for sink in &plan.sinks {
        if failed.contains(&sink.table) {
            continue;
        }
        let Some(t) = tables.iter().find(|t| t.name == sink.table) else {
            continue;
        };
        let subject = format!("sink \"{}\"", sink.table);
        for c in &sink.partition_by {
            if t.schema.field_with_name(c).is_err() {
                problems.push(Problem::new(
                    &subject,
                    format!(
                        "partition_by column \"{c}\" is not in table \"{}\" (columns: {})",
                        sink.table,
                        checks::column_list(&t.schema)
                    ),
                ));
            }
        }
        for m in crate::sinks::layout::validate(&sink.layout, &sink.partition_by, &t.schema, &sink.table) {
            problems.push(Problem::new(&subject, m));
        }
        problems.extend(checks::validate_against(&subject, &sink.checks, &t.schema));
    }
    // `relationships` targets: sources for a source's checks (they run
    // before any step), any table for a sink's.
    let all: Vec<(&str, &datafusion::arrow::datatypes::Schema)> =
        tables.iter().map(|t| (t.name.as_str(), t.schema.as_ref())).collect();
    let sources: Vec<(&str, &datafusion::arrow::datatypes::Schema)> = tables
        .iter()
        .filter(|t| t.kind == "source")
        .map(|t| (t.name.as_str(), t.schema.as_ref()))
        .collect();
    for s in plan.sources.iter().filter(|s| !failed.contains(&s.name)) {
        let subject = format!("source \"{}\"", s.name);
        problems.extend(checks::validate_references(&subject, &s.checks, &sources, "a source"));
    }
    for sink in plan.sinks.iter().filter(|s| !failed.contains(&s.table)) {
        let subject = format!("sink \"{}\"", sink.table);
        problems.extend(checks::validate_references(
            &subject,
            &sink.checks,
            &all,
            "a source or a step",
        ));
    }
    if problems.is_empty() {
        Ok(Checked { tables })
    } else {
        Err(Error::invalid(plan.file.display(), problems))
    }
}

/// The output schemas of a step (and its logical plan, for SQL), checked
/// against what `engine` has registered, without reading rows.
///
/// # Errors
/// Every problem found, about the step and placed at its line.
pub async fn schemas(
    step: &Step,
    engine: &Engine,
) -> std::result::Result<(Vec<SchemaRef>, Option<LogicalPlan>), Vec<Problem>> {
    match &step.kind {
        StepKind::Sql(sql) => match crate::transform::plan(engine.context(), sql).await {
            Ok(lp) => Ok((vec![Arc::new(lp.schema().as_arrow().clone())], Some(lp))),
            Err(e) => Err(vec![
                Problem::step(&step.name, with_origin(&e.to_string(), &sql.origin)).at(step.line),
            ]),
        },
        StepKind::Stage(stage) => match stage.schemas(&step.name, engine).await {
            Ok(s) => Ok((s, None)),
            Err(p) => Err(p.into_iter().map(|q| q.at(step.line)).collect()),
        },
    }
}

/// A DataFusion message, prefixed with the SQL file it came from.
fn with_origin(message: &str, origin: &str) -> String {
    let m = message.trim();
    if origin == "inline" {
        m.to_string()
    } else {
        format!("{origin}: {m}")
    }
}
