//! `crmflow generate` through the binary: deterministic for a seed, files
//! replaced on rerun, and the committed sample is what it says it is.

use super::common::{crmflow, snapshot};

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (out, seed) in [("a", "7"), ("b", "7"), ("c", "8")] {
        let r = crmflow(d, &["generate", "--customers", "3000", "--seed", seed, "--out", out]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let (a, b, c) = (snapshot(&d.join("a")), snapshot(&d.join("b")), snapshot(&d.join("c")));
    assert_eq!(
        a.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        vec![
            "customers/part-00000.parquet",
            "interactions/part-00000.parquet",
            "transactions/part-00000.parquet"
        ]
    );
    assert_eq!(a, b);
    for (x, y) in a.iter().zip(&c) {
        assert_ne!(x.1, y.1, "{} did not change with the seed", x.0);
    }
}

#[test]
fn the_committed_sample_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let r = crmflow(
        dir.path(),
        &["generate", "--customers", "5000", "--seed", "20261124", "--out", "s"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
    assert_eq!(snapshot(&dir.path().join("s")), snapshot(&sample));
}

#[test]
fn bad_generate_arguments_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let r = crmflow(
        dir.path(),
        &[
            "generate",
            "--customers",
            "10",
            "--out",
            "x",
            "--start",
            "2026-01-01",
            "--end",
            "2025-01-01",
        ],
    );
    assert_eq!(r.code, 2);
    assert_eq!(
        super::common::error_of(&r),
        "--end 2025-01-01 must be after --start 2026-01-01"
    );
    let r = crmflow(dir.path(), &["generate", "--customers", "10", "--out", "ftp://x/y"]);
    assert_eq!(r.code, 2);
    assert_eq!(
        super::common::error_of(&r),
        "--out ftp://x/y: unsupported scheme \"ftp://\" (use a path or one of file://, s3://, gs://, az://, abfss://, memory://)"
    );
}
