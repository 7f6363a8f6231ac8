//! Where data lives: URLs for sources and sinks, and the object stores
//! behind them.
//!
//! Every location is a URL handled by `object_store` and registered with
//! DataFusion's runtime, so a local path, `file://`, `s3://`, `gs://`,
//! `az://`/`abfss://` and `memory://` all go through one code path. Stores
//! are configured from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`: each
//! cloud's standard variables and credential chain) with the pipeline's
//! `storage:` options on top. Option values never appear in messages.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use datafusion::error::DataFusionError;
use datafusion::execution::object_store::{ObjectStoreRegistry, ObjectStoreUrl};
use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use url::Url;

/// A resolved data location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    url: Url,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.local_path() {
            Some(p) => write!(f, "{}", p.display()),
            None => f.write_str(self.url.as_str()),
        }
    }
}

const SCHEMES: &[&str] = &[
    "file", "s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss", "memory",
];

impl Location {
    /// Parses a path or URL. Relative paths are taken from the current
    /// directory. A trailing `/` marks a directory; so does a local path that
    /// is an existing directory.
    ///
    /// # Errors
    /// An unsupported scheme or a malformed URL, as a message.
    pub fn parse(s: &str) -> Result<Location, String> {
        if s.is_empty() {
            return Err("the location is empty".to_string());
        }
        if let Some((scheme, _)) = s.split_once("://") {
            if !SCHEMES.contains(&scheme) {
                return Err(format!(
                    "unsupported scheme \"{scheme}://\" (use a path or one of file://, s3://, gs://, az://, abfss://, memory://)"
                ));
            }
            let mut url = Url::parse(s).map_err(|e| format!("invalid URL \"{s}\": {e}"))?;
            if scheme == "s3a" {
                url = Url::parse(&format!("s3{}", &s[3..])).map_err(|e| e.to_string())?;
            }
            if scheme != "file" && scheme != "memory" && url.host_str().unwrap_or("").is_empty() {
                return Err(format!("\"{s}\" names no bucket or container"));
            }
            return Ok(Location { url });
        }
        let path = std::path::Path::new(s);
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| format!("cannot resolve \"{s}\": {e}"))?
                .join(path)
        };
        let abs = normalize(&abs);
        let dir = s.ends_with('/') || abs.is_dir();
        let url = if dir {
            Url::from_directory_path(&abs)
        } else {
            Url::from_file_path(&abs)
        }
        .map_err(|()| format!("cannot turn \"{s}\" into a file URL"))?;
        Ok(Location { url })
    }

    /// The location as a directory (with a trailing `/`).
    pub fn as_dir(&self) -> Location {
        let mut url = self.url.clone();
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        Location { url }
    }

    /// Whether it names a directory (ends with `/`).
    pub fn is_dir(&self) -> bool {
        self.url.path().ends_with('/')
    }

    /// The full URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// `scheme://[user@]host[:port]`, the URL a store is registered under
    /// ([`store_key`]).
    pub fn store_url(&self) -> ObjectStoreUrl {
        let s = store_key(&self.url);
        // Cannot fail: scheme and authority come from a parsed URL.
        ObjectStoreUrl::parse(s).expect("scheme://authority of a parsed URL is a valid URL")
    }

    /// The path inside the store (no leading or trailing `/`).
    pub fn path(&self) -> StorePath {
        StorePath::from_url_path(self.url.path()).unwrap_or_default()
    }

    /// The local filesystem path, for `file://` locations.
    pub fn local_path(&self) -> Option<PathBuf> {
        if self.url.scheme() == "file" {
            self.url.to_file_path().ok()
        } else {
            None
        }
    }

    /// The root of this location's store (`s3://bucket/`, `file:///`).
    pub fn store_root(&self) -> Location {
        let mut url = self.url.clone();
        url.set_path("/");
        Location { url }
    }

    /// A location below this one (`rel` without leading `/`).
    pub fn join(&self, rel: &str) -> Location {
        let base = self.as_dir();
        let mut url = base.url.clone();
        url.set_path(&format!("{}{}", base.url.path(), rel));
        Location { url }
    }

    /// The directory holding this location and this location's last segment.
    pub fn parent_and_name(&self) -> Option<(Location, String)> {
        let path = self.url.path().trim_end_matches('/');
        let (parent, name) = path.rsplit_once('/')?;
        if name.is_empty() {
            return None;
        }
        let mut url = self.url.clone();
        url.set_path(&format!("{parent}/"));
        Some((Location { url }, name.to_string()))
    }

    /// A store path below this location's path.
    ///
    /// `rel` is in the store's encoded form, as listings return it (a
    /// partition directory `region=50%25` for the value `50%`): its parts
    /// are taken as they are, never encoded a second time.
    pub fn child_path(&self, rel: &str) -> StorePath {
        let base = self.path();
        let parts: Vec<&str> = std::iter::once(base.as_ref())
            .chain(rel.split('/'))
            .filter(|s| !s.is_empty())
            .collect();
        StorePath::parse(parts.join("/")).unwrap_or_else(|_| {
            // Not a valid encoded path (a raw name with a character the
            // store encodes): encode each part.
            rel.split('/')
                .filter(|s| !s.is_empty())
                .fold(base, |p, part| p.join(part))
        })
    }
}

