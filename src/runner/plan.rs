//! The resolved pipeline: vars bound, names checked, steps in run order.
//!
//! A [`Plan`] is what [`super::resolve::resolve`] makes of a pipeline file
//! and all that the executor reads; nothing after it looks at YAML again.
//! [`order`] derives the run order from the references between tables.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use crate::engine::Settings;
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
    /// A hash of the pipeline file and every step's SQL as bound: with the
    /// vars, what a `_SUCCESS` manifest records to tell whether an output is
    /// already up to date (`--backfill` skips such values).
    pub hash: String,
    /// Steps not selected whose tables are read from their sinks' published
    /// output instead (`--defer`); those tables are in `sources`.
    pub deferred: Vec<Deferred>,
}

/// A step read from its published output instead of computed.
#[derive(Debug, Clone)]
pub struct Deferred {
    pub step: String,
    pub kind: &'static str,
    /// The locations its tables are read from.
    pub urls: Vec<String>,
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
