//! Failure windows of publishing, proven on the real binary: failpoints
//! (compiled into debug builds, set through `CRMFLOW_FAILPOINTS`) make a
//! run fail or die at each phase boundary of a two-sink publish, in
//! `overwrite` and `overwrite_partitions`, on local disk and on the S3 test
//! server. Each case states what a reader that honours `_SUCCESS` sees
//! afterwards, and that the next run repairs everything with no leftovers.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::common::{Output, tiny};
use super::s3::Moto;

/// Where the outputs go.
enum Target {
    Local,
    S3 { moto: Moto, store: Arc<dyn ObjectStore> },
}

impl Target {
    fn out(&self, d: &Path) -> String {
        match self {
            Target::Local => d.join("out").display().to_string(),
            Target::S3 { .. } => "s3://crm/out".to_string(),
        }
    }

    /// Runs crmflow with `v` as the run's var and `failpoints`.
    fn run(&self, d: &Path, v: u32, failpoints: &str) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_crmflow"));
        cmd.args([
            "run",
            "p.yaml",
            "--var",
            &format!("v={v}"),
            "--var",
            &format!("out={}", self.out(d)),
        ])
        .current_dir(d)
        .env("CRMFLOW_LOG", "warn")
        .env("CRMFLOW_FAILPOINTS", failpoints);
        if let Target::S3 { moto, .. } = self {
            cmd.env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ENDPOINT", format!("http://127.0.0.1:{}", moto.port))
                .env("AWS_ALLOW_HTTP", "true");
        }
        let out = cmd.output().unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Every file below the output tree and the staging root (relative
    /// names), the sinks' `_SUCCESS` manifests included.
    fn files(&self, d: &Path) -> BTreeSet<String> {
        match self {
            Target::Local => {
                let mut out = BTreeSet::new();
                for top in ["out", ".crmflow-staging"] {
                    walk(d, &d.join(top), &mut out);
                }
                out
            }
            Target::S3 { store, .. } => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let all: Vec<object_store::ObjectMeta> = store.list(None).try_collect().await.unwrap();
                    all.into_iter().map(|m| m.location.to_string()).collect()
                })
            }
        }
    }

    /// A sink's manifest (beside the sink), if any.
    fn manifest(&self, d: &Path, sink: &str) -> Option<serde_json::Value> {
        let bytes = match self {
            Target::Local => std::fs::read(d.join(format!("out/.{sink}.crmflow-manifest.json"))).ok()?,
            Target::S3 { store, .. } => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let got = store
                        .get(&StorePath::from(format!("out/.{sink}.crmflow-manifest.json")))
                        .await
                        .ok()?;
                    Some(got.bytes().await.ok()?.to_vec())
                })?
            }
        };
        serde_json::from_slice(&bytes).ok()
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            out.insert(p.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

const PIPELINE: &str = "name: faults
vars: {v: \"0\", out: out}
sources:
  customers: {url: data/customers/}
steps:
  - name: a
    sql: SELECT customer_id, country, ${v} AS v FROM customers
  - name: b
    sql: SELECT customer_id, country, ${v} * 10 AS v FROM customers
sinks:
  - table: a
    url: ${out}/a/
    MODE
  - table: b
    url: ${out}/b/
    MODE
";

/// What a reader honouring `_SUCCESS` sees of a sink: the run var `v` of
/// the output its manifest lists; and that the listed files are exactly
/// the data files there (`exact`), or at least all present.
fn seen(t: &Target, d: &Path, sink: &str, exact: bool) -> String {
    let m = t
        .manifest(d, sink)
        .unwrap_or_else(|| panic!("sink {sink} has no manifest: {:?}", t.files(d)));
    let listed: BTreeSet<String> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("out/{sink}/{}", f["path"].as_str().unwrap()))
        .collect();
    let present: BTreeSet<String> = t
        .files(d)
        .into_iter()
        .filter(|f| f.starts_with(&format!("out/{sink}/")) && f.ends_with(".parquet"))
        .collect();
    assert!(
        listed.is_subset(&present),
        "{sink}: listed {listed:?}, present {present:?}"
    );
    if exact {
        assert_eq!(listed, present, "{sink}: files no manifest lists");
    }
    m["vars"]["v"].as_str().unwrap().to_string()
}

/// After a clean run: the output files, the empty `_SUCCESS` markers, the
/// manifests, and nothing else (no staging, no lock, no `.old`, no pending
/// manifest, no temp file).
fn clean(t: &Target, d: &Path, v: u32) {
    assert_eq!(seen(t, d, "a", true), v.to_string());
    assert_eq!(seen(t, d, "b", true), v.to_string());
    let stray: Vec<String> = t
        .files(d)
        .into_iter()
        .filter(|f| {
            let manifest = f == "out/.a.crmflow-manifest.json" || f == "out/.b.crmflow-manifest.json";
            !manifest && (!(f.ends_with(".parquet") || f.ends_with("/_SUCCESS")) || f.contains("crmflow"))
        })
        .collect();
    assert_eq!(stray, Vec::<String>::new(), "leftovers");
}

/// One fault: a failpoint, what the failed run's exit code is, and which
/// sinks a reader then sees as new (published) — the rest old.
struct Fault {
    failpoint: &'static str,
    code: i32,
    published: &'static [&'static str],
    message: &'static str,
    /// Only where the manifest protocol publishes (not the local swap).
    files_only: bool,
}