/// Removes `.` and `..` segments without touching the filesystem.
fn normalize(p: &std::path::Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// In-memory stores by authority, shared within the process so that
/// `memory://bucket/` names the same store for sources and sinks.
fn memory_store(authority: &str) -> Arc<dyn ObjectStore> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    stores
        .entry(authority.to_string())
        .or_insert_with(|| Arc::new(object_store::memory::InMemory::new()))
        .clone()
}

/// Builds the store for a location from the environment plus `options`.
///
/// # Errors
/// An option the store does not know, or a store that cannot be built
/// (e.g. no region). The message never contains option values.
pub fn build_store(loc: &Location, options: &BTreeMap<String, String>) -> Result<Arc<dyn ObjectStore>, String> {
    let url = loc.url();
    let base = format!("{}://{}", url.scheme(), url.authority());
    fn apply<B, K>(
        mut builder: B,
        options: &BTreeMap<String, String>,
        prefix: &str,
        with: impl Fn(B, K, &str) -> B,
    ) -> Result<B, String>
    where
        K: std::str::FromStr,
    {
        for (k, v) in options {
            let key = k.to_ascii_lowercase();
            // Options of other clouds are skipped: one storage block serves a
            // pipeline reading from S3 and writing to GCS. Keys without a
            // cloud prefix are rejected by `config::validate`.
            if !key.starts_with(prefix) {
                continue;
            }
            let parsed: K = key
                .parse()
                .map_err(|_| format!("storage option \"{k}\" is not known to the {prefix}* store"))?;
            builder = with(builder, parsed, v);
        }
        Ok(builder)
    }
    let retry = retry_config(options)?;
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "file" => Arc::new(object_store::local::LocalFileSystem::new()),
        "memory" => memory_store(url.authority()),
        "s3" => {
            let b = object_store::aws::AmazonS3Builder::from_env()
                .with_url(&base)
                .with_retry(retry);
            let b = apply(b, options, "aws_", |b, k, v| b.with_config(k, v))?;
            Arc::new(b.build().map_err(|e| e.to_string())?)
        }
        "gs" => {
            let b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(&base)
                .with_retry(retry);
            let b = apply(b, options, "google_", |b, k, v| b.with_config(k, v))?;
            Arc::new(b.build().map_err(|e| e.to_string())?)
        }
        _ => {
            let b = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retry);
            let b = apply(b, options, "azure_", |b, k, v| b.with_config(k, v))?;
            Arc::new(b.build().map_err(|e| e.to_string())?)
        }
    };
    Ok(store)
}

/// The key of a location's store: `scheme://[user@]host[:port]`. Unlike
/// DataFusion's default registry (scheme and host), the user part is kept:
/// in Hadoop-style Azure URLs (`abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/`)
/// it is the container, so every container of an account gets a store of
/// its own. A password is never part of a key.
pub fn store_key(url: &Url) -> String {
    let user = url.username();
    let at = if user.is_empty() { "" } else { "@" };
    format!(
        "{}://{user}{at}{}",
        url.scheme(),
        &url[url::Position::BeforeHost..url::Position::AfterPort]
    )
}

/// An object-store registry, one store per bucket or container
/// ([`store_key`]), that builds the store of a URL on first use from the
/// environment and the pipeline's storage options ([`build_store`]) and
/// keeps it for the life of the runtime. Every engine's runtime has one:
/// the local engine's, and on Ballista the client's, the scheduler's and
/// each executor's (there the options come with the job).
pub struct StoreRegistry {
    options: BTreeMap<String, String>,
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl std::fmt::Debug for StoreRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stores: Vec<String> = match self.stores.read() {
            Ok(s) => s.keys().cloned().collect(),
            Err(_) => vec![],
        };
        f.debug_struct("StoreRegistry")
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .field("stores", &stores)
            .finish()
    }
}

