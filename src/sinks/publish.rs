//! Publishing staged sinks, in two phases, so that a failure publishes
//! nothing or, once publishing has begun, says exactly what was published.
//!
//! **Phase one, [`prepare`]**, for every sink of the run, touches nothing a
//! reader uses: the manifest protocol puts the new files in place under
//! names no earlier run used (no `_SUCCESS` removed, no old file deleted);
//! the local swap writes the manifest into the staged directory. A failure
//! here [`abort`]s every prepared sink (removing what phase one added): the
//! run published nothing.
//!
//! **Phase two, [`commit`]**, sink by sink, makes each output visible in one
//! atomic step, then cleans up:
//!
//! The **manifest** (JSON: run id, pipeline, vars, files with rows and
//! bytes, schema, version, finish time) is the commit record. It lives
//! beside the sink, `<parent>/.<name>.crmflow-manifest.json` ([`read_manifest`]),
//! not in it: Polars refuses a directory holding any non-empty file that
//! is not Parquet. The sink directory holds the data files and an empty
//! `_SUCCESS` (Hadoop's marker, for tools that wait on it), nothing else.
//!
//! * **manifest protocol** (object stores, and `overwrite_partitions` /
//!   `append` everywhere): put the new manifest, which replaces the old one
//!   in a single put; put the empty `_SUCCESS`; then delete the files the
//!   new output replaces and any file no manifest lists (leftovers of dead
//!   runs); then the staging. Whenever the manifest exists it lists exactly
//!   a complete output; files it does not list may exist for a moment (this
//!   run's new files before its put, replaced files after it).
//! * **directory swap** (local disk, `mode: overwrite`): phase one writes
//!   the manifest to a pending `.<name>.crmflow-manifest-<run id>.json`;
//!   one `renameat2(RENAME_EXCHANGE)` of the staged directory and the sink,
//!   so the sink path always exists and holds the old or the new complete
//!   output; then the pending manifest is renamed over the manifest and the
//!   old output (now at the staging path) is removed. A crash between the
//!   exchange and that rename is repaired by the next run
//!   ([`recover_manifest`]). Where the exchange is unsupported: the old
//!   directory is renamed aside to a hidden `.old` sibling and the new one
//!   into place; if the process dies between the two renames, the next run
//!   puts the `.old` back first.
//!
//! Published files are named `part-<run id or append tag>-NNNNN.parquet`
//! under their partition directories, whose names are Hive's
//! (`region=50%25`: [`super::layout::hive_escape`]) byte for byte, on disk
//! and in object keys.
//!
//! A commit that fails leaves that sink's previous output in place; the run
//! reports the sinks it published and the ones it did not, and the next run
//! publishes them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use std::path::PathBuf;

use super::SinkMode;
use super::{Staged, StagedFile, footer_rows, list_data, remove_prefix};
use crate::error::Error;
use crate::storage::Location;

/// Hadoop's marker in the sink directory: an empty file, written with
/// each commit (readers skip it; tools that wait for it keep working).
pub const SUCCESS: &str = "_SUCCESS";

/// The manifest of a sink: the commit record, beside the sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub run_id: String,
    pub pipeline: String,
    /// The pipeline's hash ([`crate::runner::plan::Plan::hash`]); empty in
    /// manifests of earlier versions.
    #[serde(default)]
    pub pipeline_hash: String,
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
    pub pipeline_hash: String,
    /// Vars with secrets masked.
    pub vars: BTreeMap<String, String>,
}

/// A sink whose new output is in place but not yet visible.
#[derive(Debug)]
pub struct Prepared {
    pub staged: Staged,
    pub manifest: Manifest,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// Local `overwrite`: the staged directory replaces the sink, then the
    /// pending manifest replaces the manifest.
    Swap {
        staging: PathBuf,
        target: PathBuf,
        pending: PathBuf,
        manifest: PathBuf,
    },
    /// The manifest protocol: files added in phase one, and the files to
    /// delete once the manifest is committed.
    Files { added: Vec<String>, obsolete: Vec<String> },
}

/// The outcome of a failed [`commit`].
#[derive(Debug)]
pub struct CommitError {
    /// Whether the sink's new output became visible before the failure
    /// (only its cleanup failed).
    pub published: bool,
    pub error: Error,
}

