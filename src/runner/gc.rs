//! `crmflow gc PIPELINE`: removes the staging that runs of the pipeline
//! left beside its sinks (a run killed with SIGKILL, a machine that died).
//!
//! A run removes such leftovers itself once it holds a sink's lock; `gc`
//! does it without running. The staging of the run holding a sink's live
//! lease is never removed, nor staging younger than `--older-than` (by the
//! start time in its run id, else by its newest file), so that a run
//! starting while `gc` looks is left alone.

use futures::TryStreamExt;
use object_store::ObjectStore;

use super::plan::Plan;
use crate::error::{Error, Result};
use crate::sinks::{lock, remove_prefix, staging};
use crate::storage::Location;

/// What `gc` did with one staging directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Removed,
    WouldRemove,
    /// The run holds the sink's live lease.
    KeptLive,
    /// Younger than `--older-than`.
    KeptYoung,
}

/// One staging directory found.
#[derive(Debug, Clone)]
pub struct Found {
    pub sink: String,
    pub url: String,
    pub run_id: String,
    pub action: Action,
}

impl Found {
    /// The line `gc` prints for it.
    pub fn line(&self) -> String {
        let what = format!("staging {} (sink \"{}\", run {})", self.url, self.sink, self.run_id);
        match self.action {
            Action::Removed => format!("removed {what}"),
            Action::WouldRemove => format!("would remove {what}"),
            Action::KeptLive => format!("kept {what}: the run holds the sink's lock"),
            Action::KeptYoung => format!("kept {what}: younger than --older-than"),
        }
    }
}

/// Parses `30s`, `15m`, `1h`, `2d`.
///
/// # Errors
/// [`Error::Usage`] naming the flag.
pub fn parse_duration(s: &str) -> Result<chrono::Duration> {
    let bad = || {
        Error::Usage(format!(
            "--older-than {s}: expected a number and s, m, h or d (e.g. 30m, 1h, 2d)"
        ))
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    chrono::Duration::try_seconds(n.checked_mul(secs).ok_or_else(bad)?).ok_or_else(bad)
}

/// When a staging directory's run started: from its run id
/// (`20261125T080000Z-...`), else its newest file, else (an empty local
/// directory) its modification time.
async fn started(store: &dyn ObjectStore, dir: &Location, run_id: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Some(stamp) = run_id.get(..16)
        && let Ok(t) = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
    {
        return Some(t.and_utc());
    }
    let metas: Vec<object_store::ObjectMeta> = store.list(Some(&dir.path())).try_collect().await.unwrap_or_default();
    if let Some(newest) = metas.iter().map(|m| m.last_modified).max() {
        return Some(newest);
    }
    let modified = std::fs::metadata(dir.local_path()?).ok()?.modified().ok()?;
    Some(modified.into())
}

/// Finds (and unless `dry_run` removes) the stale staging of every sink.
///
/// # Errors
/// [`Error::Storage`] when a sink's store cannot be built.
pub async fn gc(plan: &Plan, older_than: chrono::Duration, dry_run: bool) -> Result<Vec<Found>> {
    let now = chrono::Utc::now();
    let mut out = Vec::new();
    for sink in &plan.sinks {
        let store = crate::storage::build_store(&sink.location, &plan.storage).map_err(|m| Error::Storage {
            url: sink.location.to_string(),
            cause: m.into(),
        })?;
        for (dir, run_id) in staging::run_dirs(store.as_ref(), &sink.location, &sink.staging_root).await {
            // Read the lease again for each directory: a run may have
            // started since the last one.
            let live = lock::holder(store.as_ref(), &sink.location)
                .await
                .filter(lock::Lease::is_live)
                .is_some_and(|l| l.run_id == run_id);
            let young = started(store.as_ref(), &dir, &run_id)
                .await
                .is_some_and(|t| now - t < older_than);
            let action = if live {
                Action::KeptLive
            } else if young {
                Action::KeptYoung
            } else if dry_run {
                Action::WouldRemove
            } else {
                remove_prefix(store.as_ref(), &dir).await;
                Action::Removed
            };
            out.push(Found {
                sink: sink.table.clone(),
                url: dir.to_string(),
                run_id,
                action,
            });
        }
        if !dry_run {
            staging::tidy(&sink.location, &sink.staging_root);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s").unwrap(), chrono::Duration::seconds(90));
        assert_eq!(parse_duration("2d").unwrap(), chrono::Duration::days(2));
        assert_eq!(parse_duration("0s").unwrap(), chrono::Duration::zero());
        assert_eq!(
            parse_duration("1w").unwrap_err().to_string(),
            "--older-than 1w: expected a number and s, m, h or d (e.g. 30m, 1h, 2d)"
        );
        assert!(parse_duration("h").is_err());
    }
}
