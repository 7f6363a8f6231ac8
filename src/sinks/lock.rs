//! The run lock of a sink: a lease object next to its location,
//! `<parent>/.<name>.crmflow.lock` (JSON: run id, pipeline, host, pid,
//! expiry), so two runs never write one sink at once.
//!
//! The lease is taken with an atomic create (`PutMode::Create`: a hard link
//! on local disk, `If-None-Match: *` on S3, the native preconditions of GCS
//! and Azure), refreshed while the run lives ([`refresh`], well inside
//! [`TTL`]) and deleted at the end. A second run fails at once naming the
//! holder, unless the lease is dead: expired, or held by a process of this
//! host that no longer exists. A dead lease is taken over (a conditional
//! update where the store has one, else delete and create again), and the
//! taker removes the dead run's leftovers. On a store without conditional
//! put the lease is advisory: it is checked, then written plainly, so two
//! runs starting within the same instant are not told apart.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::storage::Location;

/// How long a lease lives without a refresh.
pub const TTL: chrono::Duration = chrono::Duration::seconds(60);

/// How often a live run refreshes its leases.
pub const REFRESH: std::time::Duration = std::time::Duration::from_secs(15);

/// The lease object's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub run_id: String,
    pub pipeline: String,
    pub host: String,
    pub pid: u32,
    pub expires_at: DateTime<Utc>,
}

impl Lease {
    /// A lease for this process and run, expiring [`TTL`] from now.
    pub fn mine(run_id: &str, pipeline: &str) -> Lease {
        Lease {
            run_id: run_id.to_string(),
            pipeline: pipeline.to_string(),
            host: hostname(),
            pid: std::process::id(),
            expires_at: Utc::now() + TTL,
        }
    }

