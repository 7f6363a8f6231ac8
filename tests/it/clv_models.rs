//! The CLV model methods (`bgnbd`, `pareto_nbd`, `mbgnbd`) and the
//! calibration/holdout table, through the binary on the committed sample
//! and on generated data. Expected values come from
//! tests/reference/btyd_pareto_mbg.py (an independent scipy/mpmath
//! implementation).

use std::path::Path;

use datafusion::arrow::array::{Array, RecordBatch, StringArray};

use super::common::{close, crmflow, f64s, read_dir};

fn run(dir: &Path, yaml: &str) -> super::common::Output {
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
    crmflow(dir, &["run", "p.yaml"])
}

fn sample() -> String {
    format!("{}/data/sample", env!("CARGO_MANIFEST_DIR"))
}

/// The `value` of row `name` of a `<step>_model` table.
fn param(batches: &[RecordBatch], name: &str) -> f64 {
    let mut found = Vec::new();
    for b in batches {
        let names = b
            .column_by_name("name")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let values = f64s(std::slice::from_ref(b), "value");
        for i in 0..b.num_rows() {
            if names.value(i) == name {
                found.push(values[i].unwrap());
            }
        }
    }
    assert_eq!(found.len(), 1, "{name}");
    found[0]
}

/// The MBG/NBD calibration table of the sample (fit up to 2025-11-24, holdout
/// the year after) equals the reference script's (`calibration`): customers
/// exactly, means, MAE and correlation to 1e-6 (the two optimizers' optima
/// differ by ~1e-7).
#[test]
fn calibration_table_matches_the_reference_on_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let yaml = format!(
        "name: cal
sources:
  transactions: {{url: {}/transactions/}}
steps:
  - name: clv
    clv: {{method: mbgnbd, as_of: \"2025-11-24\", holdout_from: \"2025-11-25\", holdout_to: \"2026-11-24\"}}
sinks:
  - table: clv_calibration
    url: out/cal/
  - table: clv_model
    url: out/model/
",
        sample()
    );
    let out = run(d, &yaml);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let model = read_dir(&d.join("out/model"));
    for (name, want) in [
        ("r", 1.5647152439371077),
        ("alpha", 5.717042366488233),
        ("a", 4.5388530832751774),
        ("b", 82.7281910685069),
    ] {
        close(param(&model, name), want, 1e-5);
    }
    close(param(&model, "mbgnbd_log_likelihood"), -55066.44924864445, 1e-11);
    let want = [
        (
            "0",
            407,
            2.7665847665847667,
            3.035516002533017,
            2.4969396860631843,
            0.5333083530305017,
        ),
        (
            "1",
            360,
            3.091666666666667,
            3.2913108444520662,
            2.7158463170653926,
            0.5259685457138172,
        ),
        (
            "2",
            287,
            3.8745644599303137,
            3.793075286144629,
            2.9030783424835165,
            0.5922358806709738,
        ),
        (
            "3",
            239,
            3.485355648535565,
            3.5995445261566514,
            2.6276110966407358,
            0.607654682237486,
        ),
        (
            "4",
            187,
            3.7914438502673797,
            3.731886500153243,
            2.7239102522141243,
            0.6601559235145396,
        ),
        (
            "5",
            165,
            3.8848484848484848,
            4.153006837482012,
            2.7467874283426568,
            0.6312593077530538,
        ),
        (
            "6",
            154,
            4.1103896103896105,
            4.441568412343908,
            2.6185123345281243,
            0.6594592242111261,
        ),
        (
            "7+",
            1194,
            6.381909547738694,
            6.360729029892849,
            3.87796620260725,
            0.6771792182712688,
        ),
        (
            "total",
            2993,
            4.606414968259272,
            4.687955752360455,
            3.1577933013805985,
            0.6640056504421181,
        ),
    ];
    let cal = read_dir(&d.join("out/cal"));
    let buckets: Vec<String> = cal
        .iter()
        .flat_map(|b| {
            let a = b
                .column_by_name("bucket")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            (0..a.len()).map(move |i| a.value(i).to_string())
        })
        .collect();
    assert_eq!(buckets, want.iter().map(|w| w.0).collect::<Vec<_>>());
    let col = |c: &str| f64s(&cal, c);
    let (n, actual, predicted, mae, corr) = (
        col("customers"),
        col("actual_mean"),
        col("predicted_mean"),
        col("mae"),
        col("correlation"),
    );
    for (i, w) in want.iter().enumerate() {
        assert_eq!(n[i], Some(f64::from(w.1)), "{}", w.0);
        close(actual[i].unwrap(), w.2, 1e-12);
        close(predicted[i].unwrap(), w.3, 1e-6);
        close(mae[i].unwrap(), w.4, 1e-6);
        close(corr[i].unwrap(), w.5, 1e-6);
    }
}

/// Mistakes in the holdout keys are exit-2 problems naming the key.
#[test]
fn holdout_mistakes_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let yaml = |clv: &str| {
        format!(
            "name: cal
sources:
  transactions: {{url: {}/transactions/}}
  customers: {{url: {}/customers/}}
steps:
  - name: clv
    clv: {clv}
sinks:
  - table: clv
    url: out/clv/
",
            sample(),
            sample()
        )
    };
    for (clv, want) in [
        (
            "{method: pareto_nbd, as_of: \"2025-11-24\", holdout_from: \"2025-11-24\", holdout_to: \"2026-11-24\"}",
            "clv.holdout_from (2025-11-24) must be after clv.as_of (2025-11-24)",
        ),
        (
            "{method: mbgnbd, as_of: \"2025-11-24\", holdout_from: \"2025-12-01\", holdout_to: \"2025-11-30\"}",
            "clv.holdout_to (2025-11-30) must not be before clv.holdout_from (2025-12-01)",
        ),
        (
            "{method: bgnbd, as_of: \"2025-11-24\", holdout_from: \"2025-12-01\"}",
            "clv.holdout_from and clv.holdout_to go together: set both or neither",
        ),
        (
            "{method: bgnbd, as_of: \"2025-11-24\", holdout_from: \"2025-12-01\", holdout_to: \"soon\"}",
            "clv.holdout_to \"soon\" is not a date (YYYY-MM-DD)",
        ),
        (
            "{method: discounted, as_of: \"2025-11-24\", holdout_from: \"2025-12-01\", holdout_to: \"2026-01-01\"}",
            "clv.holdout_from applies to methods bgnbd, pareto_nbd and mbgnbd only (use horizon_years with discounted)",
        ),
    ] {
        std::fs::write(d.join("p.yaml"), yaml(clv)).unwrap();
        let out = crmflow(d, &["validate", "p.yaml"]);
        assert_eq!(out.code, 2, "{clv}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("step \"clv\" (line 6): {want}")),
            "{clv}: {}",
            out.stderr
        );
    }
}

