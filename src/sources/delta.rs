//! Delta Lake tables through delta-rs (`deltalake-core`): opening a table
//! on the object store crmflow built for its location, and registering it
//! as a source (`format: delta`, optionally `version:` or `timestamp:` to
//! read it as of).
//!
//! delta-rs is handed crmflow's store ([`crate::storage::build_store`]: the
//! environment and the pipeline's `storage:` options), not its own, so a
//! Delta table on S3, Azure, GCS or local disk is reached exactly like a
//! Parquet directory there. Its log store is delta-rs's default one: a
//! commit is `put` of `_delta_log/<version>.json` if it does not exist
//! (object_store's `PutMode::Create`: a no-replace link on local disk,
//! `If-None-Match: *` on S3 and a conditional put on Azure and GCS), so
//! two writers can never both commit the same version.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use deltalake_core::DeltaTable;
use deltalake_core::logstore::{LogStoreRef, StorageConfig, default_logstore};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path as StorePath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions,
};

use crate::config::Format;
use crate::engine::Engine;
use crate::storage::Location;
use crate::vars::Vars;

use super::Source;

/// The version or time a Delta source is read as of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsOf {
    Version(u64),
    /// RFC 3339, as written.
    Timestamp(String),
}

/// The `version:` / `timestamp:` of a source spec.
///
/// # Errors
/// Either given for a source that is not `format: delta`, both given, a
/// negative version or a timestamp that is not RFC 3339.
pub fn as_of(
    format: Format,
    version: Option<i64>,
    timestamp: Option<&str>,
    vars: &Vars,
) -> Result<Option<AsOf>, String> {
    if format != Format::Delta && (version.is_some() || timestamp.is_some()) {
        return Err("version and timestamp apply to format: delta only".to_string());
    }
    match (version, timestamp) {
        (Some(_), Some(_)) => Err("give version or timestamp, not both".to_string()),
        (Some(v), None) if v < 0 => Err(format!("version must be 0 or more, got {v}")),
        (Some(v), None) => Ok(Some(AsOf::Version(v as u64))),
        (None, Some(t)) => {
            let t = vars.interpolate(t)?;
            chrono::DateTime::parse_from_rfc3339(&t)
                .map_err(|_| format!("timestamp \"{t}\" is not an RFC 3339 time (e.g. 2026-11-24T00:00:00Z)"))?;
            Ok(Some(AsOf::Timestamp(t)))
        }
        (None, None) => Ok(None),
    }
}

/// The Delta table at `loc` (a directory) on `store` (the store of `loc`'s
/// bucket, rooted there: delta-rs is handed crmflow's store, not one of its
/// own), not loaded yet. Commits pass failpoint `delta::commit:<subject>`
/// ([`crate::failpoint`]).
///
/// # Errors
/// delta-rs cannot use the location.
pub fn table_at(store: Arc<dyn ObjectStore>, loc: &Location, subject: &str) -> Result<DeltaTable, String> {
    let url = loc.as_dir().url().clone();
    let config = StorageConfig::default();
    let root: Arc<dyn ObjectStore> = Arc::new(Failpoints {
        inner: store,
        subject: subject.to_string(),
    });
    let prefixed = config
        .decorate_store(root.clone(), &url)
        .map_err(|e| format!("cannot open a Delta table at {loc}: {e}"))?;
    let log: LogStoreRef = default_logstore(Arc::from(prefixed), root, &url, &config);
    Ok(DeltaTable::new(log))
}

/// Whether `loc` holds a Delta log (any object below `_delta_log/`).
///
/// # Errors
/// The listing fails.
pub async fn has_log(store: &dyn ObjectStore, loc: &Location) -> Result<bool, String> {
    let log = loc.as_dir().child_path("_delta_log");
    match store.list(Some(&log)).next().await {
        None => Ok(false),
        Some(Ok(_)) => Ok(true),
        Some(Err(e)) => Err(format!("cannot list {loc}: {e}")),
    }
}

/// A Delta source as a table provider, loaded as of its `version` or
/// `timestamp`; its store is registered on the engine for the scans.
///
/// # Errors
/// A message: no Delta table there, no such version, an unreadable log.
pub async fn provider(
    engine: &Engine,
    store: Arc<dyn ObjectStore>,
    source: &Source,
) -> Result<Arc<dyn TableProvider>, String> {
    let loc = &source.location;
    if !has_log(store.as_ref(), loc).await? {
        return Err(format!("{loc} is not a Delta table (no _delta_log/ there)"));
    }
    let mut table = table_at(store, loc, &source.name)?;
    let loaded = match &source.as_of {
        None => table.load().await,
        Some(AsOf::Version(v)) => table.load_version(*v).await,
        Some(AsOf::Timestamp(t)) => {
            let t = chrono::DateTime::parse_from_rfc3339(t).map_err(|e| e.to_string())?;
            table.load_with_datetime(t.with_timezone(&chrono::Utc)).await
        }
    };
    loaded.map_err(|e| match e {
        deltalake_core::DeltaTableError::NotATable(_) => format!("{loc} is not a Delta table (no _delta_log/ there)"),
        e => match &source.as_of {
            Some(AsOf::Version(v)) => format!("cannot read version {v} of the Delta table at {loc}: {e}"),
            Some(AsOf::Timestamp(t)) => format!("cannot read the Delta table at {loc} as of {t}: {e}"),
            None => format!("cannot read the Delta table at {loc}: {e}"),
        },
    })?;
    table
        .update_datafusion_session(&engine.context().state())
        .map_err(|e| e.to_string())?;
    table
        .table_provider()
        .await
        .map_err(|e| format!("cannot read the Delta table at {loc}: {e}"))
}

/// A store that passes failpoint `delta::commit:<subject>` before writing a
/// commit (`_delta_log/*.json`) and `delta::data:<subject>` before writing
/// a data file: a test can kill a run while the data files of a write are
/// being written, or after they are all there and before the commit that
/// makes them visible. Everything else goes straight to the inner store.
#[derive(Debug)]
struct Failpoints {
    inner: Arc<dyn ObjectStore>,
    subject: String,
}

impl Failpoints {
    async fn hit(&self, location: &StorePath) -> object_store::Result<()> {
        let s = location.as_ref();
        let name = if s.contains("_delta_log/") {
            if !s.ends_with(".json") {
                return Ok(());
            }
            "delta::commit"
        } else {
            "delta::data"
        };
        crate::failpoint::hit(name, &self.subject)
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "failpoint",
                source: Box::new(e),
            })
    }
}

impl std::fmt::Display for Failpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Failpoints {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.hit(location).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.hit(location).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &StorePath, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &StorePath,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<StorePath>>,
    ) -> BoxStream<'static, object_store::Result<StorePath>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&StorePath>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&StorePath>,
        offset: &StorePath,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&StorePath>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &StorePath, to: &StorePath, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &StorePath, to: &StorePath, options: RenameOptions) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
