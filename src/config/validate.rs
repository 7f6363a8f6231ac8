//! From a parsed [`PipelineSpec`] to a [`Plan`]: bind vars, read SQL files,
//! resolve every name, order the steps — without reading any data.
//!
//! Every problem is collected before failing (like Vector's `compile`), and
//! each message starts with the thing it is about: `step "segments" (line
//! 23): input "featurs" is neither a source nor a step`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use super::vars::Vars;
use super::{EngineKind, PipelineSpec, StepKindSpec};
use crate::error::{Error, Result};
use crate::runner::plan::{self, Engine, Plan, Sink, Step, StepKind};
use crate::sources::Source;
use crate::stages::Stage;
use crate::storage::Location;

/// Resolves a pipeline.
///
/// # Errors
/// [`Error::Invalid`] listing every problem found.
pub fn resolve(spec: PipelineSpec, file: &Path, overrides: &BTreeMap<String, String>) -> Result<Plan> {
    let shown = file.display().to_string();
    let mut p: Vec<String> = Vec::new();

    for k in overrides.keys() {
        if !spec.vars.contains_key(k) {
            let known: Vec<&str> = spec.vars.keys().map(String::as_str).collect();
            p.push(format!(
                "--var {k}: the pipeline defines no var \"{k}\"{}",
                suggest(k, &known)
                    .map(|s| format!("; did you mean \"{s}\"?"))
                    .unwrap_or_default()
            ));
        }
    }
    let vars = match Vars::resolve(&spec.vars, overrides) {
        Ok(v) => v,
        Err(mut e) => {
            p.append(&mut e);
            Vars::resolve(&BTreeMap::new(), overrides).unwrap_or_default()
        }
    };
    if !valid_name(&spec.name) {
        p.push(format!(
            "name \"{}\": use lowercase letters, digits and _ (starting with a letter or _)",
            spec.name
        ));
    }

    let engine = resolve_engine(&spec.engine, &vars, &mut p);

    let mut storage = BTreeMap::new();
    for (k, v) in &spec.storage {
        let key = k.to_ascii_lowercase();
        if !["aws_", "google_", "azure_"].iter().any(|pre| key.starts_with(pre))
            && !crate::storage::RETRY_KEYS.contains(&key.as_str())
        {
            p.push(format!(
                "storage \"{k}\": option names start with aws_, google_ or azure_ (e.g. aws_endpoint, aws_region), or are one of {}",
                crate::storage::RETRY_KEYS.join(", ")
            ));
            continue;
        }
        match vars.interpolate(v) {
            Ok(v) => {
                storage.insert(key, v);
            }
            Err(e) => p.push(format!("storage \"{k}\": {e}")),
        }
    }

    // Names: sources, steps, and the extra tables of stage steps.
    let mut owner: HashMap<String, String> = HashMap::new(); // table -> producing step ("" for a source)
    let mut step_lines: HashMap<String, u64> = HashMap::new();
    let mut sources = Vec::new();
    for (name, s) in &spec.sources {
        if !valid_name(name) {
            p.push(format!(
                "source \"{name}\": use lowercase letters, digits and _ in names (starting with a letter or _)"
            ));
        }
        owner.insert(name.clone(), String::new());
        let url = match vars.interpolate(&s.url) {
            Ok(u) => u,
            Err(e) => {
                p.push(format!("source \"{name}\": url: {e}"));
                continue;
            }
        };
        match Location::parse(&url) {
            Ok(location) => sources.push(Source {
                name: name.clone(),
                location,
                checks: s.checks.clone(),
            }),
            Err(e) => p.push(format!("source \"{name}\": url: {e}")),
        }
    }

    let base_dir = file.parent().unwrap_or(Path::new("."));
    let mut steps: Vec<Step> = Vec::new();
    let mut cache_overrides: Vec<Option<bool>> = Vec::new();
    for spanned in spec.steps {
        let line = Some(spanned.referenced.line()).filter(|l| *l > 0);
        let at = |name: &str| match line {
            Some(l) => format!("step \"{name}\" (line {l})"),
            None => format!("step \"{name}\""),
        };
        let st = spanned.value;
        let name = st.name.clone();
        if !valid_name(&name) {
            p.push(format!(
                "{}: use lowercase letters, digits and _ in names (starting with a letter or _)",
                at(&name)
            ));
        }
        let kind = match st.kind {
            StepKindSpec::Sql(text) => match vars.overlay(&st.vars).and_then(|v| resolve_sql(&text, base_dir, &v)) {
                Ok((sql, origin, statement)) => {
                    Some(StepKind::Sql(crate::transform::SqlStep { sql, origin, statement }))
                }
                Err(e) => {
                    p.push(format!("{}: {e}", at(&name)));
                    None
                }
            },
            StepKindSpec::Clv(c) => collect(c.resolve(&name, &vars), &name, &at(&name), &mut p).map(StepKind::Clv),
            StepKindSpec::Segment(s) => {
                collect(s.resolve(&name, &vars), &name, &at(&name), &mut p).map(StepKind::Segment)
            }
            StepKindSpec::Predict(s) => {
                collect(s.resolve(&name, &vars), &name, &at(&name), &mut p).map(StepKind::Predict)
            }
        };
        let Some(kind) = kind else { continue };
        let inputs = match &kind {
            StepKind::Sql(s) => {
                match crate::transform::references(&datafusion::prelude::SessionContext::new(), &s.statement) {
                    Ok(r) => r,
                    Err(e) => {
                        p.push(format!("{}: {e}", at(&name)));
                        continue;
                    }
                }
            }
            StepKind::Clv(c) => c.inputs(),
            StepKind::Segment(s) => s.inputs(),
            StepKind::Predict(s) => s.inputs(),
        };
        let mut outputs = vec![name.clone()];
        outputs.extend(kind.extra_suffixes().iter().map(|s| format!("{name}{s}")));
        for o in &outputs {
            if let Some(prev) = owner.get(o) {
                let what = match (prev.is_empty(), step_lines.get(prev)) {
                    (true, _) => "a source".to_string(),
                    (false, Some(l)) => format!("step \"{prev}\" (line {l})"),
                    (false, None) => format!("step \"{prev}\""),
                };
                if o == &name {
                    p.push(format!("{}: the name is already used by {what}", at(&name)));
                } else {
                    p.push(format!("{}: its table \"{o}\" clashes with {what}", at(&name)));
                }
            } else {
                owner.insert(o.clone(), name.clone());
            }
        }
        if let Some(l) = line {
            step_lines.entry(name.clone()).or_insert(l);
        }
        cache_overrides.push(st.cache);
        steps.push(Step {
            name,
            kind,
            inputs,
            outputs,
            cache: false,
            line,
        });
    }

    // Every reference must name a source or a step's table.
    let known: Vec<&str> = owner.keys().map(String::as_str).collect();
    let unknown = |what: &str, name: &str| {
        format!(
            "{what}: table \"{name}\" is neither a source nor a step{}",
            suggest(name, &known)
                .map(|s| format!("; did you mean \"{s}\"?"))
                .unwrap_or_default()
        )
    };
    for s in &steps {
        for i in &s.inputs {
            if !owner.contains_key(i) {
                let at = match s.line {
                    Some(l) => format!("step \"{}\" (line {l})", s.name),
                    None => format!("step \"{}\"", s.name),
                };
                p.push(unknown(&at, i));
            }
        }
    }

    // Sinks.
    let mut sinks = Vec::new();
    let mut sink_urls: BTreeSet<String> = BTreeSet::new();
    for spanned in spec.sinks {
        let line = spanned.referenced.line();
        let s = spanned.value;
        let at = if line > 0 {
            format!("sink \"{}\" (line {line})", s.table)
        } else {
            format!("sink \"{}\"", s.table)
        };
        if !owner.contains_key(&s.table) {
            p.push(unknown(&at, &s.table));
        }
        let url = match vars.interpolate(&s.url) {
            Ok(u) => u,
            Err(e) => {
                p.push(format!("{at}: url: {e}"));
                continue;
            }
        };
        let location = match Location::parse(&url) {
            Ok(l) => l.as_dir(),
            Err(e) => {
                p.push(format!("{at}: url: {e}"));
                continue;
            }
        };
        if location.parent_and_name().is_none() {
            p.push(format!(
                "{at}: url {location} is the root of its store; write below a prefix (e.g. {}out/)",
                location
            ));
        }
        if !sink_urls.insert(location.url().to_string()) {
            p.push(format!("{at}: another sink already writes to {location}"));
        }
        for src in &sources {
            let (a, b) = (src.location.as_dir().url().to_string(), location.url().to_string());
            if a.starts_with(&b) || b.starts_with(&a) {
                p.push(format!(
                    "{at}: url {location} overlaps source \"{}\" ({}); a sink must not replace its own input",
                    src.name, src.location
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for c in &s.partition_by {
            if !seen.insert(c) {
                p.push(format!("{at}: partition_by lists \"{c}\" twice"));
            }
        }
        if s.mode == super::SinkMode::OverwritePartitions && s.partition_by.is_empty() {
            p.push(format!("{at}: mode overwrite_partitions needs partition_by"));
        }
        sinks.push(Sink {
            table: s.table,
            location,
            partition_by: s.partition_by,
            mode: s.mode,
            checks: s.checks,
        });
    }

    // Run order from the references (a reference to an extra table depends
    // on the step that makes it).
    let nodes: Vec<(String, Vec<String>)> = steps
        .iter()
        .map(|s| {
            let deps = s
                .inputs
                .iter()
                .filter_map(|i| owner.get(i).filter(|o| !o.is_empty()).cloned())
                .filter(|o| o != &s.name || s.inputs.iter().any(|i| i == &s.name))
                .collect();
            (s.name.clone(), deps)
        })
        .collect();
    let order = match plan::order(&nodes) {
        Ok(o) => o,
        Err(cycle) => {
            if cycle.len() == 2 {
                p.push(format!("step \"{}\" reads its own output", cycle[0]));
            } else {
                let reads: Vec<String> = cycle.iter().skip(1).map(|c| format!("\"{c}\"")).collect();
                p.push(format!(
                    "steps form a cycle: \"{}\" reads {}",
                    cycle[0],
                    reads.join(", which reads ")
                ));
            }
            (0..steps.len()).collect()
        }
    };

    if !p.is_empty() {
        return Err(Error::Invalid {
            file: shown,
            problems: p,
        });
    }

    // Cache a step read by more than one step or sink, unless told.
    // Stages read their inputs more than once (fit, then score), so a read
    // by a stage counts twice.
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for s in &steps {
        let weight = if matches!(s.kind, StepKind::Sql(_)) { 1 } else { 2 };
        for i in &s.inputs {
            *readers.entry(i.as_str()).or_default() += weight;
        }
    }
    for s in &sinks {
        *readers.entry(s.table.as_str()).or_default() += 1;
    }
    // An explicit `cache:` wins over the automatic choice.
    let cache: Vec<bool> = steps
        .iter()
        .zip(&cache_overrides)
        .map(|(s, o)| o.unwrap_or(readers.get(s.name.as_str()).copied().unwrap_or(0) > 1))
        .collect();
    let mut slots: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    let mut ordered = Vec::with_capacity(slots.len());
    for i in order {
        if let Some(mut s) = slots[i].take() {
            s.cache = cache[i];
            ordered.push(s);
        }
    }
    Ok(Plan {
        name: spec.name,
        file: file.to_path_buf(),
        vars,
        engine: engine.unwrap_or(Engine {
            kind: EngineKind::Local,
            url: None,
            target_partitions: None,
            memory_limit: None,
        }),
        storage,
        sources,
        steps: ordered,
        sinks,
    })
}

/// Keeps `r`'s value, or its problems with `step "name"` given its line.
fn collect<T>(r: std::result::Result<T, Vec<String>>, name: &str, at: &str, p: &mut Vec<String>) -> Option<T> {
    let plain = format!("step \"{name}\"");
    match r {
        Ok(t) => Some(t),
        Err(e) => {
            p.extend(e.into_iter().map(|m| match m.strip_prefix(&plain) {
                Some(rest) => format!("{at}{rest}"),
                None => m,
            }));
            None
        }
    }
}

fn resolve_engine(e: &super::EngineSpec, vars: &Vars, p: &mut Vec<String>) -> Option<Engine> {
    if e.kind == EngineKind::Ballista {
        p.push("engine: kind \"ballista\" is not built yet; use kind: local".to_string());
        return None;
    }
    if e.url.is_some() {
        p.push("engine: url applies to kind: ballista only".to_string());
    }
    if e.target_partitions == Some(0) {
        p.push("engine: target_partitions must be at least 1".to_string());
    }
    let memory_limit = match &e.memory_limit {
        None => None,
        Some(m) => match vars
            .interpolate(m)
            .map_err(|e| e.to_string())
            .and_then(|m| parse_bytes(&m))
        {
            Ok(b) => Some(b),
            Err(err) => {
                p.push(format!("engine: memory_limit: {err}"));
                None
            }
        },
    };
    Some(Engine {
        kind: e.kind,
        url: e.url.clone(),
        target_partitions: e.target_partitions,
        memory_limit,
    })
}

/// `4GiB`, `512MiB`, `2G`, `1500MB`, `1048576` → bytes.
///
/// # Errors
/// Anything else, as a message.
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("\"{s}\" is not a size (e.g. 4GiB, 512MiB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        _ => {
            return Err(format!(
                "\"{s}\" has an unknown unit (use B, KiB, MiB, GiB, TiB or KB, MB, GB, TB)"
            ));
        }
    };
    let bytes = n * mult;
    if !(bytes >= 1.0) {
        return Err(format!("\"{s}\" is not a positive size"));
    }
    Ok(bytes as u64)
}

/// Reads a step's SQL (a `.sql` file relative to the pipeline, or inline
/// text), binds vars and parses it.
fn resolve_sql(
    text: &str,
    base_dir: &Path,
    vars: &Vars,
) -> std::result::Result<(String, String, datafusion::sql::parser::Statement), String> {
    let trimmed = text.trim();
    let (raw, origin) = if !trimmed.contains(char::is_whitespace) && trimmed.ends_with(".sql") {
        let path = base_dir.join(trimmed);
        let raw = std::fs::read_to_string(&path).map_err(|e| format!("sql file {}: {e}", path.display()))?;
        (raw, path.display().to_string())
    } else {
        (text.to_string(), "inline".to_string())
    };
    let place = |e: String| {
        if origin == "inline" {
            e
        } else {
            format!("{origin}: {e}")
        }
    };
    let sql = crate::transform::bind_vars(&raw, vars).map_err(place)?;
    let statement = crate::transform::parse(&sql).map_err(place)?;
    Ok((sql, origin, statement))
}

/// Whether `name` can be a table name without quoting.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The known name closest to `name`, when close enough to be a typo.
fn suggest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("4GiB").unwrap(), 4 * 1024 * 1024 * 1024);
        assert_eq!(parse_bytes("512 MB").unwrap(), 512_000_000);
        assert_eq!(
            parse_bytes("4 GiBs").unwrap_err(),
            "\"4 GiBs\" has an unknown unit (use B, KiB, MiB, GiB, TiB or KB, MB, GB, TB)"
        );
    }

    #[test]
    fn suggestions_catch_typos_only() {
        assert_eq!(suggest("featurs", &["features", "clv"]), Some("features"));
        assert_eq!(suggest("orders", &["features", "clv"]), None);
    }
}