/// Pareto/NBD and MBG/NBD on the committed sample (as_of 2026-11-24,
/// weeks): parameters and log-likelihood equal the reference script's
/// optimum (`sample`: scipy BFGS on its own likelihoods), and P(alive) and
/// E[Y(one year)] of a few customers its values at that optimum
/// (`sample_customers`, mpmath); the optima differ by ~1e-5 along flat
/// directions, hence 1e-4 on parameters and scores.
#[test]
fn pareto_nbd_and_mbgnbd_fit_the_sample_as_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let yaml = format!(
        "name: models
sources:
  transactions: {{url: {}/transactions/}}
steps:
  - name: pnbd
    clv: {{method: pareto_nbd, as_of: \"2026-11-24\"}}
  - name: mbg
    clv: {{method: mbgnbd, as_of: \"2026-11-24\"}}
sinks:
  - {{table: pnbd, url: out/pnbd/}}
  - {{table: pnbd_model, url: out/pnbd_model/}}
  - {{table: mbg, url: out/mbg/}}
  - {{table: mbg_model, url: out/mbg_model/}}
",
        sample()
    );
    let out = run(d, &yaml);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let pm = read_dir(&d.join("out/pnbd_model"));
    for (name, want) in [
        ("r", 1.6133990170472703),
        ("alpha", 6.6484989548727675),
        ("s", 1.7813525494568188),
        ("beta", 121.81813974819065),
    ] {
        close(param(&pm, name), want, 1e-4);
        assert!(param(&pm, &format!("{name}_se")) > 0.0);
    }
    close(param(&pm, "pareto_nbd_log_likelihood"), -113675.390057837, 1e-11);
    assert_eq!(param(&pm, "pareto_nbd_converged"), 1.0);
    let mm = read_dir(&d.join("out/mbg_model"));
    for (name, want) in [
        ("r", 1.560445741572017),
        ("alpha", 5.651126532974338),
        ("a", 3.7650304544952515),
        ("b", 64.42447326044729),
    ] {
        close(param(&mm, name), want, 1e-4);
        assert!(param(&mm, &format!("{name}_se")) > 0.0);
    }
    close(param(&mm, "mbgnbd_log_likelihood"), -113435.77214927698, 1e-11);
    assert_eq!(param(&mm, "mbgnbd_converged"), 1.0);
    let customers = [
        (
            1.0,
            2.328824083562036e-05,
            9.972110168238253e-05,
            3.955599339698342e-05,
            0.00017645356601979012,
        ),
        (
            2.0,
            1.1084568579599795e-07,
            3.5304581519121283e-07,
            1.975054667384285e-07,
            6.69615736211462e-07,
        ),
        (
            100.0,
            0.00164269473767162,
            0.0012054900231294448,
            0.00609028607795645,
            0.004991259273271211,
        ),
        (
            4321.0,
            0.521152669563939,
            2.3103104820503395,
            0.5233097347812697,
            2.5870757295452873,
        ),
    ];
    let (p, m) = (read_dir(&d.join("out/pnbd")), read_dir(&d.join("out/mbg")));
    for (id, pa, pe, ma, me) in customers {
        for (b, alive, e) in [(&p, pa, pe), (&m, ma, me)] {
            let i = f64s(b, "customer_id").iter().position(|x| *x == Some(id)).unwrap();
            close(f64s(b, "p_alive")[i].unwrap(), alive, 1e-4);
            close(f64s(b, "expected_purchases")[i].unwrap(), e, 1e-4);
        }
    }
}

/// crmflow's own generator tells the MBG/NBD story (a customer may drop out
/// right after the first purchase, p ~ Beta(3, 50); λ ~ Gamma(1.5, scale 10
/// per year), so r = 1.5 and α = 365.25/7/10 weeks). On 30,000 generated
/// customers MBG/NBD recovers the dropout parameters a and b within 4
/// standard errors and r and α within 4% and 8%: what is left is the bias of
/// counting purchase days, not purchases (the heavy buyers' second purchase
/// on the same day, ~3.5% of purchases, which lowers the rate r/α by as
/// much). BG/NBD, which cannot let a one-time buyer be dead, misses r by more
/// than 20 standard errors and fits far worse.
#[test]
fn mbgnbd_recovers_the_generator_where_bgnbd_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let g = crmflow(d, &["generate", "--customers", "30000", "--seed", "13", "--out", "gen"]);
    assert_eq!(g.code, 0, "{}", g.stderr);
    let yaml = "name: gen
sources:
  transactions: {url: gen/transactions/}
steps:
  - name: bg
    clv: {method: bgnbd, as_of: \"2026-11-24\"}
  - name: mbg
    clv: {method: mbgnbd, as_of: \"2026-11-24\"}
sinks:
  - {table: bg_model, url: out/bg/}
  - {table: mbg_model, url: out/mbg/}
";
    let out = run(d, yaml);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (bg, mbg) = (read_dir(&d.join("out/bg")), read_dir(&d.join("out/mbg")));
    let truth = [("r", 1.5), ("alpha", 365.25 / 7.0 / 10.0), ("a", 3.0), ("b", 50.0)];
    let fitted = |m: &[RecordBatch], n: &str| (param(m, n), param(m, &format!("{n}_se")));
    assert_eq!(param(&mbg, "mbgnbd_converged"), 1.0);
    for (name, want) in &truth[2..] {
        let (v, se) = fitted(&mbg, name);
        assert!((v - want).abs() <= 4.0 * se, "MBG/NBD {name}: {v} ± {se}, truth {want}");
    }
    let (r, _) = fitted(&mbg, "r");
    let (alpha, _) = fitted(&mbg, "alpha");
    assert!((r / 1.5 - 1.0).abs() < 0.04, "MBG/NBD r {r}");
    assert!((alpha / truth[1].1 - 1.0).abs() < 0.08, "MBG/NBD alpha {alpha}");
    let (r_bg, se_bg) = fitted(&bg, "r");
    assert!(1.5 - r_bg > 20.0 * se_bg, "BG/NBD r {r_bg} ± {se_bg}");
    let (ll_bg, ll_mbg) = (param(&bg, "bgnbd_log_likelihood"), param(&mbg, "mbgnbd_log_likelihood"));
    assert!(
        ll_mbg - ll_bg > 100.0,
        "log-likelihoods: BG/NBD {ll_bg}, MBG/NBD {ll_mbg}"
    );
}