impl StoreRegistry {
    /// A registry building stores with `options` on top of the environment.
    pub fn new(options: BTreeMap<String, String>) -> StoreRegistry {
        StoreRegistry {
            options,
            stores: RwLock::new(HashMap::new()),
        }
    }
}

impl ObjectStoreRegistry for StoreRegistry {
    fn register_store(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        let mut stores = self.stores.write().unwrap_or_else(|p| p.into_inner());
        stores.insert(store_key(url), store)
    }

    fn deregister_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        let mut stores = self.stores.write().unwrap_or_else(|p| p.into_inner());
        stores
            .remove(&store_key(url))
            .ok_or_else(|| DataFusionError::Configuration(format!("no object store is registered for {url}")))
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        let key = store_key(url);
        if let Some(store) = self.stores.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(store.clone());
        }
        let loc = Location::parse(&format!("{key}/")).map_err(DataFusionError::Configuration)?;
        let store = build_store(&loc, &self.options)
            .map_err(|m| DataFusionError::Configuration(format!("object store for {key}: {m}")))?;
        let mut stores = self.stores.write().unwrap_or_else(|p| p.into_inner());
        Ok(stores.entry(key).or_insert(store).clone())
    }
}

/// Storage options that are crmflow's own (not a cloud's): how long to
/// retry a failing request.
pub const RETRY_KEYS: &[&str] = &["retry_max", "retry_timeout"];

/// `retry_max` (default 10) and `retry_timeout` (seconds, default 180) as
/// object_store's retry policy.
fn retry_config(options: &BTreeMap<String, String>) -> Result<object_store::RetryConfig, String> {
    let mut retry = object_store::RetryConfig::default();
    if let Some(v) = options.get("retry_max") {
        retry.max_retries = v
            .parse()
            .map_err(|_| format!("storage option \"retry_max\" must be a whole number, got \"{v}\""))?;
    }
    if let Some(v) = options.get("retry_timeout") {
        let secs: f64 = v
            .trim_end_matches('s')
            .parse()
            .map_err(|_| format!("storage option \"retry_timeout\" must be seconds (e.g. 30), got \"{v}\""))?;
        retry.retry_timeout = std::time::Duration::from_secs_f64(secs.max(0.0));
        retry.backoff.max_backoff = retry
            .backoff
            .max_backoff
            .min(retry.retry_timeout.max(std::time::Duration::from_millis(100)));
    }
    Ok(retry)
}

/// Checks that a sink location can be written: puts and deletes a small
/// probe object next to it (a local directory is created if needed).
///
/// # Errors
/// What the store said, as a message (an unknown bucket, a missing
/// permission, an unreachable endpoint).
pub async fn probe_writable(store: &dyn ObjectStore, loc: &Location, run_id: &str) -> Result<(), String> {
    use object_store::ObjectStoreExt;
    let (parent, name) = loc
        .parent_and_name()
        .ok_or_else(|| format!("{loc} has no parent directory"))?;
    if let Some(p) = parent.local_path() {
        // Probe the nearest existing directory: a failed run creates nothing.
        let mut dir = p.as_path();
        while !dir.exists() {
            dir = dir
                .parent()
                .ok_or_else(|| format!("{} has no existing ancestor", p.display()))?;
        }
        let probe = dir.join(format!(".{name}.crmflow-probe-{run_id}"));
        std::fs::write(&probe, b"crmflow write probe")
            .map_err(|e| format!("cannot write to {}: {e}", dir.display()))?;
        return std::fs::remove_file(&probe).map_err(|e| format!("cannot delete {}: {e}", probe.display()));
    }
    let probe = parent.child_path(&format!(".{name}.crmflow-probe-{run_id}"));
    store
        .put(&probe, object_store::PutPayload::from_static(b"crmflow write probe"))
        .await
        .map_err(|e| format!("cannot write to {parent}: {e}"))?;
    store
        .delete(&probe)
        .await
        .map_err(|e| format!("cannot delete from {parent}: {e}"))?;
    Ok(())
}

