//! The resolved pipeline: vars bound, names checked, steps in run order.
//!
//! A [`Plan`] is what [`super::resolve::resolve`] makes of a pipeline file
//! and all that the executor reads; nothing after it looks at YAML again.
//! [`order`] derives the run order from the references between tables.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use crate::engine::Settings;
use crate::error::{Error, Problem};
use crate::sinks::Sink;
use crate::sources::Source;
use crate::stages::{Stage, StageKind};
use crate::transform::SqlStep;
use crate::vars::Vars;

/// A pipeline ready to run.
#[derive(Debug)]
pub struct Plan {
    pub name: String,
    /// The pipeline file, as given.
    pub file: PathBuf,
    pub vars: Vars,
    pub engine: Settings,
    /// Object-store options (values may be secrets: never shown).
    pub storage: BTreeMap<String, String>,
    pub sources: Vec<Source>,
    /// In run order: every step after the steps it reads.
    pub steps: Vec<Step>,
    pub sinks: Vec<Sink>,
    /// The HTML run report's location (`report:` or `--report`).
    pub report: Option<crate::storage::Location>,
}

/// One step.
#[derive(Debug)]
pub struct Step {
    pub name: String,
    pub kind: StepKind,
    /// Tables it reads (sources, steps or their extra tables).
    pub inputs: Vec<String>,
    /// Tables it makes: its own name first, then extras like `<name>_profile`.
    pub outputs: Vec<String>,
    /// Keep the result in memory for its consumers.
    pub cache: bool,
    /// Line of the step in the pipeline file, when known.
    pub line: Option<u64>,
}

/// The step kinds: SQL, or a stage (whose kinds [`StageKind`] lists).
#[derive(Debug)]
pub enum StepKind {
    Sql(SqlStep),
    Stage(StageKind),
}

impl StepKind {
    /// The YAML key of the kind.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Sql(_) => "sql",
            StepKind::Stage(s) => s.name(),
        }
    }

    /// Extra tables beside the step's own (suffixes to its name).
    pub fn extra_suffixes(&self) -> &'static [&'static str] {
        match self {
            StepKind::Sql(_) => &[],
            StepKind::Stage(s) => s.extra_suffixes(),
        }
    }
}

/// Orders `nodes` (name, the names it depends on) so that each comes after
/// its dependencies; ties keep file order.
///
/// # Errors
/// The names on a cycle, in order, e.g. `["a", "b", "a"]`.
pub fn order(nodes: &[(String, Vec<String>)]) -> Result<Vec<usize>, Vec<String>> {
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, (n, _))| (n.as_str(), i)).collect();
    let deps: Vec<BTreeSet<usize>> = nodes
        .iter()
        .map(|(_, d)| d.iter().filter_map(|n| index.get(n.as_str()).copied()).collect())
        .collect();
    let mut done = vec![false; nodes.len()];
    let mut out = Vec::with_capacity(nodes.len());
    while out.len() < nodes.len() {
        let next = (0..nodes.len()).find(|&i| !done[i] && deps[i].iter().all(|&d| done[d]));
        match next {
            Some(i) => {
                done[i] = true;
                out.push(i);
            }
            None => {
                // Walk from any pending node along pending deps until a repeat.
                let mut path = Vec::new();
                let mut at = (0..nodes.len()).find(|&i| !done[i]).unwrap_or(0);
                while !path.contains(&at) {
                    path.push(at);
                    at = deps[at].iter().copied().find(|&d| !done[d]).unwrap_or(at);
                }
                let start = path.iter().position(|&p| p == at).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|&i| nodes[i].0.clone()).collect();
                cycle.push(nodes[at].0.clone());
                return Err(cycle);
            }
        }
    }
    Ok(out)
}

/// Keeps the selected steps, the steps they read (transitively), and the
/// sinks of the selected steps' tables; sources stay (unused ones cost a
/// footer read).
///
/// # Errors
/// [`crate::Error::Invalid`] naming a selected step that does not exist.
pub fn select(mut plan: Plan, names: &[String]) -> crate::Result<Plan> {
    let unknown: Vec<Problem> = names
        .iter()
        .filter(|n| !plan.steps.iter().any(|s| &s.name == *n))
        .map(|n| Problem::new(format!("--select {n}"), format!("no step is named \"{n}\"")))
        .collect();
    if !unknown.is_empty() {
        return Err(Error::invalid(plan.file.display(), unknown));
    }
    let owner: HashMap<&str, &str> = plan
        .steps
        .iter()
        .flat_map(|s| s.outputs.iter().map(move |o| (o.as_str(), s.name.as_str())))
        .collect();
    let mut keep: BTreeSet<String> = names.iter().cloned().collect();
    // Steps are in run order: walking backwards reaches every ancestor.
    for s in plan.steps.iter().rev() {
        if keep.contains(&s.name) {
            for i in &s.inputs {
                if let Some(o) = owner.get(i.as_str()) {
                    keep.insert((*o).to_string());
                }
            }
        }
    }
    let selected: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    plan.sinks
        .retain(|k| owner.get(k.table.as_str()).is_some_and(|o| selected.contains(o)));
    plan.steps.retain(|s| keep.contains(&s.name));
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str, deps: &[&str]) -> (String, Vec<String>) {
        (name.to_string(), deps.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn orders_by_references_not_position() {
        let nodes = vec![
            n("scores", &["clv", "features"]),
            n("clv", &["tx"]),
            n("features", &["tx"]),
        ];
        let o: Vec<&str> = order(&nodes).unwrap().iter().map(|&i| nodes[i].0.as_str()).collect();
        assert_eq!(o, vec!["clv", "features", "scores"]);
    }

    #[test]
    fn reports_the_cycle() {
        let nodes = vec![n("a", &["c"]), n("b", &["a"]), n("c", &["b"]), n("d", &[])];
        assert_eq!(order(&nodes).unwrap_err(), vec!["a", "c", "b", "a"]);
    }
}
