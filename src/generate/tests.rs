//! End-to-end tests of the generator on in-memory stores: determinism for a
//! seed and independence of the thread count, exact schemas, the model's
//! invariants and mean against the BG/NBD closed form, reruns, option
//! errors and progress. Model-only tests live next to the model.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::model::{DROP_A, DROP_B, LAMBDA_SCALE, LAMBDA_SHAPE, SIGNUP_GROWTH, US_PER_DAY, US_PER_YEAR, round2};
use super::schema::{CATEGORIES, CHANNELS, COUNTRIES, GENDERS, KINDS};
use super::{GenerateError, GenerateOptions, GenerateSummary, generate, run};

fn mem() -> Arc<dyn ObjectStore> {
    Arc::new(InMemory::new())
}

/// All objects under `prefix` as path → bytes, sorted by path.
async fn dump(store: &Arc<dyn ObjectStore>, prefix: &Path) -> BTreeMap<String, Vec<u8>> {
    let metas: Vec<_> = store.list(Some(prefix)).try_collect().await.unwrap();
    let mut out = BTreeMap::new();
    for m in metas {
        let b = store.get(&m.location).await.unwrap().bytes().await.unwrap();
        out.insert(m.location.to_string(), b.to_vec());
    }
    out
}

/// Reads every part file of `table` in part order into batches.
async fn read_table(store: &Arc<dyn ObjectStore>, prefix: &Path, table: &str) -> Vec<RecordBatch> {
    let dir = prefix.clone().join(table);
    let mut paths: Vec<Path> = store
        .list(Some(&dir))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .unwrap();
    paths.sort();
    let mut batches = Vec::new();
    for p in paths {
        let b = store.get(&p).await.unwrap().bytes().await.unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(b).unwrap().build().unwrap();
        for batch in reader {
            batches.push(batch.unwrap());
        }
    }
    batches
}

fn col_i64(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

fn col_ts(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>()
                .values()
                .to_vec()
        })
        .collect()
}

fn col_f64(batches: &[RecordBatch], name: &str) -> Vec<f64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<Float64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

fn col_i32(batches: &[RecordBatch], name: &str) -> Vec<i32> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<Int32Type>()
                .values()
                .to_vec()
        })
        .collect()
}

fn col_date(batches: &[RecordBatch], name: &str) -> Vec<i32> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<Date32Type>()
                .values()
                .to_vec()
        })
        .collect()
}

