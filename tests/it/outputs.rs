//! What BI readers find in an output directory: Hive partition names byte
//! for byte, only data files and an empty `_SUCCESS` (the manifest beside
//! the sink), sorted rows with `sorting_columns`, row groups and files of
//! the configured size, bloom filters, descriptions, byte-identical files
//! for identical input, and BI-safe nested types. Every case runs the
//! binary; files are read back with the `parquet` crate's own reader.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, ListArray, RecordBatch, StringArray, StructArray, TimestampNanosecondArray,
    UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, TimeUnit, UInt64Type};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};

use super::common::{crmflow, error_of, read_dir, write_parquet};

/// The partition values of the round trip: non-ASCII, `/`, `%`, `=`, empty,
/// NULL and a plain one.
const REGIONS: [Option<&str>; 7] = [
    Some("München"),
    Some("a/b"),
    Some("50%"),
    Some("a=b"),
    Some(""),
    None,
    Some("US"),
];

/// `data/c/part.parquet`: customer ids `n..=1` (descending), a region
/// cycling through [`REGIONS`], and `big` (UInt64) = id * 1000.
fn fixture(d: &Path, n: i64) {
    let ids: Vec<i64> = (1..=n).rev().collect();
    let region: StringArray = ids.iter().map(|i| REGIONS[*i as usize % REGIONS.len()]).collect();
    let big: UInt64Array = ids.iter().map(|i| Some(*i as u64 * 1000)).collect();
    let batch = RecordBatch::try_from_iter(vec![
        ("customer_id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("region", Arc::new(region) as ArrayRef),
        ("big", Arc::new(big) as ArrayRef),
    ])
    .unwrap();
    write_parquet(&d.join("data/c/part.parquet"), &batch);
}

fn pipeline(d: &Path, file: &str, sql: &str, sink: &str) {
    let yaml = format!(
        "name: outputs\nsources:\n  c: {{url: data/c/}}\nsteps:\n  - name: t\n    sql: {sql}\nsinks:\n  - table: t\n    url: out/t/\n{sink}"
    );
    std::fs::write(d.join(file), yaml).unwrap();
}

fn run_ok(d: &Path, file: &str) {
    let out = crmflow(d, &["run", file]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// The names in a directory, sorted by their bytes.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// The data files below a directory (relative, sorted).
fn data_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().to_string());
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn manifest(d: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(d.join("out/.t.crmflow-manifest.json")).unwrap()).unwrap()
}

#[test]
fn partition_values_are_hive_escaped_on_disk_and_read_back_by_a_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fixture(d, 14);
    pipeline(
        d,
        "p.yaml",
        "SELECT customer_id, region FROM c",
        "    partition_by: [region]\n",
    );
    run_ok(d, "p.yaml");
    // Hive's FileUtils.escapePathName, byte for byte; NULL and '' are
    // Hive's default partition.
    assert_eq!(
        names(&d.join("out/t")),
        vec![
            "_SUCCESS",
            "region=50%25",
            "region=München",
            "region=US",
            "region=__HIVE_DEFAULT_PARTITION__",
            "region=a%2Fb",
            "region=a%3Db",
        ]
    );
    assert_eq!(
        names(&d.join("out/t/region=a%2Fb")),
        vec![format!(
            "part-{}-00000.parquet",
            manifest(d)["run_id"].as_str().unwrap()
        )]
    );

    // Read back as a hive-partitioned source: decoded, the default
    // partition as NULL ('' too, as in Hive and Spark).
    let yaml = "name: back\nsources:\n  t: {url: out/t/}\nsteps:\n  - name: b\n    sql: SELECT customer_id, region FROM t\nsinks:\n  - table: b\n    url: back/b/\n    sort_by: [customer_id]\n";
    std::fs::write(d.join("back.yaml"), yaml).unwrap();
    run_ok(d, "back.yaml");
    let batches = read_dir(&d.join("back/b"));
    let mut got: Vec<(i64, Option<String>)> = Vec::new();
    for b in &batches {
        let ids = b.column_by_name("customer_id").unwrap().as_primitive::<Int64Type>();
        let r = b.column_by_name("region").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            got.push((ids.value(i), (!r.is_null(i)).then(|| r.value(i).to_string())));
        }
    }
    let want: Vec<(i64, Option<String>)> = (1..=14)
        .map(|i| {
            let v = REGIONS[i as usize % REGIONS.len()].filter(|v| !v.is_empty());
            (i, v.map(str::to_string))
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn the_directory_holds_data_and_an_empty_success_and_the_manifest_lies_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fixture(d, 20);
    for (mode, file) in [("overwrite", "o.yaml"), ("overwrite_partitions", "op.yaml")] {
        pipeline(
            d,
            file,
            "SELECT region, customer_id, big FROM c",
            &format!("    partition_by: [region]\n    mode: {mode}\n    descriptions: {{big: \"Id times 1000\"}}\n"),
        );
        run_ok(d, file);
        assert_eq!(names(&d.join("out")), vec![".t.crmflow-manifest.json", "t"], "{mode}");
        assert_eq!(std::fs::read(d.join("out/t/_SUCCESS")).unwrap(), b"", "{mode}");
        let m = manifest(d);
        let listed: Vec<String> = m["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(listed, data_files(&d.join("out/t")), "{mode}");
        assert_eq!(m["rows"], 20, "{mode}");
        // Partition columns last, as readers show them.
        assert_eq!(
            m["schema"],
            serde_json::json!([
                {"name": "customer_id", "type": "Int64", "nullable": false},
                {"name": "big", "type": "Int64", "nullable": false, "description": "Id times 1000"},
                {"name": "region", "type": "Utf8", "nullable": true},
            ]),
            "{mode}"
        );
    }
}

#[test]
fn rows_are_sorted_in_row_groups_of_the_set_size_with_sorting_columns_bloom_filters_and_descriptions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fixture(d, 1000);
    pipeline(
        d,
        "p.yaml",
        "SELECT big, customer_id, region FROM c",
        "    sort_by: [customer_id]\n    row_group_rows: 300\n    bloom_filters: [customer_id]\n    descriptions: {customer_id: \"The customer's id\"}\n",
    );
    run_ok(d, "p.yaml");
    let files = data_files(&d.join("out/t"));
    assert_eq!(files.len(), 1, "{files:?}");
    let path = d.join("out/t").join(&files[0]);
    let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let md = reader.metadata();
    let groups: Vec<i64> = md.row_groups().iter().map(|g| g.num_rows()).collect();
    assert_eq!(groups, vec![300, 300, 300, 100]);
    for g in md.row_groups() {
        let sorting = g.sorting_columns().expect("sorting_columns in every row group");
        // customer_id (column 1) first, then the other columns break ties.
        let cols: Vec<(i32, bool, bool)> = sorting
            .iter()
            .map(|s| (s.column_idx, s.descending, s.nulls_first))
            .collect();
        assert_eq!(cols, vec![(1, false, false), (0, false, false), (2, false, false)]);
        assert!(
            g.column(1).bloom_filter_offset().is_some(),
            "customer_id has a bloom filter"
        );
        assert!(g.column(0).bloom_filter_offset().is_none(), "big has none");
    }
    let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap()).unwrap();
    let schema = builder.schema().clone();
    assert_eq!(
        schema
            .field_with_name("customer_id")
            .unwrap()
            .metadata()
            .get("description")
            .map(String::as_str),
        Some("The customer's id")
    );
    assert!(schema.field_with_name("big").unwrap().metadata().is_empty());
    let ids: Vec<i64> = builder
        .build()
        .unwrap()
        .flat_map(|b| b.unwrap().column(1).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(ids, (1..=1000).collect::<Vec<i64>>());
}

#[test]
fn identical_input_gives_byte_identical_files_in_one_file_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Several record batches and both cores' worth of rows, sorted by a
    // key with ties: the other columns break them, so the order depends on
    // the rows only.
    fixture(d, 50_000);
    let sql = "SELECT customer_id % 97 AS k, region, big, customer_id FROM c";
    pipeline(d, "p.yaml", sql, "    partition_by: [region]\n    sort_by: [k]\n");
    let contents = |d: &Path| -> Vec<(String, Vec<u8>)> {
        data_files(&d.join("out/t"))
            .into_iter()
            .map(|f| {
                let bytes = std::fs::read(d.join("out/t").join(&f)).unwrap();
                // The name carries the run id; the directory and the bytes must not differ.
                (f.rsplit_once('/').unwrap().0.to_string(), bytes)
            })
            .collect()
    };
    run_ok(d, "p.yaml");
    let first = contents(d);
    // Six partition directories, one file each (not one per core).
    assert_eq!(first.len(), 6);
    run_ok(d, "p.yaml");
    let second = contents(d);
    assert_eq!(first.len(), second.len());
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.0, b.0);
        assert!(a.1 == b.1, "{} differs between two runs of the same input", a.0);
    }
}