    /// Whether the run holding it may still be alive.
    pub fn is_live(&self) -> bool {
        if self.expires_at <= Utc::now() {
            return false;
        }
        // A process of this host that is gone holds nothing.
        self.host != hostname() || std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    fn renewed(&self) -> Lease {
        Lease {
            expires_at: Utc::now() + TTL,
            ..self.clone()
        }
    }
}

/// This host's name (for telling dead local holders from live ones).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// The lease object of a sink.
pub fn lock_path(sink: &Location) -> Option<StorePath> {
    let (parent, name) = sink.parent_and_name()?;
    Some(parent.child_path(&format!(".{name}.crmflow.lock")))
}

/// A lease this run holds.
#[derive(Debug, Clone)]
pub struct Held {
    pub store: Arc<dyn ObjectStore>,
    pub path: StorePath,
    pub lease: Lease,
    /// The dead run whose lease was taken over, if any.
    pub took_over: Option<Lease>,
    /// Local directories taking the lease created (innermost first), removed
    /// again on release if still empty: a failed run leaves nothing behind.
    pub created: Vec<std::path::PathBuf>,
}

fn body(lease: &Lease) -> PutPayload {
    // Serializing plain strings and numbers cannot fail.
    PutPayload::from(serde_json::to_vec(lease).unwrap_or_default())
}

async fn read(store: &dyn ObjectStore, path: &StorePath) -> Option<(Lease, UpdateVersion)> {
    let got = store.get(path).await.ok()?;
    let version = UpdateVersion {
        e_tag: got.meta.e_tag.clone(),
        version: got.meta.version.clone(),
    };
    let bytes = got.bytes().await.ok()?;
    Some((serde_json::from_slice(&bytes).ok()?, version))
}

fn locked_by(holder: &Lease) -> String {
    format!(
        "is locked by run {} of pipeline \"{}\" (host {}, pid {}) until {}; runs of one sink must not overlap",
        holder.run_id,
        holder.pipeline,
        holder.host,
        holder.pid,
        holder.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// Takes the lease of `sink` for `me`.
///
/// # Errors
/// A message: the sink is locked by a live run (naming it), or the store
/// failed.
pub async fn acquire(store: Arc<dyn ObjectStore>, sink: &Location, me: &Lease) -> Result<Held, String> {
    let path = lock_path(sink).ok_or_else(|| format!("{sink} has no parent for its lock"))?;
    let create = PutOptions::from(PutMode::Create);
    let mut created = Vec::new();
    if let Some(mut dir) = sink.parent_and_name().and_then(|(p, _)| p.local_path()) {
        while !dir.exists() {
            created.push(dir.clone());
            if !dir.pop() {
                break;
            }
        }
    }
    let held = |took_over| Held {
        store: store.clone(),
        path: path.clone(),
        lease: me.clone(),
        took_over,
        created: created.clone(),
    };
    match store.put_opts(&path, body(me), create.clone()).await {
        Ok(_) => return Ok(held(None)),
        Err(object_store::Error::AlreadyExists { .. }) => {}
        Err(object_store::Error::NotImplemented { .. }) => {
            // No conditional put: check, then write (advisory).
            if let Some((holder, _)) = read(store.as_ref(), &path).await
                && holder.is_live()
            {
                return Err(locked_by(&holder));
            }
            store
                .put(&path, body(me))
                .await
                .map_err(|e| format!("cannot write the lock {path}: {e}"))?;
            return Ok(held(None));
        }
        Err(e) => return Err(format!("cannot take the lock {path}: {e}")),
    }
    let Some((holder, version)) = read(store.as_ref(), &path).await else {
        // Released between our create and read: try once more.
        return match store.put_opts(&path, body(me), create).await {
            Ok(_) => Ok(held(None)),
            Err(e) => Err(format!("cannot take the lock {path}: {e}")),
        };
    };
    if holder.is_live() {
        return Err(locked_by(&holder));
    }
    // A dead run's lease: take it over.
    let update = PutOptions::from(PutMode::Update(version));
    match store.put_opts(&path, body(me), update).await {
        Ok(_) => Ok(held(Some(holder))),
        Err(object_store::Error::NotImplemented { .. }) => {
            let _ = store.delete(&path).await;
            match store.put_opts(&path, body(me), create).await {
                Ok(_) => Ok(held(Some(holder))),
                Err(object_store::Error::AlreadyExists { .. }) => Err(format!(
                    "is being taken over by another run at the same moment ({path})"
                )),
                Err(e) => Err(format!("cannot take the lock {path}: {e}")),
            }
        }
        Err(object_store::Error::Precondition { .. }) => Err(format!(
            "is being taken over by another run at the same moment ({path})"
        )),
        Err(e) => Err(format!("cannot take the lock {path}: {e}")),
    }
}

/// Extends the lease.
///
/// # Errors
/// The lease is no longer this run's (taken over after it expired), or the
/// store failed.
pub async fn refresh(held: &Held) -> Result<(), String> {
    match read(held.store.as_ref(), &held.path).await {
        Some((now, _)) if now.run_id != held.lease.run_id => {
            return Err(format!("the lock {} was taken over by run {}", held.path, now.run_id));
        }
        None => return Err(format!("the lock {} disappeared", held.path)),
        Some(_) => {}
    }
    held.store
        .put(&held.path, body(&held.lease.renewed()))
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot refresh the lock {}: {e}", held.path))
}

/// The lease of `sink`, if there is a readable one (live or not).
pub async fn holder(store: &dyn ObjectStore, sink: &Location) -> Option<Lease> {
    read(store, &lock_path(sink)?).await.map(|(lease, _)| lease)
}

/// Deletes the lease if it is still this run's (best effort).
pub async fn release(held: &Held) {
    if let Some((now, _)) = read(held.store.as_ref(), &held.path).await
        && now.run_id == held.lease.run_id
    {
        let _ = held.store.delete(&held.path).await;
    }
    for dir in &held.created {
        // Fails, harmlessly, unless empty.
        let _ = std::fs::remove_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_live_lease_excludes_a_second_run_and_a_dead_one_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new());
        let sink = Location::parse(dir.path().join("out/s").to_str().unwrap())
            .unwrap()
            .as_dir();
        std::fs::create_dir_all(dir.path().join("out")).unwrap();
        let a = Lease::mine("20261201T000000Z-aaaaaaaa", "p");
        let held = acquire(store.clone(), &sink, &a).await.unwrap();
        assert_eq!(held.took_over, None);
        let b = Lease::mine("20261201T000001Z-bbbbbbbb", "p");
        let err = acquire(store.clone(), &sink, &b).await.unwrap_err();
        assert_eq!(err, locked_by(&a));
        refresh(&held).await.unwrap();
        // A holder on this host whose process is gone is dead at once.
        let path = lock_path(&sink).unwrap();
        let dead = Lease {
            pid: u32::MAX - 1,
            ..a.clone()
        };
        store.put(&path, body(&dead)).await.unwrap();
        let took = acquire(store.clone(), &sink, &b).await.unwrap();
        assert_eq!(
            took.took_over.as_ref().map(|l| l.run_id.as_str()),
            Some(a.run_id.as_str())
        );
        // The first run has lost it and is told so.
        assert!(
            refresh(&held)
                .await
                .unwrap_err()
                .contains("was taken over by run 20261201T000001Z-bbbbbbbb")
        );
        // An expired lease of another host is dead too.
        let expired = Lease {
            host: "elsewhere".into(),
            expires_at: Utc::now() - chrono::Duration::seconds(1),
            ..a.clone()
        };
        assert!(!expired.is_live());
        assert!(
            Lease {
                host: "elsewhere".into(),
                ..a.clone()
            }
            .is_live()
        );
        release(&held).await; // not ours any more: left alone
        assert!(store.head(&path).await.is_ok());
        release(&took).await;
        assert!(store.head(&path).await.is_err());
    }
}