fn manifest(staged: &Staged, run: &RunInfo, files: Vec<StagedFile>) -> Manifest {
    let sink = &staged.sink;
    Manifest {
        run_id: run.run_id.clone(),
        pipeline: run.pipeline.clone(),
        pipeline_hash: run.pipeline_hash.clone(),
        sink: sink.table.clone(),
        mode: sink.mode,
        vars: run.vars.clone(),
        crmflow_version: env!("CARGO_PKG_VERSION").to_string(),
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        partition_by: sink.partition_by.clone(),
        schema: super::schema_json(&staged.schema, &sink.partition_by),
        rows: files.iter().map(|f| f.rows).sum(),
        files,
    }
}

/// Phase one for one sink: puts its new output in place, invisible.
///
/// # Errors
/// [`Error::Sink`] naming the sink, with the staged sink back (what phase
/// one added is already removed).
pub async fn prepare(staged: Staged, run: &RunInfo) -> std::result::Result<Prepared, (Error, Staged)> {
    let sink = &staged.sink;
    let err = |m: String| Error::sink(&sink.table, &sink.location, m);
    if let Err(e) = crate::failpoint::hit("publish::prepare", &sink.table).await {
        return Err((err(e.to_string()), staged));
    }
    let result = match (sink.location.local_path(), staged.staging.local_path(), sink.mode) {
        (Some(target), Some(staging), SinkMode::Overwrite) => prepare_swap(&staged, run, staging, target),
        _ => prepare_files(&staged, run).await,
    };
    match result {
        Ok((manifest, kind)) => Ok(Prepared { staged, manifest, kind }),
        Err(m) => Err((err(m), staged)),
    }
}

/// The manifest's store path for a sink (beside it), and, with a run id,
/// the pending one of a directory swap.
pub fn manifest_path(sink: &Location, pending_run: Option<&str>) -> StorePath {
    let (parent, name) = sink
        .parent_and_name()
        .unwrap_or_else(|| (sink.store_root(), "output".to_string()));
    match pending_run {
        None => parent.child_path(&format!(".{name}.crmflow-manifest.json")),
        Some(run) => parent.child_path(&format!(".{name}.crmflow-manifest-{run}.json")),
    }
}

fn local_path(sink: &Location, path: &StorePath) -> Option<PathBuf> {
    sink.store_root().local_path().map(|root| root.join(path.as_ref()))
}

/// Local `overwrite`: the staged files take their published names inside
/// the staged directory, which gets the `_SUCCESS` marker; the manifest is
/// written pending.
fn prepare_swap(
    staged: &Staged,
    run: &RunInfo,
    staging: PathBuf,
    target: PathBuf,
) -> std::result::Result<(Manifest, Kind), String> {
    let sink = &staged.sink;
    let mut files = Vec::new();
    let mut old_dirs = BTreeSet::new();
    for (f, name) in published_names(&staged.files, &run.run_id) {
        let (from, to) = (staging.join(&f.path), staging.join(&name));
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::rename(&from, &to).map_err(|e| format!("cannot rename {} in staging: {e}", f.path))?;
        if let Some(dir) = from.parent() {
            old_dirs.insert(dir.to_path_buf());
        }
        files.push(StagedFile {
            path: name,
            rows: f.rows,
            bytes: f.bytes,
        });
    }
    for dir in old_dirs.iter().rev() {
        // Emptied directories of DataFusion's names (still full where the
        // name did not change).
        let _ = std::fs::remove_dir(dir);
    }
    std::fs::write(staging.join(SUCCESS), b"").map_err(|e| format!("cannot write {SUCCESS} in staging: {e}"))?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let m = manifest(staged, run, files);
    let pending = local_path(&sink.location, &manifest_path(&sink.location, Some(&run.run_id)))
        .ok_or("the sink is not on local disk")?;
    let manifest_file =
        local_path(&sink.location, &manifest_path(&sink.location, None)).ok_or("the sink is not on local disk")?;
    if let Some(dir) = pending.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let json = serde_json::to_vec_pretty(&m).map_err(|e| e.to_string())?;
    std::fs::write(&pending, json).map_err(|e| format!("cannot write {}: {e}", pending.display()))?;
    Ok((
        m,
        Kind::Swap {
            staging,
            target,
            pending,
            manifest: manifest_file,
        },
    ))
}

