//! The demo's feature SQL on the tiny hand-made dataset: every value was
//! computed by hand (see the comments) from the rows in `common::tiny`.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;

use super::common::{Customer, close, crmflow, f64s, read_dir, tiny, write_crm};

/// A pipeline running the demo's feature SQL on `data/` into `out/`.
pub fn features_pipeline(dir: &std::path::Path) -> std::path::PathBuf {
    let sql = format!("{}/sql/customer_features.sql", env!("CARGO_MANIFEST_DIR"));
    let yaml = format!(
        r#"name: features_only
vars:
  as_of: "2026-11-24"
  lookback: "0 days"
sources:
  customers: {{url: data/customers/}}
  transactions: {{url: data/transactions/}}
  interactions: {{url: data/interactions/}}
steps:
  - name: features
    sql: {sql}
sinks:
  - table: features
    url: out/features/
"#
    );
    let path = dir.join("features.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn feature_values_match_a_hand_computation() {
    let dir = tempfile::tempdir().unwrap();
    tiny(&dir.path().join("data"));
    features_pipeline(dir.path());
    let out = crmflow(dir.path(), &["run", "features.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let batches = read_dir(&dir.path().join("out/features"));
    let mut ids: Vec<i64> = Vec::new();
    for b in &batches {
        ids.extend(
            b.column_by_name("customer_id")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .iter(),
        );
    }
    // Customer 4 signed up after as_of: not in the population.
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i]);
    assert_eq!(order.iter().map(|&i| ids[i]).collect::<Vec<_>>(), vec![1, 2, 3]);
    let col = |name: &str| -> Vec<f64> {
        let v = f64s(&batches, name);
        order
            .iter()
            .map(|&i| v[i].unwrap_or_else(|| panic!("{name} is null")))
            .collect()
    };

    // Customer 1: purchases 2026-01-01 (100), 2026-03-01 (50 + 25.50), 2026-05-30 (40);
    // the 999 on 2026-11-25 is after as_of. Last purchase 178 days before as_of,
    // signup 327 days before.
    // Customer 2: 2025-06-15 (200), 2026-06-15 (100), 2026-11-24 23:59:59 (10).
    // Customer 3: no purchase, signed up 2026-11-20.
    assert_eq!(col("recency_days"), vec![178.0, 0.0, 4.0]);
    assert_eq!(col("frequency"), vec![4.0, 3.0, 0.0]);
    assert_eq!(col("monetary"), vec![215.5, 310.0, 0.0]);
    close(col("avg_amount")[0], 215.5 / 4.0, 1e-15);
    close(col("avg_amount")[1], 310.0 / 3.0, 1e-15);
    assert_eq!(col("avg_amount")[2], 0.0);
    assert_eq!(col("tenure_days"), vec![327.0, 527.0, 4.0]);
    close(col("purchases_per_year")[0], 365.0 * 4.0 / 328.0, 1e-15);
    close(col("purchases_per_year")[1], 365.0 * 3.0 / 528.0, 1e-15);
    assert_eq!(col("purchases_per_year")[2], 0.0);

    // Interactions in [2026-08-27 00:00, 2026-11-25 00:00): customer 1 has the
    // web visit at 08-27 00:00 (not the one a second earlier), the ticket and
    // the app session (not the email open at 11-25 00:00).
    assert_eq!(col("web_visits_90d"), vec![1.0, 0.0, 0.0]);
    assert_eq!(col("email_opens_90d"), vec![0.0, 0.0, 0.0]);
    assert_eq!(col("email_clicks_90d"), vec![0.0, 1.0, 0.0]);
    assert_eq!(col("support_tickets_90d"), vec![1.0, 2.0, 0.0]);
    assert_eq!(col("app_sessions_90d"), vec![1.0, 0.0, 0.0]);

    // satisfaction = (engagement + 1) / (engagement + 3 tickets + 2)
    close(col("satisfaction")[0], 3.0 / 7.0, 1e-15);
    close(col("satisfaction")[1], 2.0 / 9.0, 1e-15);
    close(col("satisfaction")[2], 0.5, 1e-15);
    // loyalty = regularity x exp(-recency / (2 mean gap + 30))
    // c1: gaps 59, 90 days: mean 74.5, sd 15.5 -> (1 / (1 + 15.5/74.5)) exp(-178/179)
    // c2: gaps 365, 162: mean 263.5, sd 101.5 -> 1 / (1 + 101.5/263.5), recency 0
    // c3: no gaps -> 0.25 exp(-4/90)
    close(col("loyalty")[0], 74.5 / 90.0 * (-178.0f64 / 179.0).exp(), 1e-14);
    close(col("loyalty")[1], 263.5 / 365.0, 1e-14);
    close(col("loyalty")[2], 0.25 * (-4.0f64 / 90.0).exp(), 1e-14);

    // The output keeps every customer attribute.
    let schema = batches[0].schema();
    for name in [
        "signup_date",
        "country",
        "age",
        "gender",
        "income",
        "acquisition_cost",
        "channel",
    ] {
        assert!(schema.field_with_name(name).is_ok(), "{name} missing");
    }
    assert!(
        batches
            .iter()
            .all(|b| b.column_by_name("recency_days").unwrap().null_count() == 0)
    );
}

/// A customer's purchase gaps are its own: customers 1, 65 and 129 (which
/// shared a bucket of the window the gaps once came from, customer_id % 64)
/// each get only the gaps between their own distinct days, never one from
/// the previous customer's last day to their first.
#[test]
fn purchase_gaps_stay_within_each_customer() {
    let dir = tempfile::tempdir().unwrap();
    let customer = |id, signup| Customer { id, signup, cost: 1.0 };
    write_crm(
        &dir.path().join("data"),
        &[
            customer(1, "2026-01-01"),
            customer(65, "2026-01-01"),
            customer(129, "2026-06-01"),
        ],
        &[
            (1, "2026-01-01 10:00:00", 100.00),
            (1, "2026-03-01 12:00:00", 50.00),
            (1, "2026-03-01 18:00:00", 25.50),
            (1, "2026-05-30 09:00:00", 40.00),
            (65, "2026-02-01 10:00:00", 10.00),
            (65, "2026-02-11 10:00:00", 10.00),
            (129, "2026-06-01 10:00:00", 10.00),
        ],
        &[(1, "2026-11-24 12:00:00", "app_session")],
    );
    features_pipeline(dir.path());
    let out = crmflow(dir.path(), &["run", "features.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let batches = read_dir(&dir.path().join("out/features"));
    let ids = f64s(&batches, "customer_id");
    let loyalty = f64s(&batches, "loyalty");
    let of = |id: f64| loyalty[ids.iter().position(|v| *v == Some(id)).unwrap()].unwrap();
    // c1: gaps 59, 90 (two purchases on 03-01 are one day), last purchase 178 days before as_of.
    close(of(1.0), 74.5 / 90.0 * (-178.0f64 / 179.0).exp(), 1e-14);
    // c65: one gap of 10 days, last purchase 286 days before: 0.5 exp(-286 / (2 x 10 + 30)).
    close(of(65.0), 0.5 * (-286.0f64 / 50.0).exp(), 1e-14);
    // c129: no gap (one purchase), 176 days before: 0.25 exp(-176 / 90).
    close(of(129.0), 0.25 * (-176.0f64 / 90.0).exp(), 1e-14);
}

#[test]
fn lookback_moves_the_as_of_date() {
    // With lookback 365 days the as-of day is 2025-11-24: only customer 2
    // (signed up 2025-06-15) exists, with one purchase 162 days earlier.
    let dir = tempfile::tempdir().unwrap();
    tiny(&dir.path().join("data"));
    features_pipeline(dir.path());
    let out = crmflow(dir.path(), &["run", "features.yaml", "--var", "lookback=365 days"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let batches = read_dir(&dir.path().join("out/features"));
    assert_eq!(f64s(&batches, "customer_id"), vec![Some(2.0)]);
    assert_eq!(f64s(&batches, "recency_days"), vec![Some(162.0)]);
    assert_eq!(f64s(&batches, "tenure_days"), vec![Some(162.0)]);
    assert_eq!(f64s(&batches, "monetary"), vec![Some(200.0)]);
}
