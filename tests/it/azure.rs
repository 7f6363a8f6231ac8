//! Azure Blob Storage against Azurite (npm `azurite`, the blob service in
//! memory), started on 127.0.0.1 by each test on a port it picks itself.
//! `.ci/run` installs it into `target/azurite`; on a machine without it the
//! harness installs it there with npm (set CRMFLOW_AZURITE to use another
//! `azurite-blob`). Without npm the tests say so and pass, except in CI
//! (`CI` set), where they fail.
//!
//! crmflow is pointed at it the documented way: `AZURE_STORAGE_USE_EMULATOR=true`
//! and `AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:PORT`, account
//! `devstoreaccount1` with Azurite's well-known key.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::path::Path as StorePath;

use super::common::{Output, error_of, tiny};
use super::s3::{manifest_rows, objects, read_store_parquet, rows_as_text};

const AZURITE_VERSION: &str = "3.35.0";
const ACCOUNT: &str = "devstoreaccount1";
/// Azurite's published development key (not a secret).
const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The `azurite-blob` binary, installed into target/azurite on first use;
/// `None` (the test is skipped) when it cannot be installed outside CI.
fn azurite_blob() -> Option<PathBuf> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Ok(p) = std::env::var("CRMFLOW_AZURITE") {
        return Some(PathBuf::from(p));
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/azurite");
    let bin = dir.join("node_modules/.bin/azurite-blob");
    if bin.exists() {
        return Some(bin);
    }
    let _ = std::fs::create_dir_all(&dir);
    let installed = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent"])
        .arg(format!("azurite@{AZURITE_VERSION}"))
        .current_dir(&dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if installed && bin.exists() {
        return Some(bin);
    }
    let why = format!(
        "Azurite is not installed and `npm install azurite@{AZURITE_VERSION}` into {} failed; install it or set CRMFLOW_AZURITE to an azurite-blob binary",
        dir.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("SKIPPED: {why}");
    None
}

/// A running Azurite blob service; killed on drop.
pub struct Azurite {
    child: Child,
    pub port: u16,
}

impl Azurite {
    /// Starts Azurite on a port it picks (`--blobPort 0`), read back from
    /// its startup line. `None` when Azurite is not available (see
    /// [`azurite_blob`]).
    pub fn start() -> Option<Azurite> {
        let bin = azurite_blob()?;
        let mut child = Command::new(bin)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--loose",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("azurite-blob starts");
        let port = super::common::announced_port(
            child.stdout.take().unwrap(),
            "listens on http://127.0.0.1:",
            "azurite-blob",
        );
        Some(Azurite { child, port })
    }

    /// Creates a container (Create Container, signed with the account key:
    /// Azurite checks signatures).
    pub fn container(&self, name: &str) {
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let version = "2021-08-06";
        let resource = format!("/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container");
        let to_sign = format!("PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}");
        let key = base64::engine::general_purpose::STANDARD.decode(KEY).unwrap();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        let sig = base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, to_sign.as_bytes()));
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "PUT /{ACCOUNT}/{name}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\nAuthorization: SharedKey {ACCOUNT}:{sig}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    }

    /// The store of a container, for writing inputs and reading outputs.
    pub fn store(&self, container: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            MicrosoftAzureBuilder::new()
                .with_account(ACCOUNT)
                .with_access_key(KEY)
                .with_container_name(container)
                .with_endpoint(format!("http://127.0.0.1:{}/{ACCOUNT}", self.port))
                .with_allow_http(true)
                .build()
                .unwrap(),
        )
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs crmflow pointed at Azurite on `port`, the way the README says.
pub fn crmflow_azure(dir: &Path, port: u16, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_crmflow"))
        .args(args)
        .current_dir(dir)
        .env("CRMFLOW_LOG", "warn")
        .env_remove("RUST_LOG")
        .env("AZURE_STORAGE_USE_EMULATOR", "true")
        .env("AZURITE_BLOB_STORAGE_URL", format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Uploads every file below `local` to `prefix/` of the store.
async fn upload(store: &dyn ObjectStore, local: &Path, prefix: &str) {
    for e in std::fs::read_dir(local).unwrap() {
        let p = e.unwrap().path();
        let key = format!("{prefix}/{}", p.file_name().unwrap().to_string_lossy());
        if p.is_dir() {
            Box::pin(upload(store, &p, &key)).await;
        } else {
            store
                .put(&StorePath::from(key), std::fs::read(&p).unwrap().into())
                .await
                .unwrap();
        }
    }
}

#[test]
fn the_demo_pipeline_runs_on_azurite_and_reruns_idempotently() {
    let Some(azurite) = Azurite::start() else { return };
    azurite.container("crm");
    let store = azurite.store("crm");
    let rt = rt();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    rt.block_on(upload(store.as_ref(), &root.join("data/sample"), "data"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pipeline = root.join("pipelines/crm_nightly.yaml");
    let pipeline = pipeline.to_str().unwrap();
    let on_azure = [
        "run",
        pipeline,
        "--var",
        "data=az://crm/data",
        "--var",
        "out=az://crm/out",
    ];
    let out = crmflow_azure(d, azurite.port, &on_azure);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let first = rt.block_on(objects(store.as_ref(), "out"));
    let local = crmflow_azure(
        d,
        azurite.port,
        &[
            "run",
            pipeline,
            "--var",
            &format!("data={}/data/sample", root.display()),
            "--var",
            "out=local",
        ],
    );
    assert_eq!(local.code, 0, "{}", local.stderr);

    let tables = [
        "customer_scores",
        "segment_profile",
        "revenue_forecast_metrics",
        "churn_model",
    ];
    let read_all = |rt: &tokio::runtime::Runtime| -> Vec<(String, Vec<String>, Vec<String>)> {
        tables
            .iter()
            .map(|t| {
                let (_, files) = rt.block_on(manifest_rows(store.as_ref(), &format!("out/{t}")));
                let rows = rows_as_text(&rt.block_on(read_store_parquet(store.as_ref(), &files, &format!("out/{t}"))));
                (t.to_string(), files, rows)
            })
            .collect()
    };
    let before = read_all(&rt);
    for (table, _, rows) in &before {
        let from_disk = rows_as_text(&super::common::read_dir(&d.join("local").join(table)));
        assert_eq!(rows.len(), from_disk.len(), "{table}");
        for (x, y) in rows.iter().zip(&from_disk) {
            for (u, v) in x.split('|').zip(y.split('|')) {
                let same = u == v
                    || matches!((u.parse::<f64>(), v.parse::<f64>()), (Ok(p), Ok(q)) if (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1e-3));
                assert!(
                    same,
                    "{table} differs between Azure and local disk: {u} vs {v}\n{x}\n{y}"
                );
            }
        }
    }
    let (m, _) = rt.block_on(manifest_rows(store.as_ref(), "out/customer_scores"));
    assert_eq!(m["rows"], 5000);
    assert_eq!(m["vars"]["data"], "az://crm/data");

    // A rerun replaces every output: the same rows, only the new run's
    // files and the manifests (no staging, no probe, no lock left).
    let out = crmflow_azure(d, azurite.port, &on_azure);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let after = read_all(&rt);
    let everything = rt.block_on(objects(store.as_ref(), ""));
    let mut expected: Vec<String> = after
        .iter()
        .flat_map(|(t, files, _)| {
            files
                .iter()
                .map(move |f| format!("out/{t}/{f}"))
                .chain([format!("out/{t}/_SUCCESS")])
        })
        .collect();
    expected.sort();
    let outputs: Vec<String> = everything
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| k.starts_with("out/") && tables.iter().any(|t| k.starts_with(&format!("out/{t}/"))))
        .collect();
    assert_eq!(outputs, expected);
    assert!(
        everything
            .iter()
            .all(|(k, _)| k.starts_with("data/") || k.starts_with("out/")),
        "left behind: {:?}",
        everything
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !k.starts_with("data/"))
            .collect::<Vec<_>>()
    );
    for ((t, _, a), (_, _, b)) in before.iter().zip(&after) {
        assert_eq!(a.len(), b.len(), "{t}");
    }
    assert_ne!(
        first,
        everything
            .into_iter()
            .filter(|(k, _)| k.starts_with("out"))
            .collect::<Vec<_>>()
    );
}

const TWO_CONTAINERS: &str = "name: two
sources:
  customers: {url: \"abfss://crm@devstoreaccount1.dfs.core.windows.net/data/customers/\"}
steps:
  - name: ids
    sql: SELECT customer_id, acquisition_cost FROM customers
sinks:
  - table: ids
    url: \"abfss://crm2@devstoreaccount1.dfs.core.windows.net/data/ids/\"
";

/// Hadoop-style URLs name the container before the `@`: a pipeline reading
/// container `crm` and writing `crm2` of the same account reads `crm`,
/// even when `crm2` has a table at the same path.
#[test]
fn two_containers_of_one_account_have_a_store_each() {
    let Some(azurite) = Azurite::start() else { return };
    azurite.container("crm");
    azurite.container("crm2");
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let crm = azurite.store("crm");
    let crm2 = azurite.store("crm2");
    rt.block_on(upload(crm.as_ref(), &d.join("data/customers"), "data/customers"));
    std::fs::write(d.join("p.yaml"), TWO_CONTAINERS).unwrap();

    // Only crm has the source: it is found (not "no Parquet files found").
    let out = crmflow_azure(d, azurite.port, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (m, files) = rt.block_on(manifest_rows(crm2.as_ref(), "data/ids"));
    assert_eq!(m["rows"], 4);
    let rows = rows_as_text(&rt.block_on(read_store_parquet(crm2.as_ref(), &files, "data/ids")));
    assert_eq!(rows, ["1|10.0", "2|20.0", "3|5.0", "4|7.0"]);
    assert!(
        rt.block_on(objects(crm.as_ref(), "data/ids")).is_empty(),
        "written to crm"
    );

    // A decoy customers table in crm2 at the same path: still crm's rows.
    let decoy = d.join("decoy");
    super::common::write_crm(
        &decoy,
        &[super::common::Customer {
            id: 99,
            signup: "2026-01-01",
            cost: 1.0,
        }],
        &[],
        &[],
    );
    rt.block_on(upload(crm2.as_ref(), &decoy.join("customers"), "data/customers"));
    let out = crmflow_azure(d, azurite.port, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (_, files) = rt.block_on(manifest_rows(crm2.as_ref(), "data/ids"));
    let rows = rows_as_text(&rt.block_on(read_store_parquet(crm2.as_ref(), &files, "data/ids")));
    assert_eq!(rows, ["1|10.0", "2|20.0", "3|5.0", "4|7.0"]);
}

#[test]
fn a_missing_container_is_named_before_reading_data() {
    let Some(azurite) = Azurite::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    std::fs::write(
        d.join("p.yaml"),
        "name: nocontainer
sources:
  customers: {url: data/customers/}
steps:
  - name: ids
    sql: SELECT customer_id FROM customers
sinks:
  - table: ids
    url: az://nope/out/ids/
",
    )
    .unwrap();
    let out = crmflow_azure(d, azurite.port, &["run", "p.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let err = error_of(&out);
    assert!(
        err.starts_with("sink \"ids\" (az://nope/out/ids/): cannot write to az://nope/out/: "),
        "{err}"
    );
    assert!(err.contains("ContainerNotFound"), "{err}");
}