const FAULTS: &[Fault] = &[
    // Phase one fails on the second sink: nothing was published.
    Fault {
        failpoint: "publish::prepare:b=error",
        code: 1,
        published: &[],
        message: "sink \"b\" (OUT/b/): failpoint publish::prepare:b",
        files_only: false,
    },
    // Phase one fails after copying a file of the second sink.
    Fault {
        failpoint: "publish::after_file:b=error",
        code: 1,
        published: &[],
        message: "sink \"b\" (OUT/b/): cannot copy",
        files_only: true,
    },
    // Killed after phase one: nothing was published.
    Fault {
        failpoint: "publish::prepared=abort",
        code: -1,
        published: &[],
        message: "",
        files_only: false,
    },
    // The commit of the second sink fails: the first is published.
    Fault {
        failpoint: "publish::commit:b=error",
        code: 1,
        published: &["a"],
        message: "publishing failed part way: published \"a\"; not published \"b\" (their previous outputs are untouched; rerun the pipeline to publish them): sink \"b\" (OUT/b/): failpoint publish::commit:b",
        files_only: false,
    },
    // Killed right after the first sink's commit point.
    Fault {
        failpoint: "publish::committed:a=abort",
        code: -1,
        published: &["a"],
        message: "",
        files_only: false,
    },
    // Killed right after the second sink's commit point, before its
    // clean-up: both published.
    Fault {
        failpoint: "publish::committed:b=abort",
        code: -1,
        published: &["a", "b"],
        message: "",
        files_only: false,
    },
];

fn faults_on(t: Target, mode: &str) {
    let mode_line = match mode {
        "overwrite" => "mode: overwrite".to_string(),
        m => format!("mode: {m}\n    partition_by: [country]"),
    };
    let swap = matches!(t, Target::Local) && mode == "overwrite";
    for (i, f) in FAULTS.iter().enumerate().filter(|(_, f)| !(swap && f.files_only)) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        tiny(&d.join("data"));
        std::fs::write(d.join("p.yaml"), PIPELINE.replace("MODE", &mode_line)).unwrap();
        let v0 = 100 * i as u32 + 1;
        let out = t.run(d, v0, "");
        assert_eq!(out.code, 0, "{}", out.stderr);
        clean(&t, d, v0);

        let out = t.run(d, v0 + 1, f.failpoint);
        let case = format!("{mode}, {}", f.failpoint);
        assert_eq!(out.code, f.code, "{case}: {}", out.stderr);
        if !f.message.is_empty() {
            let err = super::common::error_of(&out);
            let want = f.message.replace("OUT", &t.out(d));
            assert!(err.starts_with(&want), "{case}:\n{err}\nwant\n{want}");
            let summary: serde_json::Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
            assert_eq!(summary["published"], serde_json::json!(f.published), "{case}");
        }
        for sink in ["a", "b"] {
            let want = if f.published.contains(&sink) { v0 + 1 } else { v0 };
            // A failed run cleans up after itself: exact. A killed one may
            // leave unlisted files, which readers of _SUCCESS never see.
            assert_eq!(seen(&t, d, sink, f.code == 1), want.to_string(), "{case}: sink {sink}");
        }
        if f.code == 1 {
            let stray: Vec<String> = t
                .files(d)
                .into_iter()
                .filter(|f| f.contains("crmflow") && !f.ends_with(".crmflow-manifest.json"))
                .collect();
            assert_eq!(
                stray,
                Vec::<String>::new(),
                "{case}: a failed run left something behind"
            );
        }
        // The next run repairs everything.
        let out = t.run(d, v0 + 2, "");
        assert_eq!(out.code, 0, "{case}: {}", out.stderr);
        clean(&t, d, v0 + 2);
    }
}

fn s3() -> Target {
    let moto = Moto::start();
    moto.bucket("crm");
    let store = moto.store("crm");
    Target::S3 { moto, store }
}

#[test]
fn every_publish_fault_leaves_whole_outputs_on_local_disk_overwrite() {
    faults_on(Target::Local, "overwrite");
}

#[test]
fn every_publish_fault_leaves_whole_outputs_on_local_disk_overwrite_partitions() {
    faults_on(Target::Local, "overwrite_partitions");
}

#[test]
fn every_publish_fault_leaves_whole_outputs_on_s3_overwrite() {
    faults_on(s3(), "overwrite");
}