#[test]
fn a_small_table_is_one_file_and_the_target_size_splits_a_larger_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fixture(d, 5000);
    pipeline(d, "p.yaml", "SELECT customer_id, big FROM c", "");
    run_ok(d, "p.yaml");
    assert_eq!(data_files(&d.join("out/t")).len(), 1);
    // 16 bytes a row (two 64-bit columns): 16,000 bytes is 1,000 rows,
    // two row groups of 500: five files of 1,000 rows.
    pipeline(
        d,
        "p.yaml",
        "SELECT customer_id, big FROM c",
        "    target_file_size: 16000B\n    row_group_rows: 500\n",
    );
    run_ok(d, "p.yaml");
    let rows: Vec<i64> = data_files(&d.join("out/t"))
        .iter()
        .map(|f| {
            SerializedFileReader::new(std::fs::File::open(d.join("out/t").join(f)).unwrap())
                .unwrap()
                .metadata()
                .file_metadata()
                .num_rows()
        })
        .collect();
    assert_eq!(rows, vec![1000; 5]);
}

/// `data/c/part.parquet` with a struct of (UInt64, naive nanosecond
/// timestamp) and a list of UInt64, `nested.n` = `n`.
fn nested_fixture(d: &Path, n: &[u64]) {
    let ids: Vec<i64> = (1..=n.len() as i64).collect();
    let ts: TimestampNanosecondArray = ids.iter().map(|i| Some(i * 1_000_000_001)).collect();
    let nested = StructArray::from(vec![
        (
            Arc::new(Field::new("n", DataType::UInt64, true)),
            Arc::new(UInt64Array::from(n.to_vec())) as ArrayRef,
        ),
        (
            Arc::new(Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true)),
            Arc::new(ts) as ArrayRef,
        ),
    ]);
    let lists = ListArray::from_iter_primitive::<UInt64Type, _, _>(n.iter().map(|v| Some(vec![Some(*v), Some(7)])));
    let batch = RecordBatch::try_from_iter(vec![
        ("customer_id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("nested", Arc::new(nested) as ArrayRef),
        ("counts", Arc::new(lists) as ArrayRef),
    ])
    .unwrap();
    write_parquet(&d.join("data/c/part.parquet"), &batch);
}

