//! `run --select` and `--defer`: which steps a run computes, which it reads
//! from their published output, and which sinks it writes.
//!
//! A selector is `STEP` (that step), `+STEP` (and every step it reads,
//! transitively), `STEP+` (and every step that reads it, transitively) or
//! `+STEP+`; several are given comma-separated or by repeating `--select`.
//! Only the sinks of tables made by selected steps are written. The
//! unselected steps a selected one reads are computed too (their sinks are
//! not written), unless `--defer`: then each table a selected step reads
//! from an unselected one is read from that table's sink, as published
//! (its `_SUCCESS` present), and nothing upstream of it runs.

use std::collections::{BTreeSet, HashMap};

use super::plan::{Deferred, Plan};
use super::resolve::did_you_mean;
use crate::error::{Error, Problem, Result};
use crate::sources::Source;

/// One `--select` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub step: String,
    pub ancestors: bool,
    pub descendants: bool,
    /// As written (for messages).
    pub text: String,
}

/// Splits the `--select` values at commas and reads the `+`s.
pub fn parse(values: &[String]) -> Vec<Selector> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|text| {
            let ancestors = text.starts_with('+');
            let rest = text.strip_prefix('+').unwrap_or(text);
            let descendants = rest.ends_with('+');
            let step = rest.strip_suffix('+').unwrap_or(rest).to_string();
            Selector {
                step,
                ancestors,
                descendants,
                text: text.to_string(),
            }
        })
        .collect()
}

/// The plan restricted to the selection (see the module docs). With
/// `defer`, the tables read from unselected steps become sources reading
/// their sinks' locations; [`check_deferred`] then checks that each is
/// published.
///
/// # Errors
/// [`Error::Invalid`]: a selected step does not exist, or (with `defer`) a
/// table to defer has no sink.
pub fn select(mut plan: Plan, selectors: &[Selector], defer: bool) -> Result<Plan> {
    let known: Vec<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
    let unknown: Vec<Problem> = selectors
        .iter()
        .filter(|s| !known.contains(&s.step.as_str()))
        .map(|s| {
            Problem::new(
                format!("--select {}", s.text),
                format!("no step is named \"{}\"{}", s.step, did_you_mean(&s.step, &known)),
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(Error::invalid(plan.file.display(), unknown));
    }
    // table -> the step that makes it
    let owner: HashMap<String, String> = plan
        .steps
        .iter()
        .flat_map(|s| s.outputs.iter().map(move |o| (o.clone(), s.name.clone())))
        .collect();
    let reads = |step: &str| -> BTreeSet<String> {
        plan.steps
            .iter()
            .find(|s| s.name == step)
            .map(|s| s.inputs.iter().filter_map(|i| owner.get(i).cloned()).collect())
            .unwrap_or_default()
    };
    let mut selected: BTreeSet<String> = BTreeSet::new();
    for s in selectors {
        selected.insert(s.step.clone());
        if s.ancestors {
            selected.extend(closure(&s.step, |n| reads(n)));
        }
        if s.descendants {
            let readers = |n: &str| -> BTreeSet<String> {
                plan.steps
                    .iter()
                    .filter(|st| reads(&st.name).contains(n))
                    .map(|st| st.name.clone())
                    .collect()
            };
            selected.extend(closure(&s.step, readers));
        }
    }
    let all_sinks = plan.sinks.clone();
    // Sources are read and checked in every run: their quarantines stay.
    plan.sinks
        .retain(|k| k.quarantine_of.is_some() || owner.get(&k.table).is_some_and(|o| selected.contains(o)));
    if defer {
        let mut problems = Vec::new();
        let mut deferred: Vec<Deferred> = Vec::new();
        for step in plan.steps.iter().filter(|s| selected.contains(&s.name)) {
            for table in &step.inputs {
                let Some(up) = owner.get(table).filter(|o| !selected.contains(*o)) else {
                    continue;
                };
                if plan.sources.iter().any(|s| &s.name == table) {
                    continue;
                }
                let kind = plan
                    .steps
                    .iter()
                    .find(|s| &s.name == up)
                    .map_or("sql", |s| s.kind.name());
                let Some(sink) = all_sinks.iter().find(|k| &k.table == table) else {
                    problems.push(Problem::new(
                        "--defer",
                        format!(
                            "step \"{up}\" is not selected and no sink writes its table \"{table}\" (read by step \"{}\"); select it (--select +{}) or give \"{table}\" a sink",
                            step.name, step.name
                        ),
                    ));
                    continue;
                };
                plan.sources.push(Source {
                    name: table.clone(),
                    location: sink.location.clone(),
                    format: sink.format,
                    as_of: None,
                    checks: vec![],
                    quarantine: None,
                });
                let url = sink.location.to_string();
                match deferred.iter_mut().find(|d| &d.step == up) {
                    Some(d) => d.urls.push(url),
                    None => deferred.push(Deferred {
                        step: up.clone(),
                        kind,
                        urls: vec![url],
                    }),
                }
            }
        }
        if !problems.is_empty() {
            return Err(Error::invalid(plan.file.display(), problems));
        }
        plan.steps.retain(|s| selected.contains(&s.name));
        plan.deferred = deferred;
    } else {
        // Steps are in run order: walking backwards reaches every ancestor.
        let mut keep = selected.clone();
        for s in plan.steps.iter().rev() {
            if keep.contains(&s.name) {
                keep.extend(s.inputs.iter().filter_map(|i| owner.get(i).cloned()));
            }
        }
        plan.steps.retain(|s| keep.contains(&s.name));
    }
    Ok(plan)
}

/// Every name reachable from `start` by `next` (without `start`).
fn closure(start: &str, next: impl Fn(&str) -> BTreeSet<String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![start.to_string()];
    while let Some(n) = todo.pop() {
        for m in next(&n) {
            if m != start && seen.insert(m.clone()) {
                todo.push(m);
            }
        }
    }
    seen
}

/// Checks that every deferred table's sink has a published output (its
/// `_SUCCESS`), before anything runs.
///
/// # Errors
/// [`Error::Invalid`] naming each deferred step whose sink was never
/// published, or [`Error::Storage`] when its store cannot be built.
pub async fn check_deferred(plan: &Plan) -> Result<()> {
    let mut problems = Vec::new();
    for d in &plan.deferred {
        for url in &d.urls {
            let Some(src) = plan.sources.iter().find(|s| &s.location.to_string() == url) else {
                continue;
            };
            let store = crate::storage::build_store(&src.location, &plan.storage).map_err(|m| Error::Storage {
                url: url.clone(),
                cause: m.into(),
            })?;
            let marker = src.location.as_dir().child_path(crate::sinks::publish::SUCCESS);
            if object_store::ObjectStoreExt::head(store.as_ref(), &marker)
                .await
                .is_err()
            {
                problems.push(Problem::new(
                    "--defer",
                    format!(
                        "step \"{}\" is not selected and its sink \"{}\" has no published output ({url} has no {})",
                        d.step,
                        src.name,
                        crate::sinks::publish::SUCCESS
                    ),
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid(plan.file.display(), problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_split_at_commas_and_read_the_pluses() {
        let got = parse(&["+a,b+".to_string(), " +c+ ".to_string(), "d".to_string()]);
        let flags: Vec<(&str, bool, bool)> = got
            .iter()
            .map(|s| (s.step.as_str(), s.ancestors, s.descendants))
            .collect();
        assert_eq!(
            flags,
            vec![
                ("a", true, false),
                ("b", false, true),
                ("c", true, true),
                ("d", false, false)
            ]
        );
        assert_eq!(got[2].text, "+c+");
    }
}
