//! `${name}` and `${env:NAME}` interpolation, applied to one parsed string at
//! a time (never to the raw YAML text, so a value can never inject YAML).
//!
//! `$${` writes a literal `${`. In SQL, vars are not spliced as text but as
//! literals; see [`crate::transform::bind_vars`], which uses [`scan`] to find
//! the references.

use std::collections::BTreeMap;

/// The resolved variables of a run: pipeline defaults overridden by `--var`.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    values: BTreeMap<String, String>,
}

/// Values read from the environment while interpolating, process-wide: they
/// are masked wherever crmflow shows a string (logs, errors, run results,
/// `plan`), whichever part of the program shows it.
static SECRETS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// `s` with every value read through `${env:...}` replaced by `***`.
pub fn mask(s: &str) -> String {
    let secrets = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = s.to_string();
    for secret in secrets.iter() {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

/// One piece of a string with references.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(std::borrow::Cow<'a, str>),
    Var(&'a str),
    Env(&'a str),
}

/// Splits `s` into text and `${...}` references.
///
/// # Errors
/// An unterminated `${` or an empty or malformed name.
pub fn scan(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        let after = &rest[pos + 1..];
        if after.starts_with("${") {
            // `$${` is an escaped `${`
            out.push(Piece::Text(rest[..pos].into()));
            out.push(Piece::Text("${".into()));
            rest = &after[2..];
            continue;
        }
        if !after.starts_with('{') {
            out.push(Piece::Text(rest[..pos + 1].into()));
            rest = after;
            continue;
        }
        out.push(Piece::Text(rest[..pos].into()));
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated \"${{\" in \"{s}\""))?;
        let inner = &after[1..end];
        let piece = match inner.strip_prefix("env:") {
            Some(name) => Piece::Env(name),
            None => Piece::Var(inner),
        };
        let name = match &piece {
            Piece::Env(n) | Piece::Var(n) => *n,
            Piece::Text(_) => unreachable!("built just above"),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            return Err(format!("\"${{{inner}}}\" is not a valid reference in \"{s}\""));
        }
        out.push(piece);
        rest = &after[end + 1..];
    }
    out.push(Piece::Text(rest.into()));
    out.retain(|p| !matches!(p, Piece::Text(t) if t.is_empty()));
    Ok(out)
}