fn col_str(batches: &[RecordBatch], name: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn epoch_day(d: NaiveDate) -> i64 {
    d.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
        .num_days()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deterministic_for_a_seed_and_different_across_seeds() {
    let prefix = Path::from("out");
    let (a, b, c) = (mem(), mem(), mem());
    let opts = GenerateOptions::new(1_300, 7);
    // Several chunks, so that parallel generation and ordering are exercised.
    let sa = run(a.clone(), &prefix, &opts, 300, &|_| {}).await.unwrap();
    let sb = run(b.clone(), &prefix, &opts, 300, &|_| {}).await.unwrap();
    let _ = run(c.clone(), &prefix, &GenerateOptions::new(1_300, 8), 300, &|_| {})
        .await
        .unwrap();
    assert_eq!(sa, sb);
    assert_eq!(sa.files.len(), 15);
    let (da, db, dc) = (
        dump(&a, &prefix).await,
        dump(&b, &prefix).await,
        dump(&c, &prefix).await,
    );
    assert_eq!(da.len(), 15);
    assert_eq!(da, db, "same seed must give identical bytes");
    let keys: Vec<_> = da.keys().collect();
    assert_eq!(keys, dc.keys().collect::<Vec<_>>());
    for k in keys {
        assert_ne!(da[k], dc[k], "{k} is the same for two seeds");
    }
}

/// Generates 3,000 customers in chunks of 500 on `rt`: six chunks, so that
/// generation runs ahead of writing and ids carry over between chunks.
/// Returns the summary and every file's bytes.
fn generate_on(rt: tokio::runtime::Runtime) -> (GenerateSummary, BTreeMap<String, Vec<u8>>) {
    rt.block_on(async {
        let store = mem();
        let prefix = Path::from("threads");
        let summary = run(store.clone(), &prefix, &GenerateOptions::new(3_000, 11), 500, &|_| {})
            .await
            .unwrap();
        (summary, dump(&store, &prefix).await)
    })
}

#[test]
fn output_is_independent_of_the_thread_count() {
    // One runtime thread and one blocking thread: chunks are generated
    // strictly one after another and written from the same thread.
    let single = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // Four workers and four blocking threads: chunks are generated side by
    // side on different threads and a chunk's three tables written at once.
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let (s1, d1) = generate_on(single);
    let (s4, d4) = generate_on(multi);
    assert_eq!(s1.files.len(), 18, "6 chunks x 3 tables");
    assert_eq!(s1, s4);
    assert_eq!(d1.keys().collect::<Vec<_>>(), d4.keys().collect::<Vec<_>>());
    for (path, bytes) in &d1 {
        // Not assert_eq!: a failure would print both files byte by byte.
        assert!(
            d4[path] == *bytes,
            "{path} differs between 1 and 4 threads ({} vs {} bytes)",
            bytes.len(),
            d4[path].len()
        );
    }
}

#[tokio::test]
async fn schemas_are_exact() {
    let store = mem();
    let prefix = Path::from("s");
    generate(store.clone(), &prefix, &GenerateOptions::new(50, 1))
        .await
        .unwrap();
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let expected: [(&str, Vec<(&str, DataType)>); 3] = [
        (
            "customers",
            vec![
                ("customer_id", DataType::Int64),
                ("signup_date", DataType::Date32),
                ("country", DataType::Utf8),
                ("age", DataType::Int32),
                ("gender", DataType::Utf8),
                ("income", DataType::Float64),
                ("acquisition_cost", DataType::Float64),
                ("channel", DataType::Utf8),
            ],
        ),
        (
            "transactions",
            vec![
                ("transaction_id", DataType::Int64),
                ("customer_id", DataType::Int64),
                ("transaction_ts", utc.clone()),
                ("amount", DataType::Float64),
                ("quantity", DataType::Int32),
                ("product_category", DataType::Utf8),
            ],
        ),
        (
            "interactions",
            vec![
                ("interaction_id", DataType::Int64),
                ("customer_id", DataType::Int64),
                ("interaction_ts", utc.clone()),
                ("kind", DataType::Utf8),
                ("duration_s", DataType::Int32),
            ],
        ),
    ];
    for (table, cols) in expected {
        let p = prefix.clone().join(table).join("part-00000.parquet");
        let bytes = store.get(&p).await.unwrap().bytes().await.unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
        let schema = builder.schema().clone();
        let got: Vec<(String, DataType, bool)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
            .collect();
        let want: Vec<(String, DataType, bool)> = cols.into_iter().map(|(n, t)| (n.to_string(), t, false)).collect();
        assert_eq!(got, want, "schema of {table}");
        let md = builder.metadata();
        assert!(md.num_row_groups() >= 1);
        let cc = md.row_group(0).column(0);
        assert_eq!(cc.compression(), Compression::ZSTD(ZstdLevel::default()));
        assert!(cc.statistics().is_some(), "statistics written");
    }
}

/// Expected transactions per customer under the model, from the BG/NBD
/// closed form (Fader, Hardie & Lee 2005, eq. 9) adapted to dropout being
/// possible right after the first purchase: E[X(t)] = b/(a−1) ·
/// [1 − (α/(α+t))^r · ₂F₁(r, b+1; a+b; t/(α+t))], with r, α the shape and
/// rate of λ, averaged over the signup distribution (t = time from
/// signup to the window end, in years), plus the first purchase.
fn expected_tx_per_customer(n_days: i64) -> f64 {
    let (r, alpha, a, b) = (LAMBDA_SHAPE, 1.0 / LAMBDA_SCALE, DROP_A, DROP_B);
    let hyp2f1 = |aa: f64, bb: f64, cc: f64, z: f64| {
        let (mut s, mut term) = (1.0, 1.0);
        for k in 0..200_000 {
            let k = k as f64;
            term *= (aa + k) * (bb + k) / ((cc + k) * (k + 1.0)) * z;
            s += term;
            if term.abs() < 1e-13 * s {
                break;
            }
        }
        s
    };
    let ex =
        |t: f64| b / (a - 1.0) * (1.0 - (alpha / (alpha + t)).powf(r) * hyp2f1(r, b + 1.0, a + b, t / (alpha + t)));
    let years = n_days as f64 * US_PER_DAY as f64 / US_PER_YEAR;
    let m = 4_000;
    let g = SIGNUP_GROWTH;
    let mean: f64 = (0..m)
        .map(|i| {
            let u = (i as f64 + 0.5) / m as f64;
            let frac = (u * g.exp_m1()).ln_1p() / g;
            ex(years * (1.0 - frac))
        })
        .sum::<f64>()
        / m as f64;
    1.0 + mean
}

#[tokio::test]
async fn invariants_hold() {
    let n = 2_000u64;
    let opts = GenerateOptions::new(n, 42);
    let store = mem();
    let prefix = Path::from("inv");
    // Chunks of 700 customers: ids must also run on across chunks.
    let summary = run(store.clone(), &prefix, &opts, 700, &|_| {}).await.unwrap();
    assert_eq!(summary.files.len(), 9);
    let cust = read_table(&store, &prefix, "customers").await;
    let tx = read_table(&store, &prefix, "transactions").await;
    let ix = read_table(&store, &prefix, "interactions").await;
    assert_eq!(summary.customers, n);

    // customers: ids 1..n, signup days non-decreasing and in the window
    let cid = col_i64(&cust, "customer_id");
    assert_eq!(cid, (1..=n as i64).collect::<Vec<_>>());
    let signup = col_date(&cust, "signup_date");
    let (d0, d1) = (epoch_day(opts.start), epoch_day(opts.end));
    assert!(signup.windows(2).all(|w| w[0] <= w[1]), "signup days decrease");
    assert!(signup.iter().all(|&d| (d0..d1).contains(&(d as i64))));
    // growth: the second half of the window has more signups than the first
    let mid = (d0 + d1) / 2;
    let late = signup.iter().filter(|&&d| d as i64 >= mid).count() as f64 / n as f64;
    assert!((0.55..0.65).contains(&late), "share of late signups {late}");
    let age = col_i32(&cust, "age");
    assert!(age.iter().all(|a| (18..=90).contains(a)));
    assert!(col_str(&cust, "gender").iter().all(|g| GENDERS.contains(&g.as_str())));
    assert!(col_str(&cust, "channel").iter().all(|g| CHANNELS.contains(&g.as_str())));
    assert!(
        col_str(&cust, "country")
            .iter()
            .all(|g| COUNTRIES.contains(&g.as_str()))
    );

    // transactions
    let tid = col_i64(&tx, "transaction_id");
    assert_eq!(tid.len() as u64, summary.transactions);
    assert_eq!(tid, (1..=tid.len() as i64).collect::<Vec<_>>());
    let tcust = col_i64(&tx, "customer_id");
    let tts = col_ts(&tx, "transaction_ts");
    let end_us = d1 * US_PER_DAY;
    let mut first_seen = vec![false; n as usize + 1];
    let mut prev: Option<(i64, i64)> = None;
    for (&c, &t) in tcust.iter().zip(&tts) {
        assert!((1..=n as i64).contains(&c));
        let day = signup[(c - 1) as usize] as i64;
        assert!(t >= day * US_PER_DAY, "transaction before signup");
        assert!(t < end_us, "transaction at/after the end");
        if !first_seen[c as usize] {
            first_seen[c as usize] = true;
            assert_eq!(t.div_euclid(US_PER_DAY), day, "first purchase not on signup day");
        }
        if let Some(p) = prev {
            assert!(p < (c, t), "rows not ordered by (customer, ts)");
        }
        prev = Some((c, t));
    }
    assert!(first_seen[1..].iter().all(|&s| s), "a customer has no transaction");
    for a in col_f64(&tx, "amount") {
        assert!(a >= 0.01, "amount {a}");
        assert_eq!(round2(a), a, "amount {a} has more than 2 decimals");
    }
    assert!(col_i32(&tx, "quantity").iter().all(|&q| q >= 1));
    assert!(
        col_str(&tx, "product_category")
            .iter()
            .all(|c| CATEGORIES.contains(&c.as_str()))
    );

    // transactions per customer within 4 standard errors of the model's mean
    let mut per = vec![0f64; n as usize];
    for &c in &tcust {
        per[(c - 1) as usize] += 1.0;
    }
    let mean = per.iter().sum::<f64>() / n as f64;
    let var = per.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
    let se = (var / n as f64).sqrt();
    let want = expected_tx_per_customer(d1 - d0);
    assert!((9.0..11.5).contains(&want), "model mean {want}");
    assert!((mean - want).abs() < 4.0 * se, "mean {mean} vs model {want} ± 4·{se}");

    // interactions
    let iid = col_i64(&ix, "interaction_id");
    assert_eq!(iid, (1..=iid.len() as i64).collect::<Vec<_>>());
    assert_eq!(iid.len() as u64, summary.interactions);
    let per_ix = iid.len() as f64 / n as f64;
    assert!((5.0..20.0).contains(&per_ix), "interactions per customer {per_ix}");
    let icust = col_i64(&ix, "customer_id");
    let its = col_ts(&ix, "interaction_ts");
    for (&c, &t) in icust.iter().zip(&its) {
        assert!(t >= signup[(c - 1) as usize] as i64 * US_PER_DAY && t < end_us);
    }
    assert!(col_str(&ix, "kind").iter().all(|k| KINDS.contains(&k.as_str())));
    assert!(col_i32(&ix, "duration_s").iter().all(|d| (1..=86_400).contains(d)));

    // files and row counts
    let total: u64 = summary.files.iter().map(|f| f.1).sum();
    assert_eq!(total, n + summary.transactions + summary.interactions);
}

#[tokio::test]
async fn rerun_with_fewer_customers_leaves_no_stale_parts() {
    let store = mem();
    let prefix = Path::from("data/crm");
    let big = run(store.clone(), &prefix, &GenerateOptions::new(1_000, 5), 300, &|_| {})
        .await
        .unwrap();
    assert_eq!(big.files.len(), 12);
    // a stray parquet file and an unrelated object
    let stray = prefix.clone().join("customers").join("old").join("x.parquet");
    let notes = prefix.clone().join("customers").join("notes.txt");
    store.put(&stray, b"junk".to_vec().into()).await.unwrap();
    store.put(&notes, b"keep".to_vec().into()).await.unwrap();
    let small = run(store.clone(), &prefix, &GenerateOptions::new(250, 5), 300, &|_| {})
        .await
        .unwrap();
    assert_eq!(small.files.len(), 3);
    let left: Vec<String> = dump(&store, &prefix).await.into_keys().collect();
    let mut want: Vec<String> = small.files.iter().map(|f| f.0.clone()).collect();
    want.push(notes.to_string());
    want.sort();
    assert_eq!(left, want);
    // and the small run equals a fresh small run
    let fresh = mem();
    run(fresh.clone(), &prefix, &GenerateOptions::new(250, 5), 300, &|_| {})
        .await
        .unwrap();
    let mut a = dump(&store, &prefix).await;
    a.remove(&notes.to_string());
    assert_eq!(a, dump(&fresh, &prefix).await);
}

#[tokio::test]
async fn rejects_bad_options() {
    let store = mem();
    let p = Path::from("x");
    assert!(matches!(
        generate(store.clone(), &p, &GenerateOptions::new(0, 1)).await,
        Err(GenerateError::InvalidOptions(_))
    ));
    let mut o = GenerateOptions::new(10, 1);
    o.end = o.start;
    assert!(matches!(
        generate(store, &p, &o).await,
        Err(GenerateError::InvalidOptions(_))
    ));
}

#[test]
fn progress_is_reported_per_chunk() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    rt.block_on(run(mem(), &Path::from("p"), &GenerateOptions::new(700, 1), 300, &|d| {
        seen.lock().unwrap().push(d)
    }))
    .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![300, 600, 700]);
}