/// Decodes object_store's percent-encoding of a path part (DataFusion's
/// writer encodes the `key=value` directory names it makes; the values are
/// already Hive-escaped).
fn decode_part(part: &str) -> String {
    let b = part.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&part[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| part.to_string())
}

/// The published name of each staged file: its partition directories as
/// Hive names them, `part-<tag>-NNNNN.parquet` numbered per directory in
/// staged order.
fn published_names(staged: &[StagedFile], tag: &str) -> Vec<(StagedFile, String)> {
    let mut counters: BTreeMap<String, usize> = BTreeMap::new();
    staged
        .iter()
        .map(|f| {
            let dir = f
                .path
                .rsplit_once('/')
                .map(|(d, _)| d.split('/').map(decode_part).map(|p| p + "/").collect::<String>())
                .unwrap_or_default();
            let n = counters.entry(dir.clone()).or_default();
            let name = format!("{dir}part-{tag}-{n:05}.parquet");
            *n += 1;
            (f.clone(), name)
        })
        .collect()
}

async fn prepare_files(staged: &Staged, run: &RunInfo) -> std::result::Result<(Manifest, Kind), String> {
    let sink = &staged.sink;
    let store = staged.store.clone();
    let target = sink.location.as_dir();
    let previous = read_manifest(store.as_ref(), &sink.location).await;
    let listed: BTreeMap<String, u64> = list_data(store.as_ref(), &target).await?.into_iter().collect();
    // The current output: what the manifest lists (files no manifest lists
    // are leftovers of dead runs), or, before any manifest, every file.
    let current: BTreeMap<String, u64> = match &previous {
        Some(m) => m
            .files
            .iter()
            .filter(|f| listed.contains_key(&f.path))
            .map(|f| (f.path.clone(), f.rows))
            .collect(),
        None => BTreeMap::new(),
    };
    let tag = match sink.mode {
        SinkMode::Append => append_tag(run, &sink.table),
        _ => run.run_id.clone(),
    };
    let new_files = published_names(&staged.files, &tag);
    let new_names: BTreeSet<&str> = new_files.iter().map(|(_, n)| n.as_str()).collect();
    let new_dirs: BTreeSet<String> = new_files
        .iter()
        .map(|(_, n)| n.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default())
        .collect();
    let replaces = |p: &str| match sink.mode {
        SinkMode::Overwrite => true,
        SinkMode::OverwritePartitions => {
            new_dirs.contains(&p.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default())
        }
        SinkMode::Append => p
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with(&format!("part-{tag}-"))),
    };
    let kept: Vec<(String, u64)> = match &previous {
        Some(_) => current
            .iter()
            .filter(|(p, _)| !new_names.contains(p.as_str()) && !replaces(p))
            .map(|(p, r)| (p.clone(), *r))
            .collect(),
        // No manifest yet: every listed file that is not replaced stays.
        None => {
            let mut kept = Vec::new();
            for (p, size) in &listed {
                if !new_names.contains(p.as_str()) && !replaces(p) {
                    kept.push((
                        p.clone(),
                        footer_rows(store.clone(), &target.child_path(p), *size).await?,
                    ));
                }
            }
            kept
        }
    };
    let kept_names: BTreeSet<&str> = kept.iter().map(|(p, _)| p.as_str()).collect();
    // Everything listed that the new manifest will not list goes after the
    // commit (files of this run's new names are overwritten, not deleted).
    let obsolete: Vec<String> = listed
        .keys()
        .filter(|p| !new_names.contains(p.as_str()) && !kept_names.contains(p.as_str()))
        .cloned()
        .collect();

    // The new files, under new names; undone on failure.
    let local = sink.location.local_path().is_some();
    let mut added = Vec::new();
    for (f, name) in &new_files {
        let from = staged.staging.child_path(&f.path);
        let to = target.child_path(name);
        let r = if local {
            store.rename(&from, &to).await
        } else {
            store.copy(&from, &to).await
        };
        let r = match r {
            Ok(()) => {
                added.push(name.clone());
                crate::failpoint::hit("publish::after_file", &sink.table)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = r {
            delete_all(store.as_ref(), &target, &added).await;
            return Err(format!("cannot copy {} into place: {e}", f.path));
        }
    }
    let mut files: Vec<StagedFile> = new_files
        .iter()
        .map(|(f, name)| StagedFile {
            path: name.clone(),
            rows: f.rows,
            bytes: f.bytes,
        })
        .collect();
    for (path, rows) in kept {
        let bytes = listed.get(&path).copied().unwrap_or(0);
        files.push(StagedFile { path, rows, bytes });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((manifest(staged, run, files), Kind::Files { added, obsolete }))
}

async fn delete_all(store: &dyn ObjectStore, dir: &Location, paths: &[String]) {
    for p in paths {
        let _ = store.delete(&dir.child_path(p)).await;
    }
}

/// Undoes phase one of a prepared sink: removes the files it added and the
/// staging (best effort).
pub async fn abort(p: Prepared) {
    match &p.kind {
        Kind::Files { added, .. } => delete_all(p.staged.store.as_ref(), &p.staged.sink.location.as_dir(), added).await,
        Kind::Swap { pending, .. } => {
            let _ = std::fs::remove_file(pending);
        }
    }
    remove_prefix(p.staged.store.as_ref(), &p.staged.staging).await;
}

/// Phase two for one sink: makes its new output visible, then cleans up.
///
/// # Errors
/// [`CommitError`]: whether the output was published before the failure,
/// and the error naming the sink.
pub async fn commit(p: &Prepared) -> std::result::Result<(), CommitError> {
    let sink = &p.staged.sink;
    let fail = |published: bool, m: String| CommitError {
        published,
        error: Error::sink(&sink.table, &sink.location, m),
    };
    crate::failpoint::hit("publish::commit", &sink.table)
        .await
        .map_err(|e| fail(false, e.to_string()))?;
    let store = p.staged.store.as_ref();
    match &p.kind {
        Kind::Swap {
            staging,
            target,
            pending,
            manifest,
        } => {
            swap(staging, target).await.map_err(|m| fail(false, m))?;
            // Between the exchange and the manifest's rename (repaired by
            // the next run: [`recover_manifest`]).
            crate::failpoint::hit("publish::swapped", &sink.table)
                .await
                .map_err(|e| fail(true, e.to_string()))?;
            std::fs::rename(pending, manifest)
                .map_err(|e| fail(true, format!("cannot move the manifest into place: {e}")))?;
            crate::failpoint::hit("publish::committed", &sink.table)
                .await
                .map_err(|e| fail(true, e.to_string()))?;
            // The previous output is now at the staging path.
            std::fs::remove_dir_all(staging)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| {
                    fail(
                        true,
                        format!("cannot remove the previous output at {}: {e}", staging.display()),
                    )
                })?;
        }
        Kind::Files { obsolete, .. } => {
            let target = sink.location.as_dir();
            let json = serde_json::to_vec_pretty(&p.manifest).map_err(|e| fail(false, e.to_string()))?;
            store
                .put(&manifest_path(&sink.location, None), PutPayload::from(json))
                .await
                .map_err(|e| fail(false, format!("cannot write the manifest: {e}")))?;
            crate::failpoint::hit("publish::committed", &sink.table)
                .await
                .map_err(|e| fail(true, e.to_string()))?;
            store
                .put(&target.child_path(SUCCESS), PutPayload::from_static(b""))
                .await
                .map_err(|e| fail(true, format!("cannot write {SUCCESS}: {e}")))?;
            for path in obsolete {
                match store.delete(&target.child_path(path)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(fail(true, format!("cannot delete the replaced file {path}: {e}"))),
                }
            }
            remove_prefix(store, &p.staged.staging).await;
        }
    }
    Ok(())
}

/// Replaces `target` by `staging` on local disk: one atomic exchange where
/// the filesystem has it, else two renames (see the module docs).
async fn swap(staging: &std::path::Path, target: &std::path::Path) -> std::result::Result<(), String> {
    let parent = target.parent().ok_or("the sink has no parent directory")?;
    std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    if !target.exists() {
        return std::fs::rename(staging, target).map_err(|e| format!("cannot move the new output into place: {e}"));
    }
    let exchange = if crate::failpoint::enabled("publish::no_exchange") {
        Err(std::io::Error::from_raw_os_error(libc::EINVAL))
    } else {
        exchange(staging, target)
    };
    match exchange {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let run = staging
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let aside = parent.join(format!(".{name}.crmflow-{run}.old"));
            std::fs::rename(target, &aside).map_err(|e| format!("cannot move the previous output aside: {e}"))?;
            crate::failpoint::hit("publish::between_renames", &name)
                .await
                .map_err(|e| e.to_string())?;
            if let Err(e) = std::fs::rename(staging, target) {
                let _ = std::fs::rename(&aside, target);
                return Err(format!("cannot move the new output into place: {e}"));
            }
            // What the exchange would have left at the staging path.
            std::fs::rename(&aside, staging).map_err(|e| format!("cannot remove {}: {e}", aside.display()))
        }
        Err(e) => Err(format!("cannot exchange the new output with {}: {e}", target.display())),
    }
}