/// The objects below a directory that readers see: (path relative to it,
/// metadata), in listing order. Objects with a `.` or `_` path part
/// (staging, `_SUCCESS`) are left out, as Spark and Hive do. The one lister
/// of data files, for sources and sinks alike.
///
/// # Errors
/// A listing failure, as a message naming the directory.
pub async fn list_visible(
    store: &dyn ObjectStore,
    dir: &Location,
) -> Result<Vec<(String, object_store::ObjectMeta)>, String> {
    use futures::TryStreamExt;
    let dir = dir.as_dir();
    let prefix = dir.path();
    let skip = prefix.parts().count();
    let metas: Vec<object_store::ObjectMeta> = store.list(Some(&prefix)).try_collect().await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => format!("{dir} does not exist"),
        e => format!("cannot list {dir}: {e}"),
    })?;
    Ok(metas
        .into_iter()
        .filter_map(|m| {
            let rel: Vec<String> = m.location.parts().skip(skip).map(|p| p.as_ref().to_string()).collect();
            let hidden = rel.iter().any(|p| p.starts_with('.') || p.starts_with('_'));
            (!hidden).then(|| (rel.join("/"), m))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_urls() {
        let l = Location::parse("s3://bucket/out/scores/").unwrap();
        assert_eq!(l.store_url().as_str(), "s3://bucket/");
        assert_eq!(l.path().as_ref(), "out/scores");
        assert!(l.is_dir());
        let (parent, name) = l.parent_and_name().unwrap();
        assert_eq!(parent.url().as_str(), "s3://bucket/out/");
        assert_eq!(name, "scores");

        let l = Location::parse("/tmp/x/../y/file.parquet").unwrap();
        assert_eq!(l.url().as_str(), "file:///tmp/y/file.parquet");
        assert_eq!(l.local_path().unwrap(), PathBuf::from("/tmp/y/file.parquet"));
        assert_eq!(
            Location::parse("/tmp/q").unwrap().join("a=1/f.parquet").url().as_str(),
            "file:///tmp/q/a=1/f.parquet"
        );
        // Listed (encoded) relative paths are joined as they are.
        let dir = Location::parse("s3://b/out/t/").unwrap();
        assert_eq!(
            dir.child_path("region=50%25/x.parquet").as_ref(),
            "out/t/region=50%25/x.parquet"
        );
        assert_eq!(dir.child_path("_SUCCESS").as_ref(), "out/t/_SUCCESS");
    }

    #[test]
    fn rejects_unknown_schemes_and_missing_buckets() {
        assert_eq!(
            Location::parse("ftp://host/x").unwrap_err(),
            "unsupported scheme \"ftp://\" (use a path or one of file://, s3://, gs://, az://, abfss://, memory://)"
        );
        assert_eq!(
            Location::parse("s3:///x").unwrap_err(),
            "\"s3:///x\" names no bucket or container"
        );
    }

    #[test]
    fn unknown_storage_option_is_named_without_its_value() {
        let loc = Location::parse("s3://bucket/x/").unwrap();
        let opts = BTreeMap::from([("aws_secret_acess_key".to_string(), "hunter2".to_string())]);
        let err = build_store(&loc, &opts).unwrap_err();
        assert_eq!(
            err,
            "storage option \"aws_secret_acess_key\" is not known to the aws_* store"
        );
    }
    #[test]
    fn every_container_of_an_account_has_a_store_of_its_own() {
        let crm = Url::parse("abfss://crm@acct.dfs.core.windows.net/data/x/").unwrap();
        let crm2 = Url::parse("abfss://crm2@acct.dfs.core.windows.net/out/").unwrap();
        assert_eq!(store_key(&crm), "abfss://crm@acct.dfs.core.windows.net");
        assert_eq!(store_key(&crm2), "abfss://crm2@acct.dfs.core.windows.net");
        assert_eq!(store_key(&Url::parse("s3://b1/x").unwrap()), "s3://b1");
        assert_eq!(store_key(&Url::parse("az://c:secret@acct/x").unwrap()), "az://c@acct");
        assert_eq!(
            Location::parse("abfss://crm@acct.dfs.core.windows.net/data/")
                .unwrap()
                .store_url()
                .as_str(),
            "abfss://crm@acct.dfs.core.windows.net/"
        );
        let reg = StoreRegistry::new(BTreeMap::new());
        let a: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let b: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        reg.register_store(&crm, a.clone());
        reg.register_store(&crm2, b.clone());
        assert!(Arc::ptr_eq(&reg.get_store(&crm).unwrap(), &a));
        assert!(Arc::ptr_eq(&reg.get_store(&crm2).unwrap(), &b));
        // What DataFusion looks a scan's store up by.
        let listing = datafusion::datasource::listing::ListingTableUrl::parse(crm.as_str()).unwrap();
        assert!(Arc::ptr_eq(
            &reg.get_store(listing.object_store().as_ref()).unwrap(),
            &a
        ));
    }
}