#[test]
fn nested_unsigned_and_naive_nanosecond_values_are_converted_like_top_level_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    nested_fixture(d, &[5, i64::MAX as u64]);
    pipeline(d, "p.yaml", "SELECT * FROM c", "");
    run_ok(d, "p.yaml");
    let batches = read_dir(&d.join("out/t"));
    let b = &batches[0];
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    assert_eq!(
        b.schema().field_with_name("nested").unwrap().data_type(),
        &DataType::Struct(vec![Field::new("n", DataType::Int64, true), Field::new("ts", utc, true)].into())
    );
    assert_eq!(
        b.schema().field_with_name("counts").unwrap().data_type(),
        &DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true)))
    );
    let nested = b.column_by_name("nested").unwrap().as_struct();
    assert_eq!(
        nested.column(0).as_primitive::<Int64Type>().values().to_vec(),
        vec![5, i64::MAX]
    );
    // Nanoseconds truncated to microseconds, the same instant in UTC.
    let ts = nested
        .column(1)
        .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
    assert_eq!(ts.values().to_vec(), vec![1_000_000, 2_000_000]);
    let counts = b.column_by_name("counts").unwrap().as_list::<i32>();
    assert_eq!(
        counts.values().as_primitive::<Int64Type>().values().to_vec(),
        vec![5, 7, i64::MAX, 7]
    );
}

