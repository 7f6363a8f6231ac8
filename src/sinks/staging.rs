//! Where a sink's output is written before it is published, and how the
//! leftovers of dead runs are found and removed.
//!
//! Staging lives outside the output tree, on the same store, so that no glob
//! over the outputs (`out/**/*.parquet`) ever matches it: under
//! `<root>/.crmflow-staging/<sink key>/<run id>/`, where `<root>` is the
//! parent of the deepest directory holding every sink of the pipeline on
//! that store (the store root if that is the root) and the sink key is the
//! sink's name and a hash of its URL. On local disk the staging directory
//! must be on the sink's filesystem (publishing renames it into place): when
//! the root cannot be created or is on another device, the hidden sibling
//! `<parent>/.<name>.crmflow-<run id>/` is used instead.
//!
//! A run removes the leftovers of dead runs of a sink as soon as it holds
//! the sink's lock ([`super::lock`]): no other run can be live then. It
//! first puts back a sink that a crash left missing between the two renames
//! of a swap without atomic exchange (from its `.old` copy).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use object_store::ObjectStore;

use super::remove_prefix;
use crate::storage::Location;

/// The name of the staging directory below a root.
pub const DIR: &str = ".crmflow-staging";

/// The staging root of each sink location (same order), from all the
/// pipeline's sinks: see the module docs.
pub fn roots(sinks: &[Location]) -> Vec<Location> {
    let mut common: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let parts = |l: &Location| -> Vec<String> {
        l.parent_and_name()
            .map(|(p, _)| p.path().parts().map(|x| x.as_ref().to_string()).collect())
            .unwrap_or_default()
    };
    for l in sinks {
        let p = parts(l);
        common
            .entry(l.store_url().as_str().to_string())
            .and_modify(|c| {
                let n = c.iter().zip(&p).take_while(|(a, b)| a == b).count();
                c.truncate(n);
            })
            .or_insert(p);
    }
    sinks
        .iter()
        .map(|l| {
            let c = &common[l.store_url().as_str()];
            let root = c[..c.len().saturating_sub(1)].join("/");
            let base = l.store_root();
            let root = if root.is_empty() {
                base
            } else {
                base.join(&format!("{root}/"))
            };
            root.join(&format!("{DIR}/"))
        })
        .collect()
}

/// The key of a sink below a staging root: its name and a hash of its URL.
pub fn key(sink: &Location) -> String {
    let name = sink.parent_and_name().map(|(_, n)| n).unwrap_or_default();
    let h = crate::hash::Fnv1a::of(sink.url().as_str().as_bytes());
    format!("{name}-{:08x}", h as u32)
}

/// The hidden sibling used when the root cannot serve (local disk only).
fn sibling(sink: &Location, run_id: &str) -> Option<Location> {
    let (parent, name) = sink.parent_and_name()?;
    Some(parent.join(&format!(".{name}.crmflow-{run_id}/")))
}

/// The staging directory of a sink for a run.
pub fn location(sink: &Location, root: &Location, run_id: &str) -> Option<Location> {
    let under_root = root.join(&format!("{}/{run_id}/", key(sink)));
    let (Some(root_dir), Some(sink_path)) = (root.local_path(), sink.local_path()) else {
        return Some(under_root);
    };
    // The nearest existing ancestor of the sink is where it will be created.
    let mut anchor = sink_path.as_path();
    while !anchor.exists() {
        anchor = anchor.parent()?;
    }
    let same_device = std::fs::create_dir_all(&root_dir).is_ok()
        && match (std::fs::metadata(&root_dir), std::fs::metadata(anchor)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev(),
            _ => false,
        };
    if same_device {
        Some(under_root)
    } else {
        sibling(sink, run_id)
    }
}

