//! Shared test helpers: running the binary, writing tiny Parquet fixtures
//! with hand-chosen rows, and reading outputs back with the `parquet`
//! crate's own reader (independent of DataFusion).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The outcome of running the binary.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `crmflow` with `args` in `dir`.
pub fn crmflow(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_crmflow"))
        .args(args)
        .current_dir(dir)
        .env("CRMFLOW_LOG", "warn")
        .env_remove("RUST_LOG")
        .output()
        .expect("the crmflow binary runs");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The last line of stderr that starts with `crmflow: error: `, without it.
pub fn error_of(out: &Output) -> String {
    let marker = "crmflow: error: ";
    let start = out
        .stderr
        .find(marker)
        .unwrap_or_else(|| panic!("no error in stderr:\n{}", out.stderr));
    out.stderr[start + marker.len()..].trim_end().to_string()
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
pub fn day(s: &str) -> i32 {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    (d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32
}

/// Microseconds since the epoch of `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn ts(s: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .unwrap()
        .and_utc()
        .timestamp_micros()
}

/// Writes one batch as a Parquet file, creating directories.
pub fn write_parquet(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// A customer row of the tiny fixture.
pub struct Customer {
    pub id: i64,
    pub signup: &'static str,
    pub cost: f64,
}

/// Writes `customers/`, `transactions/`, `interactions/` under `dir`.
pub fn write_crm(dir: &Path, customers: &[Customer], tx: &[(i64, &str, f64)], ix: &[(i64, &str, &str)]) {
    let n = customers.len();
    let cust = RecordBatch::try_new(
        crmflow::generate::customers_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(customers.iter().map(|c| c.id))) as ArrayRef,
            Arc::new(Date32Array::from_iter_values(customers.iter().map(|c| day(c.signup)))),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n("US", n))),
            Arc::new(Int32Array::from_iter_values(customers.iter().map(|c| 30 + c.id as i32))),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n("F", n))),
            Arc::new(Float64Array::from_iter_values(
                customers.iter().map(|c| 40_000.0 + 1000.0 * c.id as f64),
            )),
            Arc::new(Float64Array::from_iter_values(customers.iter().map(|c| c.cost))),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n("organic", n))),
        ],
    )
    .unwrap();
    write_parquet(&dir.join("customers/part-0.parquet"), &cust);
    let txb = RecordBatch::try_new(
        crmflow::generate::transactions_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(1..=tx.len() as i64)) as ArrayRef,
            Arc::new(Int64Array::from_iter_values(tx.iter().map(|t| t.0))),
            Arc::new(TimestampMicrosecondArray::from_iter_values(tx.iter().map(|t| ts(t.1))).with_timezone("UTC")),
            Arc::new(Float64Array::from_iter_values(tx.iter().map(|t| t.2))),
            Arc::new(Int32Array::from_iter_values(tx.iter().map(|_| 1))),
            Arc::new(StringArray::from_iter_values(tx.iter().map(|_| "books"))),
        ],
    )
    .unwrap();
    write_parquet(&dir.join("transactions/part-0.parquet"), &txb);
    let ixb = RecordBatch::try_new(
        crmflow::generate::interactions_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(1..=ix.len() as i64)) as ArrayRef,
            Arc::new(Int64Array::from_iter_values(ix.iter().map(|t| t.0))),
            Arc::new(TimestampMicrosecondArray::from_iter_values(ix.iter().map(|t| ts(t.1))).with_timezone("UTC")),
            Arc::new(StringArray::from_iter_values(ix.iter().map(|t| t.2))),
            Arc::new(Int32Array::from_iter_values(ix.iter().map(|_| 60))),
        ],
    )
    .unwrap();
    write_parquet(&dir.join("interactions/part-0.parquet"), &ixb);
}

