//! Object storage against a real S3-protocol server: moto's server (PyPI
//! `moto[server]`), started on 127.0.0.1 by each test. `.ci/run` installs
//! it; on a machine without it the harness installs it into
//! `target/moto-venv` (set CRMFLOW_MOTO_SERVER to use another binary).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::common::{Output, error_of, read_dir, tiny};

/// The moto server binary, installed on first use if missing.
fn moto_server() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Ok(p) = std::env::var("CRMFLOW_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    if let Ok(out) = Command::new("sh").args(["-c", "command -v moto_server"]).output()
        && out.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/moto-venv");
    let bin = venv.join("bin/moto_server");
    if !bin.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "moto[server]==5.2.5"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        assert!(
            ok,
            "could not install moto[server] into {}; install it (pip install 'moto[server]') or set CRMFLOW_MOTO_SERVER",
            venv.display()
        );
    }
    bin
}

/// A running moto server; killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Starts moto on a port it picks itself (`-p 0`) and reads the port
    /// back from its startup line: no window between choosing a free port
    /// and binding it in which another server could take it.
    pub fn start() -> Moto {
        let mut child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("moto_server starts");
        // Werkzeug logs ` * Running on http://127.0.0.1:PORT` on stderr.
        let port = super::common::announced_port(
            child.stderr.take().unwrap(),
            "Running on http://127.0.0.1:",
            "moto_server",
        );
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "moto_server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto { child, port }
    }

    /// Creates a bucket with a plain HTTP PUT (moto does not check
    /// signatures).
    pub fn bucket(&self, name: &str) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }

    /// The store of a bucket, for reading outputs back.
    pub fn store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_endpoint(format!("http://127.0.0.1:{}", self.port))
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_access_key_id("test")
                .with_secret_access_key("test")
                .build()
                .unwrap(),
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs crmflow with the S3 environment of `port`.
pub fn crmflow_s3(dir: &Path, port: u16, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_crmflow"))
        .args(args)
        .current_dir(dir)
        .env("CRMFLOW_LOG", "warn")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "s3cr3t-do-not-log")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("AWS_ALLOW_HTTP", "true")
        .output()
        .unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every object below `prefix` with its bytes.
pub async fn objects(store: &dyn ObjectStore, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let metas: Vec<object_store::ObjectMeta> = store.list(Some(&StorePath::from(prefix))).try_collect().await.unwrap();
    let mut out = Vec::new();
    for m in metas {
        let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
        out.push((m.location.to_string(), bytes.to_vec()));
    }
    out.sort();
    out
}