/// Removes what dead runs left of a sink (staging under the root and
/// beside the sink, `.old` copies, manifest and upload temp files), after
/// putting back a sink a crash left missing. Call only while holding the
/// sink's lock. Returns what it removed or restored, for the log.
pub async fn remove_leftovers(store: &dyn ObjectStore, sink: &Location, root: &Location, run_id: &str) -> Vec<String> {
    let mut done = Vec::new();
    let Some((parent, name)) = sink.parent_and_name() else {
        return done;
    };
    // Below the root: every run directory of this sink but ours.
    let base = root.join(&format!("{}/", key(sink)));
    if let Ok(listing) = store.list_with_delimiter(Some(&base.path())).await {
        for dir in listing.common_prefixes {
            let Some(last) = dir.parts().last().map(|p| p.as_ref().to_string()) else {
                continue;
            };
            if last != run_id {
                let loc = base.join(&format!("{last}/"));
                remove_prefix(store, &loc).await;
                done.push(format!("removed staging {loc}"));
            }
        }
    }
    let prefix = format!(".{name}.crmflow-");
    if let Some(parent_dir) = parent.local_path() {
        let Some(target) = sink.local_path() else { return done };
        let mut olds: Vec<std::path::PathBuf> = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&parent_dir) {
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().to_string();
                if file.starts_with(&prefix) && file.contains('#') && e.path().is_file() {
                    // The manifest's upload temp file of a killed put.
                    let _ = std::fs::remove_file(e.path());
                    done.push(format!("removed {}", e.path().display()));
                } else if file.starts_with(&prefix) && file.ends_with(".old") {
                    olds.push(e.path());
                } else if file.starts_with(&prefix) && !file.contains(run_id) && e.path().is_dir() {
                    let _ = std::fs::remove_dir_all(e.path());
                    done.push(format!("removed staging {}", e.path().display()));
                }
            }
        }
        olds.sort();
        if !target.exists()
            && let Some(newest) = olds.pop()
        {
            if std::fs::rename(&newest, &target).is_ok() {
                done.push(format!("restored {} from {}", target.display(), newest.display()));
            }
        }
        for old in olds {
            let _ = std::fs::remove_dir_all(&old);
            done.push(format!("removed {}", old.display()));
        }
        done.extend(super::publish::recover_manifest(store, sink, run_id).await);
        // Upload temp files (`_SUCCESS#3`, `x.parquet#1`) of a killed put.
        if let Ok(entries) = std::fs::read_dir(&target) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().contains('#') && e.path().is_file() {
                    let _ = std::fs::remove_file(e.path());
                    done.push(format!("removed {}", e.path().display()));
                }
            }
        }
    } else if let Ok(listing) = store.list_with_delimiter(Some(&parent.path())).await {
        for dir in listing.common_prefixes {
            let Some(last) = dir.parts().last().map(|p| p.as_ref().to_string()) else {
                continue;
            };
            if last.starts_with(&prefix) && !last.contains(run_id) {
                let loc = parent.join(&format!("{last}/"));
                remove_prefix(store, &loc).await;
                done.push(format!("removed staging {loc}"));
            }
        }
    }
    done
}

/// Every run's staging directory of a sink, ours or not: (location, run
/// id), below the root and beside the sink (not the `.old` copies of a
/// swap, which a crash may still need).
pub async fn run_dirs(store: &dyn ObjectStore, sink: &Location, root: &Location) -> Vec<(Location, String)> {
    let mut out = Vec::new();
    let base = root.join(&format!("{}/", key(sink)));
    if let Ok(listing) = store.list_with_delimiter(Some(&base.path())).await {
        for dir in listing.common_prefixes {
            if let Some(last) = dir.parts().next_back().map(|p| p.as_ref().to_string()) {
                out.push((base.join(&format!("{last}/")), last));
            }
        }
    }
    let Some((parent, name)) = sink.parent_and_name() else {
        return out;
    };
    let prefix = format!(".{name}.crmflow-");
    let run_of = |file: &str| {
        file.strip_prefix(&prefix)
            .filter(|r| !r.ends_with(".old"))
            .map(str::to_string)
    };
    if let Some(parent_dir) = parent.local_path() {
        // Local: empty directories are not listed by the store.
        if let Some(root_dir) = base.local_path()
            && let Ok(entries) = std::fs::read_dir(&root_dir)
        {
            for e in entries.flatten() {
                let run = e.file_name().to_string_lossy().to_string();
                if e.path().is_dir() && !out.iter().any(|(_, r)| *r == run) {
                    out.push((base.join(&format!("{run}/")), run));
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&parent_dir) {
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().to_string();
                if let Some(run) = run_of(&file)
                    && e.path().is_dir()
                {
                    out.push((parent.join(&format!("{file}/")), run));
                }
            }
        }
    } else if let Ok(listing) = store.list_with_delimiter(Some(&parent.path())).await {
        for dir in listing.common_prefixes {
            if let Some(file) = dir.parts().next_back().map(|p| p.as_ref().to_string())
                && let Some(run) = run_of(&file)
            {
                out.push((parent.join(&format!("{file}/")), run));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

/// Removes a sink's local staging directories if they are empty (after a
/// run, successful or not, so that nothing is left behind).
pub fn tidy(sink: &Location, root: &Location) {
    if let Some(root_dir) = root.local_path() {
        let _ = std::fs::remove_dir(root_dir.join(key(sink)));
        let _ = std::fs::remove_dir(root_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(s: &str) -> Location {
        Location::parse(s).unwrap().as_dir()
    }

    #[test]
    fn roots_sit_above_every_sink_of_their_store() {
        let sinks = [
            loc("s3://b/marts/crm/scores/"),
            loc("s3://b/marts/crm/profile/"),
            loc("s3://b/marts/other/x/"),
            loc("s3://c/top/"),
            loc("/data/out/features/"),
        ];
        let r: Vec<String> = roots(&sinks).iter().map(|l| l.url().to_string()).collect();
        assert_eq!(
            r,
            vec![
                "s3://b/.crmflow-staging/",
                "s3://b/.crmflow-staging/",
                "s3://b/.crmflow-staging/",
                "s3://c/.crmflow-staging/",
                "file:///data/.crmflow-staging/",
            ]
        );
        // One sink: staging goes beside its parent directory, not in it.
        let r = roots(&[loc("s3://b/marts/crm/scores/")]);
        assert_eq!(r[0].url().as_str(), "s3://b/marts/.crmflow-staging/");
    }

    #[test]
    fn keys_differ_for_sinks_of_the_same_name() {
        assert_ne!(key(&loc("s3://b/a/scores/")), key(&loc("s3://b/c/scores/")));
        assert!(key(&loc("s3://b/a/scores/")).starts_with("scores-"));
    }
}
