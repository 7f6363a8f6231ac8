//! Failpoints: named places in the publish path where a test can make the
//! real binary fail, crash or pause, to prove what readers see in every
//! failure window (STYLE.md: failure windows are tested, not argued).
//!
//! Compiled into debug builds only (what `cargo test` builds); in release
//! builds [`hit`] is an empty inline function. A test sets
//! `CRMFLOW_FAILPOINTS=name=action;name=action`, where a name is a place
//! (`publish::before_commit`) optionally followed by `:<sink table>`, and an
//! action is `error` (the operation fails with an I/O error), `abort` (the
//! process dies at once, as with SIGKILL: no cleanup runs), `panic` (the
//! code panics there, as a bug would) or `sleep(MS)`.

/// What a failpoint asks for.
#[cfg(debug_assertions)]
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Error,
    Abort,
    Panic,
    Sleep(u64),
}

/// `name=action;...` as (name, action) pairs; malformed entries are skipped.
#[cfg(debug_assertions)]
fn parse(spec: &str) -> Vec<(String, Action)> {
    spec.split(';')
        .filter_map(|p| {
            let (name, action) = p.trim().split_once('=')?;
            let action = match action.trim() {
                "error" => Action::Error,
                "abort" => Action::Abort,
                "panic" => Action::Panic,
                a => Action::Sleep(a.strip_prefix("sleep(")?.strip_suffix(')')?.parse().ok()?),
            };
            Some((name.trim().to_string(), action))
        })
        .collect()
}

#[cfg(debug_assertions)]
fn configured() -> &'static [(String, Action)] {
    static POINTS: std::sync::OnceLock<Vec<(String, Action)>> = std::sync::OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var("CRMFLOW_FAILPOINTS")
            .map(|s| parse(&s))
            .unwrap_or_default()
    })
}

/// Passes through failpoint `name` (and `name:subject`).
///
/// # Errors
/// An I/O error naming the failpoint when the test configured `error`.
///
/// # Panics
/// When the test configured `panic` (to prove a bug is caught).
#[cfg(debug_assertions)]
pub async fn hit(name: &str, subject: &str) -> std::io::Result<()> {
    let qualified = if subject.is_empty() {
        name.to_string()
    } else {
        format!("{name}:{subject}")
    };
    for (point, action) in configured() {
        if point == name || *point == qualified {
            match action {
                Action::Error => return Err(std::io::Error::other(format!("failpoint {qualified}"))),
                Action::Abort => std::process::abort(),
                Action::Panic => panic!("failpoint {qualified}"),
                Action::Sleep(ms) => tokio::time::sleep(std::time::Duration::from_millis(*ms)).await,
            }
        }
    }
    Ok(())
}

/// Passes through failpoint `name`: nothing in release builds.
///
/// # Errors
/// Never.
#[cfg(not(debug_assertions))]
#[inline]
pub async fn hit(_name: &str, _subject: &str) -> std::io::Result<()> {
    Ok(())
}

/// Whether failpoint `name` is configured at all (to switch a code path,
/// e.g. pretend an atomic exchange is unsupported).
#[cfg(debug_assertions)]
pub fn enabled(name: &str) -> bool {
    configured().iter().any(|(p, _)| p == name)
}

/// Never, in release builds.
#[cfg(not(debug_assertions))]
#[inline]
pub fn enabled(_name: &str) -> bool {
    false
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::{Action, parse};

    #[test]
    fn the_spec_parses_and_skips_malformed_entries() {
        assert_eq!(
            parse("publish::before_commit:a=error; publish::after_prepare=sleep(250);x=sleep(y);bad;k=abort;p=panic"),
            vec![
                ("publish::before_commit:a".to_string(), Action::Error),
                ("publish::after_prepare".to_string(), Action::Sleep(250)),
                ("k".to_string(), Action::Abort),
                ("p".to_string(), Action::Panic),
            ]
        );
    }
}