impl Vars {
    /// Resolves `defaults` (from the pipeline) overridden by `overrides`
    /// (from `--var`). A default may itself use `${env:NAME}` or an earlier
    /// var; an override is taken literally.
    ///
    /// # Errors
    /// Each unresolvable default with its message.
    pub fn resolve(
        defaults: &BTreeMap<String, String>,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Vars, Vec<(String, String)>> {
        let mut vars = Vars::default();
        for (k, v) in overrides {
            vars.values.insert(k.clone(), v.clone());
        }
        let mut problems = Vec::new();
        // Defaults may refer to each other; resolve until nothing changes.
        let mut pending: Vec<(&String, &String)> =
            defaults.iter().filter(|(k, _)| !overrides.contains_key(*k)).collect();
        loop {
            let before = pending.len();
            let mut still = Vec::new();
            for (k, v) in pending {
                match vars.interpolate(v) {
                    Ok(s) => {
                        vars.values.insert(k.clone(), s);
                    }
                    Err(_) => still.push((k, v)),
                }
            }
            pending = still;
            if pending.is_empty() || pending.len() == before {
                break;
            }
        }
        for (k, v) in pending {
            if let Err(e) = vars.interpolate(v) {
                problems.push((k.clone(), e));
            }
        }
        if problems.is_empty() { Ok(vars) } else { Err(problems) }
    }

    /// These vars with `extra` on top (each value interpolated against
    /// these vars first).
    ///
    /// # Errors
    /// A value that references an undefined var.
    pub fn overlay(&self, extra: &BTreeMap<String, String>) -> Result<Vars, String> {
        let mut out = self.clone();
        for (k, v) in extra {
            let v = self.interpolate(v).map_err(|e| format!("vars.{k}: {e}"))?;
            out.values.insert(k.clone(), v);
        }
        Ok(out)
    }

    /// The value of a var, if defined.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// All vars, for run results and manifests (secrets masked).
    pub fn shown(&self) -> BTreeMap<String, String> {
        self.values.iter().map(|(k, v)| (k.clone(), self.mask(v))).collect()
    }

    /// Replaces `${...}` references in one string.
    ///
    /// # Errors
    /// The first reference that is not defined, as a message naming it.
    pub fn interpolate(&self, s: &str) -> Result<String, String> {
        let mut out = String::with_capacity(s.len());
        for piece in scan(s)? {
            match piece {
                Piece::Text(t) => out.push_str(&t),
                Piece::Var(name) => out.push_str(self.lookup_var(name)?),
                Piece::Env(name) => out.push_str(&self.lookup_env(name)?),
            }
        }
        Ok(out)
    }

    /// The value of `${name}`.
    ///
    /// # Errors
    /// The var is not defined.
    pub fn lookup_var(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .ok_or_else(|| format!("\"${{{name}}}\" is not defined (define it under vars: or pass --var {name}=...)"))
    }

    /// The value of `${env:NAME}`; remembered as a secret to mask.
    ///
    /// # Errors
    /// The environment variable is not set.
    pub fn lookup_env(&self, name: &str) -> Result<String, String> {
        let v =
            std::env::var(name).map_err(|_| format!("\"${{env:{name}}}\": environment variable {name} is not set"))?;
        let mut secrets = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
        // Very short values would mask unrelated text.
        if v.len() >= 4 && !secrets.iter().any(|s| s == &v) {
            secrets.push(v.clone());
        }
        Ok(v)
    }

    /// `s` with every value read from the environment replaced by `***`.
    pub fn mask(&self, s: &str) -> String {
        mask(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        let d: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Vars::resolve(&d, &BTreeMap::new()).expect("valid vars")
    }

    #[test]
    fn interpolates_vars_and_escapes() {
        let v = vars(&[("data", "data/sample"), ("out", "${data}/out")]);
        assert_eq!(v.interpolate("${data}/customers/").unwrap(), "data/sample/customers/");
        assert_eq!(v.get("out"), Some("data/sample/out"));
        assert_eq!(v.interpolate("cost $5, $${data}").unwrap(), "cost $5, ${data}");
    }

    #[test]
    fn overrides_win_and_are_literal() {
        let d = BTreeMap::from([("as_of".to_string(), "2026-01-01".to_string())]);
        let o = BTreeMap::from([("as_of".to_string(), "2026-11-24".to_string())]);
        let v = Vars::resolve(&d, &o).unwrap();
        assert_eq!(v.get("as_of"), Some("2026-11-24"));
    }

    #[test]
    fn undefined_and_malformed_references_are_errors() {
        let v = vars(&[]);
        assert_eq!(
            v.interpolate("${nope}/x").unwrap_err(),
            "\"${nope}\" is not defined (define it under vars: or pass --var nope=...)"
        );
        assert_eq!(v.interpolate("${a").unwrap_err(), "unterminated \"${\" in \"${a\"");
        assert_eq!(
            v.interpolate("${a b}").unwrap_err(),
            "\"${a b}\" is not a valid reference in \"${a b}\""
        );
    }

    #[test]
    fn env_values_are_masked() {
        // SAFETY of the test: the name is unique to this test.
        unsafe { std::env::set_var("CRMFLOW_TEST_SECRET_VARS", "s3cr3t") };
        let v = vars(&[]);
        let s = v.interpolate("key=${env:CRMFLOW_TEST_SECRET_VARS}").unwrap();
        assert_eq!(s, "key=s3cr3t");
        assert_eq!(v.mask(&s), "key=***");
    }
}
