//! Publishing a staged sink: the moment a run's output becomes visible.
//!
//! Two protocols, both ending with a `_SUCCESS` manifest (JSON: run id,
//! pipeline, vars, files with rows and bytes, schema, version, finish time):
//!
//! * **Directory swap** (local disk, `mode: overwrite`): the manifest is
//!   written into the staging directory, then the old directory is renamed
//!   aside, the staging directory renamed into place, and the old one
//!   removed. Readers see the old complete output or the new complete output
//!   (for the microseconds between the two renames, no directory).
//! * **Manifest protocol** (object stores, and the other modes on local
//!   disk), using only put, copy, delete and list, which every S3-compatible
//!   store has: (1) delete `_SUCCESS`; (2) copy each staged file to a name
//!   no earlier run used (`part-<run id>-NNNNN.parquet`; for `append`, a tag
//!   derived from the pipeline, sink and vars, so a rerun with the same vars
//!   replaces its own files); (3) delete the files the new output replaces;
//!   (4) put the new `_SUCCESS` — last; (5) delete staging. While `_SUCCESS`
//!   is absent the location is being published; once present, the listed
//!   files are exactly the output. A failure between (1) and (4) leaves no
//!   `_SUCCESS`, never a `_SUCCESS` over mixed files.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::SinkMode;
use super::{Staged, StagedFile, footer_rows, list_data, remove_prefix};
use crate::error::{Error, Result};
use crate::storage::Location;

/// The name of the marker and manifest written last.
pub const SUCCESS: &str = "_SUCCESS";

/// The `_SUCCESS` manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub run_id: String,
    pub pipeline: String,
    pub sink: String,
    pub mode: SinkMode,
    pub vars: BTreeMap<String, String>,
    pub crmflow_version: String,
    pub finished_at: String,
    pub partition_by: Vec<String>,
    pub schema: serde_json::Value,
    /// Every data file of the output, relative to the sink location.
    pub files: Vec<StagedFile>,
    pub rows: u64,
}

/// What the run knows that the manifest records.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub run_id: String,
    pub pipeline: String,
    /// Vars with secrets masked.
    pub vars: BTreeMap<String, String>,
}

/// Publishes a staged sink.
///
/// # Errors
/// [`Error::Sink`] naming the sink and what failed; see the module docs for
/// what a failure leaves behind.
pub async fn publish(staged: &Staged, run: &RunInfo) -> Result<Manifest> {
    let sink = &staged.sink;
    let err = |m: String| Error::sink(&sink.table, &sink.location, m);
    let manifest = |files: Vec<StagedFile>| Manifest {
        run_id: run.run_id.clone(),
        pipeline: run.pipeline.clone(),
        sink: sink.table.clone(),
        mode: sink.mode,
        vars: run.vars.clone(),
        crmflow_version: env!("CARGO_PKG_VERSION").to_string(),
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        partition_by: sink.partition_by.clone(),
        schema: super::schema_json(&staged.schema),
        rows: files.iter().map(|f| f.rows).sum(),
        files,
    };
    let result = match (sink.location.local_path(), sink.mode) {
        (Some(target), SinkMode::Overwrite) => {
            let m = manifest(staged.files.clone());
            swap_directory(staged, &target, &m).await.map(|()| m)
        }
        _ => manifest_protocol(staged, run, manifest).await,
    };
    let m = result.map_err(err)?;
    remove_stale_staging(staged.store.as_ref(), &sink.location, &run.run_id).await;
    Ok(m)
}

async fn swap_directory(
    staged: &Staged,
    target: &std::path::Path,
    manifest: &Manifest,
) -> std::result::Result<(), String> {
    let staging = staged
        .staging
        .local_path()
        .ok_or_else(|| "staging is not on the local disk".to_string())?;
    std::fs::create_dir_all(&staging).map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| e.to_string())?;
    std::fs::write(staging.join(SUCCESS), json)
        .map_err(|e| format!("cannot write {}/{SUCCESS}: {e}", staging.display()))?;
    let parent = target.parent().ok_or("the sink has no parent directory")?;
    std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    if target.exists() {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let aside = parent.join(format!(".{name}.crmflow-{}.old", manifest.run_id));
        std::fs::rename(target, &aside).map_err(|e| format!("cannot move the previous output aside: {e}"))?;
        if let Err(e) = std::fs::rename(&staging, target) {
            // Put the previous output back: the run failed, nothing changed.
            let _ = std::fs::rename(&aside, target);
            return Err(format!("cannot move the new output into place: {e}"));
        }
        let _ = std::fs::remove_dir_all(&aside);
    } else {
        std::fs::rename(&staging, target).map_err(|e| format!("cannot move the new output into place: {e}"))?;
    }
    Ok(())
}

