//! `clv:` customer lifetime value, by the classic discounted formula
//! ([`discounted`]) or by the BG/NBD + Gamma-Gamma model ([`bgnbd`], scored
//! by the stateless function of [`score`]).
//!
//! `method: discounted` is one DataFusion plan: each transaction up to
//! `as_of` falls in year `t = floor(days since signup / 365) + 1` of its
//! customer's life and counts `amount / (1+i)^t`; the acquisition cost is
//! subtracted; every customer signed up by `as_of` gets a row.
//!
//! `method: bgnbd` builds the RFM summary with DataFusion (purchases on one
//! calendar day merged), fits BG/NBD on the distinct (frequency, recency, T)
//! triples with their counts and Gamma-Gamma on repeat buyers
//! ([`super::btyd`]), and scores every customer with a scalar function
//! inside the plan. Its `clv` is the expected spend over `horizon`,
//! discounted month by month: Σⱼ (E[Y(tⱼ)] − E[Y(tⱼ₋₁)]) · E[M] / (1+i)^(tⱼ
//! in years), tⱼ the end of month j (365.25/12 days) capped at the horizon.
//! It is a future value and does not subtract the acquisition cost.
//!
//! `method: pareto_nbd` and `method: mbgnbd` do the same with the Pareto/NBD
//! or the modified BG/NBD purchase model in place of BG/NBD ([`models`]).
//! With `holdout_from` / `holdout_to` a model method also writes
//! `<step>_calibration` ([`calibration`]). Sums over rows are exact
//! ([`exact_sum`]), so every output is the same whatever the partitioning.

mod calibration;
mod discounted;
mod models;
#[cfg(test)]
mod repro_tests;
pub mod rfm_days;
pub mod score;

use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, ScalarUDF, cast as cast_expr, lit};
use datafusion::prelude::{DataFrame, SessionContext, col};
use serde::Deserialize;

use super::{Resolver, Stage, Want, check_column, name_value_schema, table_schema};
use crate::engine::Engine;
use crate::engine::expr::{column, f64_col};
use crate::error::{Error, Problem, Result};
use crate::vars::Vars;

/// `clv:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClvSpec {
    #[serde(default)]
    pub method: Method,
    #[serde(default = "default_transactions")]
    pub transactions: String,
    #[serde(default = "default_customers")]
    pub customers: String,
    pub as_of: String,
    #[serde(default = "default_rate")]
    pub discount_rate: f64,
    /// `discounted`: the last year of life counted (default: all up to as_of).
    pub horizon_years: Option<u32>,
    #[serde(default = "super::default_id")]
    pub id: String,
    #[serde(default = "default_timestamp")]
    pub timestamp: String,
    #[serde(default = "default_amount")]
    pub amount: String,
    #[serde(default = "default_signup")]
    pub signup: String,
    #[serde(default)]
    pub cost: CostSpec,
    #[serde(default)]
    pub allow_negative_amounts: bool,
    /// `bgnbd`: `days` or `weeks` (default weeks).
    pub time_unit: Option<TimeUnit>,
    /// `bgnbd`: the prediction horizon in time units (default one year).
    pub horizon: Option<f64>,
    /// `bgnbd`: L2 penalty on the parameters (default 0).
    pub penalizer: Option<f64>,
    /// Model methods: the first day of the holdout period (after `as_of`).
    pub holdout_from: Option<String>,
    /// Model methods: the last day of the holdout period.
    pub holdout_to: Option<String>,
}

fn default_transactions() -> String {
    "transactions".into()
}
fn default_customers() -> String {
    "customers".into()
}
fn default_rate() -> f64 {
    0.10
}
fn default_timestamp() -> String {
    "transaction_ts".into()
}
fn default_amount() -> String {
    "amount".into()
}
fn default_signup() -> String {
    "signup_date".into()
}

/// `method:`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    #[default]
    Discounted,
    Bgnbd,
    ParetoNbd,
    Mbgnbd,
}

impl Method {
    /// The purchase model of a model method (None for `discounted`).
    pub fn model(self) -> Option<score::Kind> {
        match self {
            Method::Discounted => None,
            Method::Bgnbd => Some(score::Kind::BgNbd),
            Method::ParetoNbd => Some(score::Kind::ParetoNbd),
            Method::Mbgnbd => Some(score::Kind::MbgNbd),
        }
    }
}