/// The tiny hand-made dataset whose features are computed by hand in
/// `features.rs` and `stages.rs` (as of 2026-11-24).
pub fn tiny(dir: &Path) {
    write_crm(
        dir,
        &[
            Customer {
                id: 1,
                signup: "2026-01-01",
                cost: 10.0,
            },
            Customer {
                id: 2,
                signup: "2025-06-15",
                cost: 20.0,
            },
            Customer {
                id: 3,
                signup: "2026-11-20",
                cost: 5.0,
            },
            Customer {
                id: 4,
                signup: "2026-12-01",
                cost: 7.0,
            },
        ],
        &[
            (1, "2026-01-01 10:00:00", 100.00),
            (1, "2026-03-01 12:00:00", 50.00),
            (1, "2026-03-01 18:00:00", 25.50),
            (1, "2026-05-30 09:00:00", 40.00),
            (1, "2026-11-25 00:00:00", 999.00),
            (2, "2025-06-15 08:00:00", 200.00),
            (2, "2026-06-15 08:00:00", 100.00),
            (2, "2026-11-24 23:59:59", 10.00),
        ],
        &[
            (1, "2026-08-27 00:00:00", "web_visit"),
            (1, "2026-08-26 23:59:59", "web_visit"),
            (1, "2026-10-01 10:00:00", "support_ticket"),
            (1, "2026-11-24 12:00:00", "app_session"),
            (1, "2026-11-25 00:00:00", "email_open"),
            (2, "2026-09-01 10:00:00", "email_click"),
            (2, "2026-09-02 10:00:00", "support_ticket"),
            (2, "2026-09-03 10:00:00", "support_ticket"),
        ],
    );
}

/// Every row of every Parquet file below `dir` (sorted paths), read with
/// the `parquet` crate's reader.
pub fn read_dir(dir: &Path) -> Vec<RecordBatch> {
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let file = std::fs::File::open(&f).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        for b in reader {
            out.push(b.unwrap());
        }
    }
    out
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if p.is_dir() {
            collect_files(&p, out);
        } else if name.ends_with(".parquet") {
            out.push(p);
        }
    }
}

/// Every file below `dir` with its bytes (to compare outputs exactly).
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push((
                    p.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Column `name` of the batches as f64 values in row order (ints cast).
pub fn f64s(batches: &[RecordBatch], name: &str) -> Vec<Option<f64>> {
    let mut out = Vec::new();
    for b in batches {
        let a = b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
        let a = datafusion::arrow::compute::cast(a, &DataType::Float64).unwrap();
        let a = a.as_any().downcast_ref::<Float64Array>().unwrap();
        out.extend(a.iter());
    }
    out
}

/// Asserts two floats agree to `rel` relative (absolute floor 1e-12).
#[track_caller]
pub fn close(got: f64, want: f64, rel: f64) {
    let tol = rel * want.abs().max(1e-12 / rel);
    assert!((got - want).abs() <= tol, "got {got}, want {want} (rel {rel})");
}

/// The port a test server announces on `log` (its stdout or stderr) in a
/// line containing `marker` followed by the port (e.g. `Running on
/// http://127.0.0.1:`). Keeps draining the log afterwards (servers log every
/// request there, and a full pipe would block them); panics with what the
/// server said if it exits first or stays silent for a minute.
pub fn announced_port(log: impl std::io::Read + Send + 'static, marker: &'static str, server: &str) -> u16 {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(log).lines() {
            let Ok(line) = line else { break };
            if let Some(t) = &tx {
                match line
                    .split(marker)
                    .nth(1)
                    .and_then(|rest| rest.trim().parse::<u16>().ok())
                {
                    Some(port) => {
                        let _ = t.send(Ok(port));
                        tx = None;
                    }
                    None => seen.push(line),
                }
            }
        }
        if let Some(t) = tx {
            let _ = t.send(Err(seen.join("\n")));
        }
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(Ok(port)) => port,
        Ok(Err(log)) => panic!("{server} exited without listening:\n{log}"),
        Err(e) => panic!("{server} did not report its port: {e}"),
    }
}
