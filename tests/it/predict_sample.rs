//! `predict` with a fit sample: the sample and the holdout are independent
//! draws (the sample uses a salted hash), so a sample smaller than the
//! holdout still trains, and the holdout metrics use every holdout row.
//! Expected counts are recomputed here from the documented rules with the
//! public hash functions (pinned to an independent Python implementation).

use std::path::Path;

use datafusion::arrow::array::Int64Array;

use super::common::{crmflow, error_of, f64s, read_dir};
use crmflow::hash::{key_hashes, salted};

/// The demo pipeline with `fit_sample: N` on churn and a sink for its
/// training table.
fn pipeline(dir: &Path, fit_sample: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let yaml = std::fs::read_to_string(root.join("pipelines/crm_nightly.yaml")).unwrap();
    let churn = yaml.find("  - name: churn").unwrap();
    let (head, tail) = yaml.split_at(churn);
    let tail = tail.replacen(
        "      fit_sample: 200000",
        &format!("      fit_sample: {fit_sample}"),
        1,
    );
    let yaml = format!("{head}{tail}  - table: training_set\n    url: \"${{out}}/training_set/\"\n")
        .replace("../sql/", &format!("{}/sql/", root.display()));
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
}

fn run_churn(dir: &Path) -> super::common::Output {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
    let data = format!("data={}", data.display());
    crmflow(
        dir,
        &[
            "run",
            "p.yaml",
            "--var",
            &data,
            "--select",
            "churn",
            "--select",
            "training_set",
        ],
    )
}

fn metric(dir: &Path, name: &str) -> f64 {
    let b = read_dir(&dir.join("out/churn_metrics"));
    let names: Vec<String> = b
        .iter()
        .flat_map(|b| {
            let a = b.column_by_name("metric").unwrap();
            let a = a
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
                .unwrap();
            a.iter().map(|v| v.unwrap().to_string()).collect::<Vec<_>>()
        })
        .collect();
    let values = f64s(&b, "value");
    let i = names
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no metric {name}: {names:?}"));
    values[i].unwrap()
}

fn in_holdout(h: u64, f: f64) -> bool {
    (h as f64) < f * 18_446_744_073_709_551_616.0
}

#[test]
fn a_small_fit_sample_trains_on_its_train_rows_and_metrics_use_the_whole_holdout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pipeline(d, "500");
    let out = run_churn(d);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let training = read_dir(&d.join("out/training_set"));
    let ids: Vec<i64> = f64s(&training, "customer_id")
        .iter()
        .map(|v| v.unwrap() as i64)
        .collect();
    let labels: Vec<f64> = f64s(&training, "churned_next_90d").iter().map(|v| v.unwrap()).collect();
    let ids_array = Int64Array::from(ids.clone());
    // The holdout: id hash under the seed in the first 20% of the range.
    let split = key_hashes(&ids_array, 42);
    let holdout: Vec<usize> = (0..ids.len()).filter(|&i| in_holdout(split[i], 0.2)).collect();
    // The sample: the 500 smallest hashes under the salted seed.
    let sample_hash = key_hashes(&ids_array, salted(42, "fit_sample"));
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| sample_hash[i]);
    let sample = &order[..500];
    let train = sample.iter().filter(|&&i| !in_holdout(split[i], 0.2)).count();

    // About 400 of the 500 sampled rows are training rows (binomial sd 9).
    assert!((360..=440).contains(&train), "{train}");
    assert_eq!(metric(d, "n_train"), train as f64);
    // Every holdout row of the training table is evaluated, not only the
    // sampled ones.
    assert!(holdout.len() > 500, "{}", holdout.len());
    assert_eq!(metric(d, "n_test"), holdout.len() as f64);
    let base_rate = holdout.iter().map(|&i| labels[i]).sum::<f64>() / holdout.len() as f64;
    assert!((metric(d, "base_rate") - base_rate).abs() < 1e-12);
}

#[test]
fn too_few_training_rows_say_why_and_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A first run publishes the training table, to count from.
    pipeline(d, "500");
    assert_eq!(run_churn(d).code, 0);
    let training = read_dir(&d.join("out/training_set"));
    let ids = Int64Array::from(
        f64s(&training, "customer_id")
            .iter()
            .map(|v| v.unwrap() as i64)
            .collect::<Vec<_>>(),
    );
    let split = key_hashes(&ids, 42);
    let sample_hash = key_hashes(&ids, salted(42, "fit_sample"));
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| sample_hash[i]);
    let in_test = order[..8].iter().filter(|&&i| in_holdout(split[i], 0.2)).count();

    pipeline(d, "8");
    let out = run_churn(d);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        error_of(&out),
        format!(
            "step \"churn\": {} training rows for 9 features and an intercept: too few to fit (\"training_set\" has {} rows, fit_sample: 8 kept 8, {in_test} of 8 are in the holdout (0.2)); raise fit_sample, lower holdout or use fewer features",
            8 - in_test,
            ids.len()
        )
    );
}

#[test]
fn sample_and_holdout_are_independent_over_many_sizes() {
    // For many (rows, sample, holdout), the share of sampled rows outside
    // the holdout is 1 - holdout within sampling error (4 standard errors).
    for (rows, sample, holdout) in [
        (1_000usize, 100usize, 0.2),
        (10_000, 200, 0.2),
        (10_000, 2_000, 0.5),
        (50_000, 500, 0.1),
        (50_000, 5_000, 0.33),
        (100_000, 1_000, 0.9),
        (100_000, 20_000, 0.2),
    ] {
        for seed in [1u64, 42, 20261124] {
            let ids = Int64Array::from((1..=rows as i64).collect::<Vec<_>>());
            let split = key_hashes(&ids, seed);
            let s = key_hashes(&ids, salted(seed, "fit_sample"));
            let mut order: Vec<usize> = (0..rows).collect();
            order.sort_by_key(|&i| s[i]);
            let train = order[..sample]
                .iter()
                .filter(|&&i| !in_holdout(split[i], holdout))
                .count();
            let share = train as f64 / sample as f64;
            let se = (holdout * (1.0 - holdout) / sample as f64).sqrt();
            assert!(
                (share - (1.0 - holdout)).abs() < 4.0 * se,
                "rows {rows}, sample {sample}, holdout {holdout}, seed {seed}: train share {share}"
            );
        }
    }
}