/// `time_unit:` of BG/NBD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    Days,
    Weeks,
}

impl TimeUnit {
    fn days(self) -> f64 {
        match self {
            TimeUnit::Days => 1.0,
            TimeUnit::Weeks => 7.0,
        }
    }
}

/// `cost: acquisition_cost` (a column) or `cost: 12.5` (a constant).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "cost: a column name or a number")]
pub enum CostSpec {
    Constant(f64),
    Column(String),
}

impl Default for CostSpec {
    fn default() -> Self {
        CostSpec::Column("acquisition_cost".into())
    }
}

/// A resolved `clv:` step.
#[derive(Debug, Clone)]
pub struct Clv {
    /// The spec with vars bound (its optional fields as written).
    pub spec: ClvSpec,
    pub as_of: NaiveDate,
    /// `bgnbd`: the time unit (default weeks).
    pub unit: TimeUnit,
    /// `bgnbd`: the prediction horizon in time units (default one year).
    pub horizon: f64,
    /// `bgnbd`: the L2 penalty (default 0).
    pub penalizer: f64,
    /// Model methods: the holdout period (first and last day), if any.
    pub holdout: Option<(NaiveDate, NaiveDate)>,
}

impl ClvSpec {
    /// Binds vars in every string and checks the parameters that need no data.
    ///
    /// # Errors
    /// Every problem, each about the step and naming the key.
    pub fn resolve(mut self, step: &str, vars: &Vars) -> std::result::Result<Clv, Vec<Problem>> {
        let mut r = Resolver::new(step, vars);
        r.one("clv.as_of", &mut self.as_of);
        r.one("clv.transactions", &mut self.transactions);
        r.one("clv.customers", &mut self.customers);
        r.one("clv.id", &mut self.id);
        r.one("clv.timestamp", &mut self.timestamp);
        r.one("clv.amount", &mut self.amount);
        r.one("clv.signup", &mut self.signup);
        if let CostSpec::Column(c) = &mut self.cost {
            r.one("clv.cost", c);
        }
        for (key, v) in [
            ("clv.holdout_from", &mut self.holdout_from),
            ("clv.holdout_to", &mut self.holdout_to),
        ] {
            if let Some(v) = v {
                r.one(key, v);
            }
        }
        let interpolated = r.problems.is_empty();
        let as_of = match NaiveDate::parse_from_str(&self.as_of, "%Y-%m-%d") {
            Ok(d) => Some(d),
            Err(_) if interpolated => {
                r.problem(format!("clv.as_of \"{}\" is not a date (YYYY-MM-DD)", self.as_of));
                None
            }
            Err(_) => None,
        };
        if !(self.discount_rate > -1.0) || !self.discount_rate.is_finite() {
            r.problem(format!(
                "clv.discount_rate must be a number above -1, got {}",
                self.discount_rate
            ));
        }
        match self.method {
            Method::Discounted => {
                for (key, set) in [
                    ("time_unit", self.time_unit.is_some()),
                    ("horizon", self.horizon.is_some()),
                    ("penalizer", self.penalizer.is_some()),
                    ("holdout_from", self.holdout_from.is_some()),
                    ("holdout_to", self.holdout_to.is_some()),
                ] {
                    if set {
                        r.problem(format!(
                            "clv.{key} applies to methods bgnbd, pareto_nbd and mbgnbd only (use horizon_years with discounted)"
                        ));
                    }
                }
                if self.horizon_years == Some(0) {
                    r.problem("clv.horizon_years must be at least 1".to_string());
                }
            }
            Method::Bgnbd | Method::ParetoNbd | Method::Mbgnbd => {
                if self.horizon_years.is_some() {
                    r.problem(
                        "clv.horizon_years applies to method: discounted only (use horizon, in time_unit periods)"
                            .to_string(),
                    );
                }
                if let Some(h) = self.horizon
                    && !(h > 0.0 && h.is_finite())
                {
                    r.problem(format!("clv.horizon must be positive, got {h}"));
                }
                if let Some(x) = self.penalizer
                    && !(x >= 0.0)
                {
                    r.problem(format!("clv.penalizer must be >= 0, got {x}"));
                }
            }
        }
        let mut holdout = None;
        if interpolated && let (Some(from), Some(to)) = (&self.holdout_from, &self.holdout_to) {
            let date = |key: &str, v: &str, r: &mut Resolver| match NaiveDate::parse_from_str(v, "%Y-%m-%d") {
                Ok(d) => Some(d),
                Err(_) => {
                    r.problem(format!("clv.{key} \"{v}\" is not a date (YYYY-MM-DD)"));
                    None
                }
            };
            let (from_d, to_d) = (date("holdout_from", from, &mut r), date("holdout_to", to, &mut r));
            if let (Some(f), Some(t), Some(a)) = (from_d, to_d, as_of) {
                if f <= a {
                    r.problem(format!("clv.holdout_from ({f}) must be after clv.as_of ({a})"));
                } else if t < f {
                    r.problem(format!(
                        "clv.holdout_to ({t}) must not be before clv.holdout_from ({f})"
                    ));
                } else {
                    holdout = Some((f, t));
                }
            }
        } else if self.holdout_from.is_some() != self.holdout_to.is_some() {
            r.problem("clv.holdout_from and clv.holdout_to go together: set both or neither".to_string());
        }
        let unit = self.time_unit.unwrap_or(TimeUnit::Weeks);
        let clv = |as_of| Clv {
            holdout,
            as_of,
            unit,
            horizon: self.horizon.unwrap_or(365.0 / unit.days()),
            penalizer: self.penalizer.unwrap_or(0.0),
            spec: self,
        };
        match as_of {
            Some(as_of) => r.finish(clv(as_of)),
            None => Err(r.problems),
        }
    }
}