#[test]
fn an_unsigned_value_above_int64_is_an_error_naming_the_column_and_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    nested_fixture(d, &[5, u64::MAX]);
    let sink = d.join("out/t/");
    for (sql, column) in [
        ("SELECT customer_id, nested FROM c", "nested.n"),
        ("SELECT customer_id, counts FROM c", "counts[]"),
        ("SELECT customer_id, nested.n AS hits FROM c", "hits"),
    ] {
        pipeline(d, "p.yaml", sql, "");
        let out = crmflow(d, &["run", "p.yaml"]);
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert_eq!(
            error_of(&out),
            format!(
                "sink \"t\" ({}): column \"{column}\" holds 18446744073709551615, above the largest signed 64-bit integer (9223372036854775807); BI readers have no unsigned 64-bit type: cast it in SQL (e.g. to DECIMAL(20, 0) or DOUBLE)",
                sink.display()
            )
        );
        assert!(!d.join("out/t").exists(), "nothing published");
    }
}

#[test]
fn layout_columns_are_checked_against_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fixture(d, 3);
    pipeline(
        d,
        "p.yaml",
        "SELECT customer_id, region FROM c",
        "    partition_by: [region]\n    sort_by: [region]\n    bloom_filters: [nope]\n",
    );
    let out = crmflow(d, &["run", "p.yaml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("sink \"t\": sort_by column \"region\" is a partition_by column (one value per directory: nothing to sort or filter in the files)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("sink \"t\": bloom_filters column \"nope\" is not in table \"t\" (columns: customer_id, region)"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_swap_killed_before_its_manifest_moved_is_repaired_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fixture(d, 4);
    pipeline(d, "p.yaml", "SELECT customer_id, region FROM c", "");
    run_ok(d, "p.yaml");
    let first = manifest(d)["run_id"].as_str().unwrap().to_string();
    // Killed between the directory exchange and the manifest's rename: the
    // directory is the new output, the manifest still the old one's.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crmflow"))
        .args(["run", "p.yaml"])
        .current_dir(d)
        .env("CRMFLOW_LOG", "warn")
        .env("CRMFLOW_FAILPOINTS", "publish::swapped:t=abort")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "killed");
    assert_eq!(manifest(d)["run_id"].as_str().unwrap(), first);
    let pending: Vec<String> = names(&d.join("out"))
        .into_iter()
        .filter(|n| n.starts_with(".t.crmflow-manifest-"))
        .collect();
    assert_eq!(pending.len(), 1, "{:?}", names(&d.join("out")));
    let second = pending[0]
        .strip_prefix(".t.crmflow-manifest-")
        .unwrap()
        .strip_suffix(".json")
        .unwrap()
        .to_string();
    assert!(data_files(&d.join("out/t"))[0].contains(&second));
    // The next run, even one that fails in its first step, repairs it first.
    pipeline(
        d,
        "bad.yaml",
        "SELECT customer_id, 1 / (customer_id - customer_id) AS boom FROM c",
        "",
    );
    let out = crmflow(d, &["run", "bad.yaml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(names(&d.join("out")), vec![".t.crmflow-manifest.json", "t"]);
    let m = manifest(d);
    assert_eq!(m["run_id"].as_str().unwrap(), second);
    let listed: Vec<String> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, data_files(&d.join("out/t")));
}