async fn manifest_protocol(
    staged: &Staged,
    run: &RunInfo,
    manifest: impl Fn(Vec<StagedFile>) -> Manifest,
) -> std::result::Result<Manifest, String> {
    let sink = &staged.sink;
    let store = staged.store.clone();
    let target = sink.location.as_dir();
    let success = target.child_path(SUCCESS);
    let previous = read_manifest(store.as_ref(), &success).await;
    let existing: BTreeMap<String, u64> = list_data(store.as_ref(), &target).await?.into_iter().collect();
    let tag = match sink.mode {
        SinkMode::Append => append_tag(run, &sink.table),
        _ => run.run_id.clone(),
    };
    // New names, per partition directory, numbered in staged order.
    let mut new_files = Vec::new();
    let mut counters: BTreeMap<String, usize> = BTreeMap::new();
    for f in &staged.files {
        let dir = f
            .path
            .rsplit_once('/')
            .map(|(d, _)| format!("{d}/"))
            .unwrap_or_default();
        let n = counters.entry(dir.clone()).or_default();
        let name = format!("{dir}part-{tag}-{n:05}.parquet");
        *n += 1;
        new_files.push((f.clone(), name));
    }
    let new_names: BTreeSet<&str> = new_files.iter().map(|(_, n)| n.as_str()).collect();
    let new_dirs: BTreeSet<String> = new_files
        .iter()
        .map(|(_, n)| n.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default())
        .collect();
    let replaced: Vec<&String> = existing
        .keys()
        .filter(|p| !new_names.contains(p.as_str()))
        .filter(|p| match sink.mode {
            SinkMode::Overwrite => true,
            SinkMode::OverwritePartitions => {
                new_dirs.contains(&p.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default())
            }
            SinkMode::Append => p
                .rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with(&format!("part-{tag}-"))),
        })
        .collect();

    // (1) the output is now "being published"
    match store.delete(&success).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(format!("cannot remove {SUCCESS}: {e}")),
    }
    // (2) new files under new names
    let local = sink.location.local_path().is_some();
    for (f, name) in &new_files {
        let from = staged.staging.child_path(&f.path);
        let to = target.child_path(name);
        let r = if local {
            store.rename(&from, &to).await
        } else {
            store.copy(&from, &to).await
        };
        r.map_err(|e| format!("cannot copy {} into place: {e}", f.path))?;
    }
    // (3) what the new output replaces
    for p in &replaced {
        match store.delete(&target.child_path(p)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(format!("cannot delete the replaced file {p}: {e}")),
        }
    }
    // (4) the manifest, last
    let known: BTreeMap<String, u64> = previous
        .map(|m| m.files.into_iter().map(|f| (f.path, f.rows)).collect())
        .unwrap_or_default();
    let mut files: Vec<StagedFile> = new_files
        .iter()
        .map(|(f, name)| StagedFile {
            path: name.clone(),
            rows: f.rows,
            bytes: f.bytes,
        })
        .collect();
    for (path, size) in &existing {
        if new_names.contains(path.as_str()) || replaced.contains(&path) {
            continue;
        }
        let rows = match known.get(path) {
            Some(r) => *r,
            None => footer_rows(store.clone(), &target.child_path(path), *size).await?,
        };
        files.push(StagedFile {
            path: path.clone(),
            rows,
            bytes: *size,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let m = manifest(files);
    let json = serde_json::to_vec_pretty(&m).map_err(|e| e.to_string())?;
    store
        .put(&success, PutPayload::from(json))
        .await
        .map_err(|e| format!("cannot write {SUCCESS}: {e}"))?;
    // (5) staging is no longer needed
    remove_prefix(store.as_ref(), &staged.staging).await;
    Ok(m)
}

/// The manifest at `path`, if there is a readable one.
pub async fn read_manifest(store: &dyn ObjectStore, path: &StorePath) -> Option<Manifest> {
    let bytes = store.get(path).await.ok()?.bytes().await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The file tag of `mode: append`: the same for the same pipeline, sink and
/// vars, so that a rerun replaces what it wrote before.
fn append_tag(run: &RunInfo, sink: &str) -> String {
    let mut h = crate::hash::Fnv1a::default();
    let mut feed = |s: &str| {
        h.write(s.as_bytes());
        h.write(&[0]);
    };
    feed(&run.pipeline);
    feed(sink);
    for (k, v) in &run.vars {
        feed(k);
        feed(v);
    }
    format!("a{:016x}", crate::hash::splitmix64(h.finish()))
}

/// Removes staging left by runs that were killed (an interrupted or failed
/// run removes its own, unless the store was unreachable): the staging of
/// runs that started more than an hour before this one. (Runs of one sink
/// must not overlap; an hour leaves a slow overlapping run alone.)
async fn remove_stale_staging(store: &dyn ObjectStore, sink: &Location, run_id: &str) {
    let Some((parent, name)) = sink.parent_and_name() else {
        return;
    };
    let Ok(listing) = store.list_with_delimiter(Some(&parent.path())).await else {
        return;
    };
    let prefix = format!(".{name}.crmflow-");
    let Some(now) = run_started(run_id) else { return };
    for dir in listing.common_prefixes {
        let Some(last) = dir.parts().last() else { continue };
        let last = last.as_ref().to_string();
        let Some(other) = last.strip_prefix(&prefix) else {
            continue;
        };
        match run_started(other) {
            Some(t) if now - t > chrono::Duration::hours(1) => {
                let loc = parent.join(&format!("{last}/"));
                tracing::info!(staging = %loc, "removing staging left by an earlier run");
                remove_prefix(store, &loc).await;
            }
            _ => {}
        }
    }
}

/// The start time in a run id (`20261125T080000Z-…`).
fn run_started(run_id: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let stamp = run_id.get(..16)?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// A shared handle for tests and tools that inspect outputs.
pub async fn manifest_of(store: Arc<dyn ObjectStore>, sink: &Location) -> Option<Manifest> {
    read_manifest(store.as_ref(), &sink.as_dir().child_path(SUCCESS)).await
}