impl Clv {
    fn as_of_days(&self) -> i32 {
        // Days since 1970-01-01; dates in range always fit i32.
        (self.as_of - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32
    }

    fn as_of_lit(&self) -> Expr {
        lit(ScalarValue::Date32(Some(self.as_of_days())))
    }

    /// Transactions up to and including `as_of`: id, day (Date32), amount.
    fn transactions(&self, tx: DataFrame) -> datafusion::error::Result<DataFrame> {
        self.transactions_between(tx, None, self.as_of)
    }

    /// Transactions on the days `from` (if given) to `to`, inclusive: id,
    /// day (Date32), amount.
    ///
    /// For naive and UTC timestamps the day is integer arithmetic on the
    /// stored value and the bounds timestamp literals (pushed into the
    /// Parquet scan); other columns are cast to a date row by row.
    fn transactions_between(
        &self,
        tx: DataFrame,
        from: Option<NaiveDate>,
        to: NaiveDate,
    ) -> datafusion::error::Result<DataFrame> {
        let s = &self.spec;
        let epoch = |d: NaiveDate| (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days();
        let ts_type = tx
            .schema()
            .field_with_unqualified_name(&s.timestamp)?
            .data_type()
            .clone();
        let Some(per_day) = utc_ticks_per_day(&ts_type) else {
            let day = |d: NaiveDate| lit(ScalarValue::Date32(Some(epoch(d) as i32)));
            let mut keep = col("__day").lt_eq(day(to));
            if let Some(f) = from {
                keep = keep.and(col("__day").gt_eq(day(f)));
            }
            return tx
                .select(vec![
                    column(&s.id).alias("__id"),
                    cast_expr(column(&s.timestamp), DataType::Date32).alias("__day"),
                    f64_col(&s.amount).alias("__amount"),
                ])?
                .filter(keep);
        };
        let bound = |days: i64| ScalarValue::Int64(Some(days * per_day)).cast_to(&ts_type);
        let mut keep = column(&s.timestamp).lt(lit(bound(epoch(to) + 1)?));
        if let Some(f) = from {
            keep = keep.and(column(&s.timestamp).gt_eq(lit(bound(epoch(f))?)));
        }
        let raw = cast_expr(column(&s.timestamp), DataType::Int64);
        // Floor division (timestamps before 1970 are negative).
        let days = datafusion::logical_expr::when(raw.clone().gt_eq(lit(0i64)), raw.clone() / lit(per_day))
            .otherwise((raw - lit(per_day - 1)) / lit(per_day))?;
        tx.filter(keep)?.select(vec![
            column(&s.id).alias("__id"),
            cast_expr(cast_expr(days, DataType::Int32), DataType::Date32).alias("__day"),
            f64_col(&s.amount).alias("__amount"),
        ])
    }

    async fn check_amounts(&self, step: &str, ctx: &SessionContext) -> Result<()> {
        if self.spec.allow_negative_amounts {
            return Ok(());
        }
        let fail = |e: datafusion::error::DataFusionError| Error::step(step, e);
        let tx = ctx.table(self.spec.transactions.as_str()).await.map_err(fail)?;
        let n = tx
            .filter(column(&self.spec.amount).lt(lit(0)))
            .map_err(fail)?
            .count()
            .await
            .map_err(fail)?;
        if n > 0 {
            return Err(Error::step(
                step,
                format!(
                    "column \"{}\" of \"{}\" has {n} negative values; set allow_negative_amounts: true to count refunds",
                    self.spec.amount, self.spec.transactions
                ),
            ));
        }
        Ok(())
    }
}

impl Stage for Clv {
    fn inputs(&self) -> Vec<String> {
        match self.spec.method {
            Method::Discounted => vec![self.spec.transactions.clone(), self.spec.customers.clone()],
            _ => vec![self.spec.transactions.clone()],
        }
    }

    fn extra_suffixes(&self) -> &'static [&'static str] {
        if self.holdout.is_some() {
            &["_model", "_calibration"]
        } else {
            &["_model"]
        }
    }

    async fn schemas(&self, step: &str, engine: &Engine) -> std::result::Result<Vec<SchemaRef>, Vec<Problem>> {
        let s = &self.spec;
        let tx = table_schema(step, engine, &s.transactions).await.map_err(|e| vec![e])?;
        let mut p: Vec<Problem> = Vec::new();
        p.extend(check_column(step, &s.transactions, &tx, &s.id, Want::Key));
        p.extend(check_column(step, &s.transactions, &tx, &s.timestamp, Want::Temporal));
        p.extend(check_column(step, &s.transactions, &tx, &s.amount, Want::Number));
        let id_type = tx
            .field_with_name(&s.id)
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Int64);
        let out = match s.method {
            Method::Discounted => {
                let cu = table_schema(step, engine, &s.customers).await.map_err(|e| vec![e])?;
                p.extend(check_column(step, &s.customers, &cu, &s.id, Want::Key));
                p.extend(check_column(step, &s.customers, &cu, &s.signup, Want::Date));
                if let CostSpec::Column(c) = &s.cost {
                    p.extend(check_column(step, &s.customers, &cu, c, Want::Number));
                }
                let id_type = cu
                    .field_with_name(&s.id)
                    .map(|f| f.data_type().clone())
                    .unwrap_or(id_type);
                Schema::new(vec![
                    Field::new(&s.id, id_type, true),
                    Field::new("clv", DataType::Float64, true),
                ])
            }
            Method::Bgnbd | Method::ParetoNbd | Method::Mbgnbd => {
                let mut fields = vec![Field::new(&s.id, id_type, true)];
                for f in ["frequency", "recency", "t", "monetary_value"]
                    .iter()
                    .chain(score::FIELDS.iter())
                {
                    fields.push(Field::new(*f, DataType::Float64, true));
                }
                Schema::new(fields)
            }
        };
        if !p.is_empty() {
            return Err(p);
        }
        let mut schemas = vec![Arc::new(out), name_value_schema("name")];
        if self.holdout.is_some() {
            schemas.push(calibration::schema());
        }
        Ok(schemas)
    }

