//! From a parsed [`PipelineSpec`] to a [`Plan`]: bind vars, read SQL files,
//! resolve every name, fill defaults, order the steps — without reading any
//! data.
//!
//! Every problem is collected before failing (like Vector's `compile`), and
//! each message starts with the thing it is about: `step "segments" (line
//! 23): input "featurs" is neither a source nor a step`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use super::plan::{self, Plan, Step, StepKind};
use crate::config::{EngineSpec, Format, PipelineSpec, StepKindSpec};
use crate::engine::{EngineKind, Settings};
use crate::error::{Error, Problem, Result};
use crate::sinks::{Sink, SinkMode};
use crate::sources::Source;
use crate::stages::Stage;
use crate::storage::Location;
use crate::transform::SqlStep;
use crate::vars::Vars;

/// Resolves a pipeline.
///
/// # Errors
/// [`Error::Invalid`] listing every problem found.
pub fn resolve(spec: PipelineSpec, file: &Path, overrides: &BTreeMap<String, String>) -> Result<Plan> {
    let mut p: Vec<Problem> = Vec::new();

    for k in overrides.keys() {
        if !spec.vars.contains_key(k) {
            let known: Vec<&str> = spec.vars.keys().map(String::as_str).collect();
            p.push(Problem::new(
                format!("--var {k}"),
                format!("the pipeline defines no var \"{k}\"{}", did_you_mean(k, &known)),
            ));
        }
    }
    let vars = match Vars::resolve(&spec.vars, overrides) {
        Ok(v) => v,
        Err(e) => {
            p.extend(e.into_iter().map(|(k, m)| Problem::new(format!("var \"{k}\""), m)));
            Vars::resolve(&BTreeMap::new(), overrides).unwrap_or_default()
        }
    };
    if !valid_name(&spec.name) {
        p.push(Problem::new(
            format!("name \"{}\"", spec.name),
            "use lowercase letters, digits and _ (starting with a letter or _)",
        ));
    }

    let engine = resolve_engine(&spec.engine, &vars, &mut p);

    let mut storage = BTreeMap::new();
    for (k, v) in &spec.storage {
        let key = k.to_ascii_lowercase();
        let subject = format!("storage \"{k}\"");
        if !["aws_", "google_", "azure_"].iter().any(|pre| key.starts_with(pre))
            && !crate::storage::RETRY_KEYS.contains(&key.as_str())
        {
            p.push(Problem::new(
                subject,
                format!(
                    "option names start with aws_, google_ or azure_ (e.g. aws_endpoint, aws_region), or are one of {}",
                    crate::storage::RETRY_KEYS.join(", ")
                ),
            ));
            continue;
        }
        match vars.interpolate(v) {
            Ok(v) => {
                storage.insert(key, v);
            }
            Err(e) => p.push(Problem::new(subject, e)),
        }
    }

    // Names: sources, steps, and the extra tables of stage steps.
    let mut owner: HashMap<String, String> = HashMap::new(); // table -> producing step ("" for a source)
    let mut step_lines: HashMap<String, u64> = HashMap::new();
    let mut sources = Vec::new();
    for (name, s) in &spec.sources {
        if !valid_name(name) {
            p.push(Problem::source(
                name,
                "use lowercase letters, digits and _ in names (starting with a letter or _)",
            ));
        }
        owner.insert(name.clone(), String::new());
        let as_of =
            crate::sources::delta::as_of(s.format, s.version, s.timestamp.as_deref(), &vars).unwrap_or_else(|e| {
                p.push(Problem::source(name, e));
                None
            });
        let location = vars
            .interpolate(&s.url)
            .and_then(|u| Location::parse(&u))
            // A Delta table is a directory.
            .map(|l| if s.format == Format::Delta { l.as_dir() } else { l });
        let quarantine = match &s.quarantine {
            None => Ok(None),
            Some(q) => vars
                .interpolate(q)
                .and_then(|u| Location::parse(&u))
                .map(|l| Some(l.as_dir()))
                .map_err(|e| format!("quarantine: {e}")),
        };
        match (location, quarantine) {
            (Ok(location), Ok(quarantine)) => match crate::checks::bind(&s.checks, |v| vars.interpolate(v)) {
                Ok(mut checks) => {
                    if quarantine.is_some() {
                        super::quarantine::default_thresholds(&mut checks);
                    }
                    sources.push(Source {
                        name: name.clone(),
                        location,
                        format: s.format,
                        as_of,
                        checks,
                        quarantine,
                    })
                }
                Err(e) => p.push(Problem::source(name, e)),
            },
            (Err(e), _) => p.push(Problem::source(name, format!("url: {e}"))),
            (_, Err(e)) => p.push(Problem::source(name, e)),
        }
    }

    let base_dir = file.parent().unwrap_or(Path::new("."));
    let mut steps: Vec<Step> = Vec::new();
    let mut cache_overrides: Vec<Option<bool>> = Vec::new();
    for spanned in spec.steps {
        let line = Some(spanned.referenced.line()).filter(|l| *l > 0);
        let st = spanned.value;
        let name = st.name.clone();
        let problem = |m: String| Problem::step(&name, m).at(line);
        if !valid_name(&name) {
            p.push(problem(
                "use lowercase letters, digits and _ in names (starting with a letter or _)".into(),
            ));
        }
        let kind = match st.kind {
            StepKindSpec::Sql(text) => match vars.overlay(&st.vars).and_then(|v| resolve_sql(&text, base_dir, &v)) {
                Ok(sql) => StepKind::Sql(sql),
                Err(e) => {
                    p.push(problem(e));
                    continue;
                }
            },
            StepKindSpec::Stage(spec) => match spec.resolve(&name, &vars) {
                Ok(stage) => StepKind::Stage(stage),
                Err(e) => {
                    p.extend(e.into_iter().map(|q| q.at(line)));
                    continue;
                }
            },
        };
        let inputs = match &kind {
            StepKind::Sql(s) => match crate::transform::references(&s.statement) {
                Ok(r) => r,
                Err(e) => {
                    p.push(problem(e));
                    continue;
                }
            },
            StepKind::Stage(s) => s.inputs(),
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
                    p.push(problem(format!("the name is already used by {what}")));
                } else {
                    p.push(problem(format!("its table \"{o}\" clashes with {what}")));
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
    let unknown = |name: &str| {
        format!(
            "table \"{name}\" is neither a source nor a step{}",
            did_you_mean(name, &known)
        )
    };
    for s in &steps {
        for i in &s.inputs {
            if !owner.contains_key(i) {
                p.push(Problem::step(&s.name, unknown(i)).at(s.line));
            }
        }
    }

    // Sinks.
    let mut sinks = Vec::new();
    let mut sink_lines = Vec::new();
    let mut sink_urls: BTreeSet<String> = BTreeSet::new();
    for spanned in spec.sinks {
        let line = Some(spanned.referenced.line());
        let s = spanned.value;
        let problem = |m: String| Problem::sink(&s.table, m).at(line);
        if !owner.contains_key(&s.table) {
            p.push(problem(unknown(&s.table)));
        }
        let location = match vars.interpolate(&s.url).and_then(|u| Location::parse(&u)) {
            Ok(l) => l.as_dir(),
            Err(e) => {
                p.push(problem(format!("url: {e}")));
                continue;
            }
        };
        if location.parent_and_name().is_none() {
            p.push(problem(format!(
                "url {location} is the root of its store; write below a prefix (e.g. {location}out/)"
            )));
        }
        if !sink_urls.insert(location.url().to_string()) {
            p.push(problem(format!("another sink already writes to {location}")));
        }
        for src in &sources {
            let (a, b) = (src.location.as_dir().url().to_string(), location.url().to_string());
            if a.starts_with(&b) || b.starts_with(&a) {
                p.push(problem(format!(
                    "url {location} overlaps source \"{}\" ({}); a sink must not replace its own input",
                    src.name, src.location
                )));
            }
        }
        let mut seen = BTreeSet::new();
        for c in &s.partition_by {
            if !seen.insert(c) {
                p.push(problem(format!("partition_by lists \"{c}\" twice")));
            }
        }
        if s.mode == SinkMode::OverwritePartitions && s.partition_by.is_empty() {
            p.push(problem("mode overwrite_partitions needs partition_by".to_string()));
        }
        let checks = match crate::checks::bind(&s.checks, |v| vars.interpolate(v)) {
            Ok(c) => c,
            Err(e) => {
                p.push(problem(e));
                continue;
            }
        };
        let mut layout = crate::sinks::Layout {
            sort_by: s.sort_by,
            bloom_filters: s.bloom_filters,
            descriptions: s.descriptions,
            ..Default::default()
        };
        if let Some(size) = &s.target_file_size {
            match parse_bytes(size) {
                Ok(b) => layout.target_file_size = b,
                Err(e) => p.push(problem(format!("target_file_size: {e}"))),
            }
        }
        match s.row_group_rows {
            Some(0) => p.push(problem("row_group_rows must be at least 1".to_string())),
            Some(n) => layout.row_group_rows = n,
            None => {}
        }
        for (what, cols) in [("sort_by", &layout.sort_by), ("bloom_filters", &layout.bloom_filters)] {
            let mut seen = BTreeSet::new();
            for c in cols {
                if !seen.insert(c) {
                    p.push(problem(format!("{what} lists \"{c}\" twice")));
                }
            }
        }
        sinks.push(Sink {
            table: s.table,
            staging_root: location.clone(),
            location,
            format: s.format,
            partition_by: s.partition_by,
            mode: s.mode,
            checks,
            quarantine_of: None,
            layout,
        });
        sink_lines.push(line);
    }
    // Quarantine outputs are sinks too (locked, staged, published with the
    // others).
    for q in super::quarantine::sinks(&sources, &sinks, &owner, &mut p) {
        sinks.push(q);
        sink_lines.push(None);
    }

    // A remote cluster's executors read the sources and write the sinks'
    // staging themselves: they must be able to reach them.
    if let Some(settings) = &engine {
        for s in &sources {
            if let Some(why) = settings.unreachable(&s.location) {
                p.push(Problem::source(&s.name, format!("url: {why}")));
            }
        }
        for (s, line) in sinks.iter().zip(&sink_lines) {
            if let Some(why) = settings.unreachable(&s.location) {
                p.push(match &s.quarantine_of {
                    Some(source) => Problem::source(source, format!("quarantine: {why}")),
                    None => Problem::sink(&s.table, format!("url: {why}")).at(*line),
                });
            }
        }
    }

    // Delta tables are read and written by delta-rs in this process.
    {
        let delta_problems = crate::sinks::delta::problems(engine.as_ref().map(|e| e.kind), &storage);
        for s in sources.iter().filter(|s| s.format == Format::Delta) {
            if let Some(m) = delta_problems(&s.location) {
                p.push(Problem::source(&s.name, m));
            }
        }
        for (s, line) in sinks.iter().zip(&sink_lines).filter(|(s, _)| s.format == Format::Delta) {
            if let Some(m) = delta_problems(&s.location) {
                p.push(Problem::sink(&s.table, m).at(*line));
            }
        }
    }

    // Staging roots, from all sinks (before any --select), so that every run
    // of the pipeline stages a sink in the same place.
    let locations: Vec<Location> = sinks.iter().map(|s| s.location.clone()).collect();
    for (sink, root) in sinks.iter_mut().zip(crate::sinks::staging::roots(&locations)) {
        sink.staging_root = root;
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
                p.push(Problem::general(format!("step \"{}\" reads its own output", cycle[0])));
            } else {
                let reads: Vec<String> = cycle.iter().skip(1).map(|c| format!("\"{c}\"")).collect();
                p.push(Problem::general(format!(
                    "steps form a cycle: \"{}\" reads {}",
                    cycle[0],
                    reads.join(", which reads ")
                )));
            }
            (0..steps.len()).collect()
        }
    };

    let report = spec
        .report
        .as_deref()
        .and_then(|r| match vars.interpolate(r).and_then(|u| Location::parse(&u)) {
            Ok(l) => {
                p.extend(report_problems(&l, &sinks));
                Some(l)
            }
            Err(e) => {
                p.push(Problem::new("report", e));
                None
            }
        });
    if !p.is_empty() {
        return Err(Error::invalid(file.display(), p));
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
    let hash = pipeline_hash(file, &ordered);
    Ok(Plan {
        name: spec.name,
        file: file.to_path_buf(),
        vars,
        engine: engine.unwrap_or_default(),
        storage,
        sources: super::quarantine::order(sources),
        steps: ordered,
        sinks,
        report,
        hash,
        deferred: vec![],
    })
}

/// What is wrong with writing the HTML report to `report`: a directory, or
/// a place that a sink's publishing would replace.
pub fn report_problems(report: &Location, sinks: &[Sink]) -> Vec<Problem> {
    let mut p = Vec::new();
    if report.is_dir() {
        p.push(Problem::new(
            "report",
            format!(
                "{report} is a directory; name the file (e.g. {}report.html)",
                report.as_dir()
            ),
        ));
    }
    let at = report.url().to_string();
    for s in sinks {
        if at.starts_with(s.location.as_dir().url().as_str()) {
            p.push(Problem::new(
                "report",
                format!(
                    "{report} is inside the location of sink \"{}\" ({}); publishing it would remove the report",
                    s.table, s.location
                ),
            ));
        }
    }
    p
}

/// The pipeline's hash ([`Plan::hash`]): FNV-1a of the file's bytes and of
/// each SQL file a step reads (so an edited SQL file counts), as written:
/// the same for every value of the vars (the manifest has those apart).
/// 16 hex digits.
fn pipeline_hash(file: &Path, steps: &[Step]) -> String {
    let mut h = crate::hash::Fnv1a::default();
    h.write(&std::fs::read(file).unwrap_or_default());
    for s in steps {
        if let StepKind::Sql(sql) = &s.kind
            && sql.origin != "inline"
        {
            h.write(&[0]);
            h.write(s.name.as_bytes());
            h.write(&[0]);
            h.write(&std::fs::read(&sql.origin).unwrap_or_default());
        }
    }
    format!("{:016x}", crate::hash::splitmix64(h.finish()))
}

/// `; did you mean "x"?` when a known name is close to `name`.
pub(super) fn did_you_mean(name: &str, known: &[&str]) -> String {
    suggest(name, known)
        .map(|s| format!("; did you mean \"{s}\"?"))
        .unwrap_or_default()
}

fn resolve_engine(e: &EngineSpec, vars: &Vars, p: &mut Vec<Problem>) -> Option<Settings> {
    let mut bad = |m: &str| p.push(Problem::new("engine", m));
    let mut url = None;
    let mut scratch = None;
    let mut shared_paths = Vec::new();
    match e.kind {
        EngineKind::Local => {
            let ballista_only = [
                ("url", e.url.is_some()),
                ("standalone", e.standalone),
                ("scratch", e.scratch.is_some()),
                ("shared_paths", !e.shared_paths.is_empty()),
            ];
            for (key, _) in ballista_only.iter().filter(|(_, set)| *set) {
                bad(&format!("{key} applies to kind: ballista only"));
            }
        }
        EngineKind::Ballista => {
            match (&e.url, e.standalone) {
                (Some(_), true) => bad(
                    "kind \"ballista\" takes url (a cluster's scheduler) or standalone: true (a cluster in this process), not both",
                ),
                (None, false) => bad(
                    "kind \"ballista\" needs url: df://HOST:PORT (the scheduler started by `crmflow scheduler`) or standalone: true (a cluster in this process)",
                ),
                (Some(u), false) => match vars.interpolate(u).and_then(|u| scheduler_url(&u)) {
                    Ok(u) => url = Some(u),
                    Err(m) => bad(&format!("url: {m}")),
                },
                (None, true) => {}
            }
            if let Some(s) = &e.scratch {
                match vars.interpolate(s).and_then(|s| Location::parse(&s)) {
                    Ok(l) => scratch = Some(l.as_dir()),
                    Err(m) => bad(&format!("scratch: {m}")),
                }
            } else if e.url.is_some() && !e.standalone {
                bad(
                    "kind \"ballista\" with a url needs scratch: a directory every executor can write and the client can read (e.g. s3://bucket/tmp/crmflow/), where a run keeps the tables it reads more than once",
                );
            }
            for s in &e.shared_paths {
                match vars.interpolate(s) {
                    Ok(s) if Path::new(&s).is_absolute() => shared_paths.push(std::path::PathBuf::from(s)),
                    Ok(s) => bad(&format!("shared_paths: \"{s}\" is not an absolute path")),
                    Err(m) => bad(&format!("shared_paths: {m}")),
                }
            }
        }
    }
    if e.target_partitions == Some(0) {
        bad("target_partitions must be at least 1");
    }
    let memory_limit = match &e.memory_limit {
        None => None,
        Some(m) => match vars.interpolate(m).and_then(|m| parse_bytes(&m)) {
            Ok(b) => Some(b),
            Err(err) => {
                bad(&format!("memory_limit: {err}"));
                None
            }
        },
    };
    let settings = Settings {
        kind: e.kind,
        url,
        standalone: e.standalone,
        scratch,
        shared_paths,
        target_partitions: e.target_partitions,
        memory_limit,
    };
    if let Some(why) = settings.scratch.as_ref().and_then(|s| settings.unreachable(s)) {
        bad(&format!("scratch: {why}"));
    }
    Some(settings)
}

/// `df://host:port` (port default 50050), as written.
///
/// # Errors
/// Anything else, as a message.
fn scheduler_url(u: &str) -> std::result::Result<String, String> {
    let parsed = url::Url::parse(u).map_err(|e| format!("\"{u}\" is not a URL ({e}); use df://HOST:PORT"))?;
    let host_ok = parsed.host_str().is_some_and(|h| !h.is_empty());
    if parsed.scheme() != "df" || !host_ok || !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(format!("\"{u}\" is not df://HOST:PORT (e.g. df://scheduler:50050)"));
    }
    Ok(u.to_string())
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
fn resolve_sql(text: &str, base_dir: &Path, vars: &Vars) -> std::result::Result<SqlStep, String> {
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
    Ok(SqlStep { sql, origin, statement })
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

    /// The problems of a pipeline with this `engine:` block (indented YAML
    /// lines), an S3 source and a sink at `sink`.
    fn engine_problems(engine: &str, sink: &str) -> Vec<String> {
        let yaml = format!(
            "name: p\nengine:\n{engine}\nsources:\n  customers: {{url: s3://b/raw/customers/}}\nsinks:\n  - table: customers\n    url: {sink}\n"
        );
        let spec = crate::config::parse(&yaml).unwrap();
        match resolve(spec, Path::new("p.yaml"), &BTreeMap::new()) {
            Ok(_) => vec![],
            Err(Error::Invalid { problems, .. }) => problems.iter().map(|p| p.to_string()).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn ballista_engine_blocks_are_checked() {
        assert_eq!(
            engine_problems("  kind: ballista\n  standalone: true", "/tmp/out/c/"),
            Vec::<String>::new()
        );
        assert_eq!(
            engine_problems(
                "  kind: ballista\n  url: df://sched:50050\n  scratch: s3://b/tmp/",
                "s3://b/out/c/"
            ),
            Vec::<String>::new()
        );
        // Local disk the pipeline vouches for as shared.
        assert_eq!(
            engine_problems(
                "  kind: ballista\n  url: df://sched:50050\n  scratch: /mnt/nfs/tmp/\n  shared_paths: [/mnt/nfs]",
                "/mnt/nfs/out/c/"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            engine_problems(
                "  kind: local\n  standalone: true\n  scratch: s3://b/tmp/",
                "s3://b/out/c/"
            ),
            vec![
                "engine: standalone applies to kind: ballista only",
                "engine: scratch applies to kind: ballista only"
            ]
        );
        assert_eq!(
            engine_problems("  kind: ballista", "s3://b/out/c/"),
            vec![
                "engine: kind \"ballista\" needs url: df://HOST:PORT (the scheduler started by `crmflow scheduler`) or standalone: true (a cluster in this process)"
            ]
        );
        assert_eq!(
            engine_problems(
                "  kind: ballista\n  url: http://sched:50050\n  scratch: s3://b/tmp/",
                "s3://b/out/c/"
            ),
            vec!["engine: url: \"http://sched:50050\" is not df://HOST:PORT (e.g. df://scheduler:50050)"]
        );
        assert_eq!(
            engine_problems(
                "  kind: ballista\n  url: df://sched:50050\n  standalone: true",
                "s3://b/out/c/"
            ),
            vec![
                "engine: kind \"ballista\" takes url (a cluster's scheduler) or standalone: true (a cluster in this process), not both"
            ]
        );
        let memory = engine_problems(
            "  kind: ballista\n  url: df://sched:50050\n  scratch: memory://tmp/x/",
            "s3://b/out/c/",
        );
        assert_eq!(
            memory,
            vec![
                "engine: scratch: memory://tmp/x/ is memory of this process, which the executors of a remote Ballista cluster do not see"
            ]
        );
    }

    #[test]
    fn suggestions_catch_typos_only() {
        assert_eq!(suggest("featurs", &["features", "clv"]), Some("features"));
        assert_eq!(suggest("orders", &["features", "clv"]), None);
    }
}
