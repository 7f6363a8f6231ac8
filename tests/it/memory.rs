//! `engine.memory_limit`, proven through the binary: the nightly demo on
//! the committed 5,000-customer sample, with a limit scaled to it, writes
//! the same outputs as without one, and DataFusion spilled to disk to do
//! it (the run results' `spill`, summed from the operators' `spill_count`,
//! `spilled_bytes` and `spilled_rows` metrics).

use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use super::common::{crmflow, read_dir};

/// The demo pipeline under `dir/pipelines/`, its SQL beside it, with an
/// `engine:` block, plus a step that ranks 16 copies of every transaction
/// (51,815 in the sample) with a padding column: one sort of about 60 MiB
/// (more than the limit, so it must spill), of which every thousandth row
/// goes to its sink.
/// Partitions of both runs.
const PARTITIONS: usize = 1;

fn pipeline(dir: &Path, limit: Option<&str>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let demo = std::fs::read_to_string(root.join("pipelines/crm_nightly.yaml")).unwrap();
    let engine = match limit {
        Some(l) => format!("engine:\n  memory_limit: {l}\n  target_partitions: {PARTITIONS}\n\nsources:\n"),
        None => format!("engine:\n  target_partitions: {PARTITIONS}\n\nsources:\n"),
    };
    // Every row sorted (the keys are unique, so the ranks are too), every
    // thousandth written.
    let extra_step = format!(
        "  - name: sorted_transactions
    sql: >-
      SELECT * FROM (SELECT row_number() OVER (ORDER BY amount DESC, transaction_id, copy_no, pad) AS rank,
      transaction_id, copy_no, amount, length(pad) AS pad_length FROM (SELECT transaction_id, amount, copy_no,
      repeat(product_category, 5) AS pad FROM transactions CROSS JOIN (VALUES {}) AS c(copy_no))) WHERE rank % 1000 = 0

sinks:
",
        (1..=16).map(|k| format!("({k})")).collect::<Vec<_>>().join(", ")
    );
    let yaml = demo
        .replacen("sources:\n", &engine, 1)
        .replacen("sinks:\n", &extra_step, 1)
        + "  - table: sorted_transactions\n    url: \"${out}/sorted_transactions/\"\n";
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    std::fs::create_dir_all(dir.join("sql")).unwrap();
    std::fs::write(dir.join("pipelines/p.yaml"), yaml).unwrap();
    for f in std::fs::read_dir(root.join("sql")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.join("sql").join(f.file_name())).unwrap();
    }
}

/// Every row of a sink as text (full precision), sorted.
fn rows(dir: &Path) -> Vec<String> {
    let batches: Vec<RecordBatch> = read_dir(dir);
    let opts = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in &batches {
        let fmts: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|a| ArrayFormatter::try_new(a.as_ref(), &opts).unwrap())
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

#[test]
fn a_small_memory_limit_spills_and_gives_the_same_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
    let mut summaries = Vec::new();
    for (limit, out) in [(None, "out-free"), (Some("32MiB"), "out-limited")] {
        pipeline(d, limit);
        let r = crmflow(
            d,
            &[
                "run",
                "pipelines/p.yaml",
                "--var",
                &format!("data={}", data.display()),
                "--var",
                &format!("out={}", d.join(out).display()),
            ],
        );
        assert_eq!(r.code, 0, "{limit:?}: {}", r.stderr);
        let s: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
        summaries.push((s, r.stderr));
    }
    // Without a limit nothing spills; with it, the wide sort at least did.
    assert_eq!(
        summaries[0].0["spill"],
        serde_json::json!({"files": 0, "bytes": 0, "rows": 0})
    );
    let spill = &summaries[1].0["spill"];
    eprintln!("memory_limit 32MiB, {PARTITIONS} partition(s): spilled {spill}");
    assert!(spill["files"].as_u64().unwrap() >= 1, "{spill}");
    assert!(spill["bytes"].as_u64().unwrap() > 0, "{spill}");
    // The sort holds about twice the limit; once it spills, what it still
    // holds goes to disk too before the merge: all its 829,040 rows.
    assert!(spill["rows"].as_u64().unwrap() >= 829_040, "{spill}");
    assert!(summaries[1].1.contains("  spilled to disk: "), "{}", summaries[1].1);
    let sinks: Vec<String> = summaries[0].0["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["table"].as_str().unwrap().to_string())
        .collect();
    // The demo's eight sinks and the sort's.
    assert_eq!(sinks.len(), 9);
    for sink in &sinks {
        let dir_of = |out: &str| {
            let s = summaries[0].0["sinks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["table"] == *sink)
                .unwrap();
            let url = s["url"].as_str().unwrap().replace("out-free", out);
            std::path::PathBuf::from(url)
        };
        let (free, limited) = (rows(&dir_of("out-free")), rows(&dir_of("out-limited")));
        assert!(!free.is_empty(), "{sink} is empty");
        assert_eq!(free.len(), limited.len(), "{sink}");
        let differ: Vec<(&String, &String)> = free.iter().zip(&limited).filter(|(a, b)| a != b).take(3).collect();
        assert!(differ.is_empty(), "{sink}: {differ:?}");
    }
}