    async fn run(&self, step: &str, engine: &Engine) -> Result<Vec<DataFrame>> {
        self.check_amounts(step, engine.context()).await?;
        match self.spec.method.model() {
            None => self.run_discounted(step, engine).await,
            Some(kind) => self.run_model(kind, step, engine).await,
        }
    }
}

/// The sum of a Float64 expression over a group, the same whatever order the
/// rows arrive in (thread count, partitions, batch sizes): each value is
/// rounded to 18 decimal places and summed exactly as a 128-bit decimal
/// (sums up to 10^20 in magnitude; beyond, the query fails with an overflow).
pub(super) fn exact_sum(e: Expr) -> Expr {
    cast_expr(
        datafusion::functions_aggregate::expr_fn::sum(cast_expr(e, DataType::Decimal128(38, 18))),
        DataType::Float64,
    )
}

/// Ticks per day of a timestamp type whose calendar day is its stored
/// value divided by a day (naive or UTC); `None` for other types.
fn utc_ticks_per_day(t: &DataType) -> Option<i64> {
    use datafusion::arrow::datatypes::TimeUnit as Unit;
    let DataType::Timestamp(unit, tz) = t else {
        return None;
    };
    if let Some(tz) = tz
        && !matches!(tz.as_ref(), "UTC" | "Etc/UTC" | "Z" | "+00:00" | "+0000" | "+00")
    {
        return None;
    }
    Some(
        86_400
            * match unit {
                Unit::Second => 1,
                Unit::Millisecond => 1_000,
                Unit::Microsecond => 1_000_000,
                Unit::Nanosecond => 1_000_000_000,
            },
    )
}