/// `renameat2(a, b, RENAME_EXCHANGE)`: both paths exist before and after.
fn exchange(a: &std::path::Path, b: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let cstr = |p: &std::path::Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
    };
    let (a, b) = (cstr(a)?, cstr(b)?);
    // SAFETY: both pointers are valid NUL-terminated strings that outlive
    // the call; AT_FDCWD makes them relative to the current directory
    // (they are absolute here).
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The manifest of the output at `sink`, if there is a readable one: the
/// one place that reads manifests. Outputs of crmflow before 0.2 kept it
/// in `_SUCCESS`, which is read when there is no manifest beside the sink.
pub async fn read_manifest(store: &dyn ObjectStore, sink: &Location) -> Option<Manifest> {
    let get = |path: StorePath| async move {
        let bytes = store.get(&path).await.ok()?.bytes().await.ok()?;
        serde_json::from_slice::<Manifest>(&bytes).ok()
    };
    match get(manifest_path(sink, None)).await {
        Some(m) => Some(m),
        None => get(sink.as_dir().child_path(SUCCESS)).await,
    }
}

/// Repairs a directory swap that died between the exchange and the
/// manifest's rename: a pending manifest of another run whose files are
/// exactly the sink's becomes the manifest; other pending ones are removed.
/// Local disk only; call only while holding the sink's lock. Returns what
/// it did, for the log.
pub async fn recover_manifest(store: &dyn ObjectStore, sink: &Location, run_id: &str) -> Vec<String> {
    let mut done = Vec::new();
    let (Some((parent, name)), Some(_)) = (sink.parent_and_name(), sink.local_path()) else {
        return done;
    };
    let Some(parent_dir) = parent.local_path() else {
        return done;
    };
    let prefix = format!(".{name}.crmflow-manifest-");
    let Ok(entries) = std::fs::read_dir(&parent_dir) else {
        return done;
    };
    let listed: Option<BTreeSet<String>> = list_data(store, &sink.as_dir())
        .await
        .ok()
        .map(|l| l.into_iter().map(|(p, _)| p).collect());
    let manifest = local_path(sink, &manifest_path(sink, None));
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().to_string();
        if !file.starts_with(&prefix) || file.contains(run_id) {
            continue;
        }
        let pending: Option<Manifest> = std::fs::read(e.path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let matches = match (&pending, &listed) {
            (Some(m), Some(l)) => m.files.iter().map(|f| f.path.clone()).collect::<BTreeSet<_>>() == *l,
            _ => false,
        };
        if matches && let Some(to) = &manifest {
            if std::fs::rename(e.path(), to).is_ok() {
                done.push(format!("restored the manifest of {sink} from {}", e.path().display()));
            }
        } else if std::fs::remove_file(e.path()).is_ok() {
            done.push(format!("removed {}", e.path().display()));
        }
    }
    done
}

/// The file tag of `mode: append`: the same for the same pipeline, sink and
/// vars, so that a rerun replaces what it wrote before.
pub(crate) fn append_tag(run: &RunInfo, sink: &str) -> String {
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

/// A shared handle for tests and tools that inspect outputs.
pub async fn manifest_of(store: Arc<dyn ObjectStore>, sink: &Location) -> Option<Manifest> {
    read_manifest(store.as_ref(), sink).await
}