/// Row count and sum of `value` over the Parquet objects below `prefix`
/// that the manifest (beside the sink) lists.
pub async fn manifest_rows(store: &dyn ObjectStore, prefix: &str) -> (serde_json::Value, Vec<String>) {
    let (parent, name) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    let key = if parent.is_empty() {
        format!(".{name}.crmflow-manifest.json")
    } else {
        format!("{parent}/.{name}.crmflow-manifest.json")
    };
    let m = store.get(&StorePath::from(key)).await.unwrap().bytes().await.unwrap();
    let m: serde_json::Value = serde_json::from_slice(&m).unwrap();
    let files = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    (m, files)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const DAILY: &str = "name: daily
vars:
  as_of: \"2026-11-24\"
  out: s3://crm/out
storage:
  retry_max: \"2\"
  retry_timeout: \"3\"
sources:
  customers: {url: data/customers/}
  transactions: {url: data/transactions/}
steps:
  - name: daily
    sql: |
      SELECT CAST(${as_of} AS DATE) AS as_of, c.customer_id, count(t.amount) AS n
      FROM customers c LEFT JOIN transactions t ON t.customer_id = c.customer_id
        AND CAST(t.transaction_ts AS DATE) <= CAST(${as_of} AS DATE)
      GROUP BY c.customer_id
sinks:
  - table: daily
    url: ${out}/daily/
    partition_by: [as_of]
    mode: MODE
";

#[test]
fn publish_modes_on_s3_replace_never_duplicate() {
    let moto = Moto::start();
    moto.bucket("crm");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let store = moto.store("crm");
    let rt = rt();

    // overwrite: two runs, only the second's files remain, listed in _SUCCESS.
    std::fs::write(d.join("p.yaml"), DAILY.replace("MODE", "overwrite")).unwrap();
    for _ in 0..2 {
        let out = crmflow_s3(d, moto.port, &["run", "p.yaml"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(!out.stderr.contains("s3cr3t"), "a secret was logged");
        assert!(!out.stdout.contains("s3cr3t"), "a secret was printed");
    }
    let objs = rt.block_on(objects(store.as_ref(), "out"));
    let names: Vec<&str> = objs.iter().map(|(n, _)| n.as_str()).collect();
    let (m, files) = rt.block_on(manifest_rows(store.as_ref(), "out/daily"));
    assert_eq!(m["rows"], 4);
    let mut listed: Vec<String> = files.iter().map(|f| format!("out/daily/{f}")).collect();
    listed.push("out/daily/_SUCCESS".into());
    listed.push("out/.daily.crmflow-manifest.json".into());
    listed.sort();
    assert_eq!(
        names, listed,
        "only the manifest's files, _SUCCESS and the manifest are there (no staging, no old files)"
    );
    assert!(
        objs.iter().any(|(n, b)| n == "out/daily/_SUCCESS" && b.is_empty()),
        "an empty _SUCCESS"
    );
    assert!(
        files.iter().all(|f| f.starts_with("as_of=2026-11-24/part-")),
        "{files:?}"
    );

    // overwrite_partitions: another day adds a partition; a rerun of a day
    // replaces only that day.
    std::fs::write(d.join("p.yaml"), DAILY.replace("MODE", "overwrite_partitions")).unwrap();
    for as_of in ["2026-03-01", "2026-03-01", "2026-11-24"] {
        let out = crmflow_s3(d, moto.port, &["run", "p.yaml", "--var", &format!("as_of={as_of}")]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let (m, files) = rt.block_on(manifest_rows(store.as_ref(), "out/daily"));
    assert_eq!(m["rows"], 8, "two days of 4 customers: {files:?}");
    assert_eq!(
        files.iter().filter(|f| f.starts_with("as_of=2026-03-01/")).count(),
        files.iter().filter(|f| f.starts_with("as_of=2026-11-24/")).count()
    );
    let all = rt.block_on(objects(store.as_ref(), "out/daily"));
    assert_eq!(all.len(), files.len() + 1);

    // append: same vars twice = one copy; new vars add files.
    std::fs::write(
        d.join("p.yaml"),
        DAILY
            .replace("MODE", "append")
            .replace("s3://crm/out", "s3://crm/appended"),
    )
    .unwrap();
    for as_of in ["2026-05-01", "2026-05-01", "2026-05-02"] {
        let out = crmflow_s3(d, moto.port, &["run", "p.yaml", "--var", &format!("as_of={as_of}")]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let (m, _) = rt.block_on(manifest_rows(store.as_ref(), "appended/daily"));
    assert_eq!(m["rows"], 8);
}

#[test]
fn unknown_bucket_fails_before_reading_data() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    // No sources exist either: the sink check comes first.
    std::fs::write(
        d.join("p.yaml"),
        DAILY.replace("MODE", "overwrite").replace("data/", "missing/"),
    )
    .unwrap();
    let out = crmflow_s3(d, moto.port, &["run", "p.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let err = error_of(&out);
    assert!(
        err.starts_with("sink \"daily\" (s3://crm/out/daily/): cannot write to s3://crm/out/: "),
        "{err}"
    );
    assert!(err.contains("NoSuchBucket"), "{err}");
    let out = crmflow_s3(d, moto.port, &["validate", "--check-storage", "p.yaml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        error_of(&out).contains("sink \"daily\" (s3://crm/out/daily/): cannot write to s3://crm/out/: "),
        "{}",
        out.stderr
    );
}

/// A TCP proxy that forwards until a budget of client bytes is spent, then
/// cuts every connection and refuses new ones: a server dying mid-upload.
struct Proxy {
    port: u16,
    budget: Arc<AtomicI64>,
    sent: Arc<AtomicU64>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let budget = Arc::new(AtomicI64::new(i64::MAX));
        let sent = Arc::new(AtomicU64::new(0));
        let (b, s) = (budget.clone(), sent.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if b.load(Ordering::SeqCst) < 0 {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (b2, s2) = (b.clone(), s.clone());
                let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        let n = match c_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if b2.fetch_sub(n as i64, Ordering::SeqCst) - (n as i64) < 0 {
                            break;
                        }
                        s2.fetch_add(n as u64, Ordering::SeqCst);
                        if s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_read.shutdown(std::net::Shutdown::Both);
                    let _ = s_write.shutdown(std::net::Shutdown::Both);
                });
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Proxy { port, budget, sent }
    }
}

const BIG: &str = "name: big
storage:
  retry_max: \"2\"
  retry_timeout: \"2\"
sources:
  customers: {url: data/customers/}
steps:
  - name: big
    sql: |
      SELECT value AS id, sin(CAST(value AS DOUBLE)) AS a, cos(CAST(value AS DOUBLE) * 1.7) AS b,
             sqrt(CAST(value AS DOUBLE)) * 3.3 AS c
      FROM generate_series(1, 400000)
sinks:
  - table: big
    url: s3://crm/out/big/
    # Several files (a small table is one file): some are complete in
    # staging when the server goes away mid-upload.
    target_file_size: 2MiB
    row_group_rows: 65536
";

#[test]
fn server_dying_mid_upload_leaves_the_previous_output() {
    let moto = Moto::start();
    moto.bucket("crm");
    let proxy = Proxy::start(moto.port);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    std::fs::write(d.join("p.yaml"), BIG).unwrap();
    let store = moto.store("crm");
    let rt = rt();

    let out = crmflow_s3(d, proxy.port, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let before = rt.block_on(objects(store.as_ref(), "out/big"));
    let whole_run = proxy.sent.load(Ordering::SeqCst);
    assert!(whole_run > 2_000_000, "the upload should dominate: {whole_run} bytes");

    // Cut the server off halfway through the next run's upload.
    proxy.sent.store(0, Ordering::SeqCst);
    proxy.budget.store((whole_run / 2) as i64, Ordering::SeqCst);
    let out = crmflow_s3(d, proxy.port, &["run", "p.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let cut_run: serde_json::Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
    let cut_id = cut_run["run_id"].as_str().unwrap().to_string();
    let err = error_of(&out);
    assert!(
        err.starts_with("sink \"big\" (s3://crm/out/big/): writing s3://crm/.crmflow-staging/big-"),
        "{err}"
    );
    eprintln!("cut mid-upload: {err}");
    assert_eq!(
        rt.block_on(objects(store.as_ref(), "out/big")),
        before,
        "the previous output changed"
    );
    // What the cut run could not remove (the server was gone when it tried)
    // is its own staging, outside the output tree, and its lock: no probe,
    // nothing else.
    let everything = |rt: &tokio::runtime::Runtime| -> Vec<(String, Vec<u8>)> {
        rt.block_on(objects(store.as_ref(), ""))
            .into_iter()
            .filter(|(k, _)| !k.starts_with("out/big/") && k != "out/.big.crmflow-manifest.json")
            .collect()
    };
    let left = everything(&rt);
    assert!(
        left.iter()
            .all(|(k, _)| (k.starts_with(".crmflow-staging/big-") && k.contains(&cut_id))
                || k == "out/.big.crmflow.lock"),
        "{left:?}"
    );
    assert!(
        left.iter().any(|(k, _)| k.starts_with(".crmflow-staging/")),
        "no staging was written"
    );
    eprintln!("the cut run left {} objects", left.len());
    // Leftovers of other dead runs, of any age: beside the output (the
    // layout of earlier releases) and under the staging root.
    let key = left[0].0.split('/').nth(1).unwrap().to_string();
    for k in [
        "out/.big.crmflow-20261201T000000Z-0badc0de/part-0.parquet".to_string(),
        format!(".crmflow-staging/{key}/20261201T000001Z-cafef00d/part-0.parquet"),
    ] {
        rt.block_on(store.put(&StorePath::from(k.as_str()), b"half-written".to_vec().into()))
            .unwrap();
    }

    // The server is back: a rerun takes over the dead run's lock (same
    // host, its process is gone), removes every leftover and publishes.
    proxy.budget.store(i64::MAX, Ordering::SeqCst);
    let out = crmflow_s3(d, proxy.port, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (m, files) = rt.block_on(manifest_rows(store.as_ref(), "out/big"));
    assert_eq!(m["rows"], 400_000);
    let now = rt.block_on(objects(store.as_ref(), "out/big"));
    assert_eq!(now.len(), files.len() + 1);
    assert_ne!(now, before);
    assert_eq!(everything(&rt), vec![], "leftovers outside the output");
}

/// Rows of a table as sorted text lines (for comparing outputs written to
/// different stores).
pub fn rows_as_text(batches: &[datafusion::arrow::array::RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let opts = datafusion::arrow::util::display::FormatOptions::default();
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| datafusion::arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                fmts.iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out.sort();
    out
}

pub async fn read_store_parquet(
    store: &dyn ObjectStore,
    files: &[String],
    prefix: &str,
) -> Vec<datafusion::arrow::array::RecordBatch> {
    let mut out = Vec::new();
    for f in files {
        let bytes = store
            .get(&StorePath::from(format!("{prefix}/{f}")))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let reader = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        out.extend(reader.map(Result::unwrap));
    }
    out
}

#[test]
fn the_demo_pipeline_runs_on_s3_and_matches_local_disk() {
    let moto = Moto::start();
    moto.bucket("crm");
    let store = moto.store("crm");
    let rt = rt();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Upload the sample data.
    for table in ["customers", "transactions", "interactions"] {
        for e in std::fs::read_dir(root.join("data/sample").join(table)).unwrap() {
            let p = e.unwrap().path();
            let key = format!("data/{table}/{}", p.file_name().unwrap().to_string_lossy());
            rt.block_on(store.put(&StorePath::from(key), std::fs::read(&p).unwrap().into()))
                .unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pipeline = root.join("pipelines/crm_nightly.yaml");
    let pipeline = pipeline.to_str().unwrap();
    let t0 = Instant::now();
    let out = crmflow_s3(
        d,
        moto.port,
        &[
            "run",
            pipeline,
            "--var",
            "data=s3://crm/data",
            "--var",
            "out=s3://crm/out",
        ],
    );
    let s3_seconds = t0.elapsed().as_secs_f64();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t0 = Instant::now();
    let local = crmflow_s3(
        d,
        moto.port,
        &[
            "run",
            pipeline,
            "--var",
            &format!("data={}/data/sample", root.display()),
            "--var",
            "out=local",
        ],
    );
    let local_seconds = t0.elapsed().as_secs_f64();
    assert_eq!(local.code, 0, "{}", local.stderr);
    eprintln!("demo wall time: local disk {local_seconds:.2}s, S3 (moto) {s3_seconds:.2}s");

    for table in [
        "customer_scores",
        "segment_profile",
        "revenue_forecast_metrics",
        "churn_model",
    ] {
        let (m, files) = rt.block_on(manifest_rows(store.as_ref(), &format!("out/{table}")));
        let from_s3 = rt.block_on(read_store_parquet(store.as_ref(), &files, &format!("out/{table}")));
        let from_disk = super::common::read_dir(&d.join("local").join(table));
        assert_eq!(
            m["rows"].as_u64().unwrap() as usize,
            from_disk.iter().map(|b| b.num_rows()).sum::<usize>()
        );
        // Floats may differ in the last bits: DataFusion adds partial sums
        // in the order parallel partitions deliver them.
        let (a, b) = (rows_as_text(&from_s3), rows_as_text(&from_disk));
        assert_eq!(a.len(), b.len(), "{table}");
        for (x, y) in a.iter().zip(&b) {
            for (u, v) in x.split('|').zip(y.split('|')) {
                let same = u == v
                    || matches!((u.parse::<f64>(), v.parse::<f64>()), (Ok(p), Ok(q)) if (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1e-3));
                assert!(same, "{table} differs between S3 and local disk: {u} vs {v}\n{x}\n{y}");
            }
        }
    }
    let (m, _) = rt.block_on(manifest_rows(store.as_ref(), "out/customer_scores"));
    assert_eq!(m["rows"], 5000);
    assert_eq!(m["vars"]["data"], "s3://crm/data");
}

#[test]
fn validate_check_storage_on_s3_leaves_no_probe() {
    let moto = Moto::start();
    moto.bucket("crm");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    std::fs::write(d.join("p.yaml"), DAILY.replace("MODE", "overwrite")).unwrap();
    let out = crmflow_s3(d, moto.port, &["validate", "--check-storage", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "p.yaml: pipeline \"daily\" is valid: 2 sources, 1 steps, 1 sinks, 3 tables planned\n"
    );
    let store = moto.store("crm");
    let left = rt().block_on(objects(store.as_ref(), ""));
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn partition_keys_on_s3_are_hive_names_byte_for_byte_and_read_back() {
    let moto = Moto::start();
    moto.bucket("crm");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    let yaml = "name: hive
storage:
  retry_max: \"2\"
sources:
  customers: {url: data/customers/}
steps:
  - name: t
    sql: |
      SELECT * FROM (VALUES (1, 'München'), (2, 'a/b'), (3, '50%'), (4, 'a=b'), (5, ''), (6, CAST(NULL AS VARCHAR)))
        AS v(customer_id, region)
sinks:
  - table: t
    url: s3://crm/out/t/
    partition_by: [region]
";
    std::fs::write(d.join("p.yaml"), yaml).unwrap();
    let out = crmflow_s3(d, moto.port, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let store = moto.store("crm");
    let rt = rt();
    // The keys as S3 stores them (object_store's Path is the raw key).
    let mut dirs: Vec<String> = rt
        .block_on(objects(store.as_ref(), "out/t"))
        .into_iter()
        .filter_map(|(k, _)| k.strip_prefix("out/t/")?.split_once('/').map(|(d, _)| d.to_string()))
        .collect();
    dirs.dedup();
    assert_eq!(
        dirs,
        vec![
            "region=50%25",
            "region=München",
            "region=__HIVE_DEFAULT_PARTITION__",
            "region=a%2Fb",
            "region=a%3Db"
        ]
    );
    let back = "name: back
storage:
  retry_max: \"2\"
sources:
  t: {url: s3://crm/out/t/}
steps:
  - name: b
    sql: SELECT customer_id, coalesce(region, '<null>') AS region FROM t
sinks:
  - table: b
    url: back/b/
    sort_by: [customer_id]
";
    std::fs::write(d.join("back.yaml"), back).unwrap();
    let out = crmflow_s3(d, moto.port, &["run", "back.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = rows_as_text(&read_dir(&d.join("back/b")));
    assert_eq!(
        rows,
        vec!["1|München", "2|a/b", "3|50%", "4|a=b", "5|<null>", "6|<null>"],
        "{rows:?}"
    );
}