/// The scalar functions CLV plans call.
pub fn functions() -> Vec<ScalarUDF> {
    let mut f: Vec<ScalarUDF> = [score::Kind::BgNbd, score::Kind::ParetoNbd, score::Kind::MbgNbd]
        .into_iter()
        .map(score::udf)
        .collect();
    f.push(discounted::discount_udf());
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch, TimestampSecondArray};
    use datafusion::arrow::datatypes::Date32Type;

    /// The transactions' days and kept rows: the integer path for naive and
    /// UTC timestamps, the cast for another zone, equal to a cast to DATE
    /// with the `<= as_of` filter, around midnights and before 1970.
    #[tokio::test]
    async fn days_by_arithmetic_equal_a_cast_to_date() {
        let secs: Vec<i64> = vec![
            -86_401,
            -86_400,
            -86_399,
            -1,
            0,
            1,
            86_399,
            86_400,
            1_795_478_399,
            1_795_478_400,
            1_795_564_799,
            1_795_564_800,
            1_795_564_801,
        ];
        let spec = ClvSpec {
            method: Method::Discounted,
            transactions: "t".into(),
            customers: "c".into(),
            as_of: "2026-11-24".into(),
            discount_rate: 0.1,
            horizon_years: None,
            id: "id".into(),
            timestamp: "ts".into(),
            amount: "amount".into(),
            signup: "signup".into(),
            cost: CostSpec::Constant(0.0),
            allow_negative_amounts: false,
            time_unit: None,
            horizon: None,
            penalizer: None,
            holdout_from: None,
            holdout_to: None,
        };
        let clv = spec.resolve("clv", &Vars::default()).unwrap();
        for tz in [None, Some("UTC"), Some("+01:00")] {
            assert_eq!(
                utc_ticks_per_day(&DataType::Timestamp(
                    datafusion::arrow::datatypes::TimeUnit::Second,
                    tz.map(Into::into)
                ))
                .is_some(),
                tz != Some("+01:00")
            );
            let ts = TimestampSecondArray::from(secs.clone()).with_timezone_opt(tz);
            let batch = RecordBatch::try_from_iter(vec![
                ("id", Arc::new(Int64Array::from_iter_values(0..secs.len() as i64)) as _),
                ("ts", Arc::new(ts) as _),
                ("amount", Arc::new(Float64Array::from(vec![1.0; secs.len()])) as _),
            ])
            .unwrap();
            let ctx = SessionContext::new();
            let df = ctx.read_batch(batch).unwrap();
            let want = df
                .clone()
                .select(vec![
                    column("id"),
                    cast_expr(column("ts"), DataType::Date32).alias("day"),
                ])
                .and_then(|d| d.filter(col("day").lt_eq(clv.as_of_lit())))
                .unwrap()
                .collect()
                .await
                .unwrap();
            let got = clv.transactions(df).unwrap().collect().await.unwrap();
            let rows = |b: &[RecordBatch], id: usize, day: usize| -> Vec<(i64, i32)> {
                b.iter()
                    .flat_map(|b| {
                        let ids = b
                            .column(id)
                            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                            .clone();
                        let days = b.column(day).as_primitive::<Date32Type>().clone();
                        (0..b.num_rows())
                            .map(move |r| (ids.value(r), days.value(r)))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            };
            assert_eq!(rows(&got, 0, 1), rows(&want, 0, 1), "time zone {tz:?}");
            assert!(got.iter().all(|b| b.column(1).null_count() == 0));
        }
    }
}