#[test]
fn every_publish_fault_leaves_whole_outputs_on_s3_overwrite_partitions() {
    faults_on(s3(), "overwrite_partitions");
}

/// Starts a run paused at `failpoint` and waits until it holds its locks.
fn paused_run(d: &Path, failpoint: &str) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_crmflow"))
        .args(["run", "p.yaml", "--var", "v=2"])
        .current_dir(d)
        .env("CRMFLOW_LOG", "warn")
        .env("CRMFLOW_FAILPOINTS", failpoint)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !d.join("out/.b.crmflow.lock").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run never took its locks"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

#[test]
fn an_overlapping_run_fails_at_once_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    std::fs::write(d.join("p.yaml"), PIPELINE.replace("MODE", "mode: overwrite")).unwrap();
    assert_eq!(Target::Local.run(d, 1, "").code, 0);
    // The first run pauses in publishing, holding both locks.
    let first = paused_run(d, "publish::prepare:a=sleep(3000)");
    let second = Target::Local.run(d, 3, "");
    assert_eq!(second.code, 1, "{}", second.stderr);
    let lease: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("out/.a.crmflow.lock")).unwrap()).unwrap();
    let err = super::common::error_of(&second);
    let want = format!(
        "sink \"a\" ({}/out/a/): is locked by run {} of pipeline \"faults\" (host {}, pid {}) until ",
        d.display(),
        lease["run_id"].as_str().unwrap(),
        lease["host"].as_str().unwrap(),
        first.id()
    );
    assert!(err.starts_with(&want), "{err}\nwant {want}");
    assert!(err.ends_with("; runs of one sink must not overlap"), "{err}");
    // The second run touched nothing; the first completes and publishes.
    let first = first.wait_with_output().unwrap();
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    clean(&Target::Local, d, 2);
}

#[test]
fn staging_is_outside_the_output_tree_for_globs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(&d.join("data"));
    std::fs::write(
        d.join("p.yaml"),
        PIPELINE.replace("MODE", "mode: overwrite_partitions\n    partition_by: [country]"),
    )
    .unwrap();
    assert_eq!(Target::Local.run(d, 1, "").code, 0);
    let published: BTreeSet<String> = Target::Local
        .files(d)
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    // Paused with both sinks staged, before anything is put in place.
    let run = paused_run(d, "publish::prepare:a=sleep(2000)");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let glob = format!("{}/out/**/*.parquet", d.display());
    let seen: BTreeSet<String> = glob::glob(&glob)
        .unwrap()
        .map(|p| p.unwrap().strip_prefix(d).unwrap().display().to_string())
        .collect();
    assert_eq!(seen, published, "a glob over the outputs matched staging");
    let staged: Vec<String> = Target::Local
        .files(d)
        .into_iter()
        .filter(|f| f.starts_with(".crmflow-staging/") && f.ends_with(".parquet"))
        .collect();
    assert_eq!(staged.len(), 2, "both sinks are staged: {staged:?}");
    assert_eq!(run.wait_with_output().unwrap().status.code(), Some(0));
    clean(&Target::Local, d, 2);
}

#[test]
fn disk_full_fails_naming_the_sink_and_leaves_nothing() {
    // A small tmpfs needs root; say so visibly where it cannot run.
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&vol)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED disk_full_fails_naming_the_sink_and_leaves_nothing: cannot mount a tmpfs (not root?)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(vol.clone());
    let d = dir.path();
    tiny(&d.join("data"));
    // A small output first, then one that cannot fit (random doubles do
    // not compress).
    let yaml = |rows: u64| {
        format!(
            "name: full
vars: {{out: {}}}
sources:
  customers: {{url: data/customers/}}
steps:
  - name: big
    sql: SELECT value AS id, random() AS a, random() AS b FROM generate_series(1, {rows})
sinks:
  - table: big
    url: ${{out}}/big/
",
            vol.join("out").display()
        )
    };
    std::fs::write(d.join("p.yaml"), yaml(1_000)).unwrap();
    let out = super::common::crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let before = super::common::snapshot(&vol.join("out/big"));
    std::fs::write(d.join("p.yaml"), yaml(2_000_000)).unwrap();
    let out = super::common::crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let err = super::common::error_of(&out);
    assert!(
        err.starts_with(&format!("sink \"big\" ({}/out/big/): writing ", vol.display())),
        "{err}"
    );
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(super::common::snapshot(&vol.join("out/big")), before);
    let mut left = BTreeSet::new();
    walk(&vol, &vol, &mut left);
    let mut before_names: BTreeSet<String> = before.iter().map(|(p, _)| format!("out/big/{p}")).collect();
    before_names.insert("out/.big.crmflow-manifest.json".to_string());
    assert_eq!(left, before_names, "something was left on the full disk");
}
