//! `clv:` customer lifetime value, by the classic discounted formula or by
//! the BG/NBD + Gamma-Gamma model.
//!
//! `method: discounted` is one DataFusion plan: each transaction up to
//! `as_of` falls in year `t = floor(days since signup / 365) + 1` of its
//! customer's life and counts `amount / (1+i)^t`; the acquisition cost is
//! subtracted; every customer signed up by `as_of` gets a row.
//!
//! `method: bgnbd` builds the RFM summary with DataFusion (purchases on one
//! calendar day merged), fits BG/NBD on the distinct (frequency, recency, T)
//! triples with their counts and Gamma-Gamma on repeat buyers
//! ([`super::bgnbd_math`]), and scores every customer with a scalar UDF
//! inside the plan. Its `clv` is the expected spend over `horizon`,
//! discounted month by month: Σⱼ (E[Y(tⱼ)] − E[Y(tⱼ₋₁)]) · E[M] / (1+i)^(tⱼ
//! in years), tⱼ the end of month j (365.25/12 days) capped at the horizon.
//! It is a future value and does not subtract the acquisition cost.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Float64Type, Int64Type, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions::math::expr_fn::{floor, power};
use datafusion::functions_aggregate::expr_fn::{count, first_value, max, min, sum};
use datafusion::logical_expr::{
    ColumnarValue, Expr, JoinType, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
    cast as cast_expr, lit, when,
};
use datafusion::prelude::{DataFrame, SessionContext, coalesce, col};
use serde::Deserialize;

use super::bgnbd_math::{self, BgNbdParams, GammaGammaParams, Rfm, Spend};
use super::{Stage, Want, check_column, column, f64_col, name_value_schema, name_value_table, table_schema};
use crate::config::vars::Vars;
use crate::error::{Error, Result};

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
    #[serde(default = "default_id")]
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
fn default_id() -> String {
    "customer_id".into()
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
    pub spec: ClvSpec,
    pub as_of: NaiveDate,
}

impl ClvSpec {
    /// Binds vars and checks the parameters that need no data.
    ///
    /// # Errors
    /// Every problem, each naming the step and key.
    pub fn resolve(mut self, step: &str, vars: &Vars) -> std::result::Result<Clv, Vec<String>> {
        let mut p = Vec::new();
        let as_of = match vars.interpolate(&self.as_of) {
            Ok(s) => {
                self.as_of = s;
                match NaiveDate::parse_from_str(&self.as_of, "%Y-%m-%d") {
                    Ok(d) => Some(d),
                    Err(_) => {
                        p.push(format!(
                            "step \"{step}\": clv.as_of \"{}\" is not a date (YYYY-MM-DD)",
                            self.as_of
                        ));
                        None
                    }
                }
            }
            Err(e) => {
                p.push(format!("step \"{step}\": clv.as_of: {e}"));
                None
            }
        };
        if !(self.discount_rate > -1.0) || !self.discount_rate.is_finite() {
            p.push(format!(
                "step \"{step}\": clv.discount_rate must be a number above -1, got {}",
                self.discount_rate
            ));
        }
        match self.method {
            Method::Discounted => {
                for (key, set) in [
                    ("time_unit", self.time_unit.is_some()),
                    ("horizon", self.horizon.is_some()),
                    ("penalizer", self.penalizer.is_some()),
                ] {
                    if set {
                        p.push(format!("step \"{step}\": clv.{key} applies to method: bgnbd only (use horizon_years with discounted)"));
                    }
                }
                if self.horizon_years == Some(0) {
                    p.push(format!("step \"{step}\": clv.horizon_years must be at least 1"));
                }
            }
            Method::Bgnbd => {
                if self.horizon_years.is_some() {
                    p.push(format!("step \"{step}\": clv.horizon_years applies to method: discounted only (use horizon, in time_unit periods)"));
                }
                if let Some(h) = self.horizon
                    && !(h > 0.0 && h.is_finite())
                {
                    p.push(format!("step \"{step}\": clv.horizon must be positive, got {h}"));
                }
                if let Some(x) = self.penalizer
                    && !(x >= 0.0)
                {
                    p.push(format!("step \"{step}\": clv.penalizer must be >= 0, got {x}"));
                }
            }
        }
        match (as_of, p.is_empty()) {
            (Some(as_of), true) => Ok(Clv { spec: self, as_of }),
            _ => Err(p),
        }
    }
}

impl Clv {
    fn unit(&self) -> TimeUnit {
        self.spec.time_unit.unwrap_or(TimeUnit::Weeks)
    }

    /// The BG/NBD horizon in time units (default one year).
    fn horizon_units(&self) -> f64 {
        self.spec.horizon.unwrap_or(365.0 / self.unit().days())
    }

    fn as_of_days(&self) -> i32 {
        // Days since 1970-01-01; dates in range always fit i32.
        (self.as_of - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32
    }

    fn as_of_lit(&self) -> Expr {
        lit(ScalarValue::Date32(Some(self.as_of_days())))
    }

    /// Transactions up to and including `as_of`: id, day (Date32), amount.
    fn transactions(&self, tx: DataFrame) -> datafusion::error::Result<DataFrame> {
        let s = &self.spec;
        tx.select(vec![
            column(&s.id).alias("__id"),
            cast_expr(column(&s.timestamp), DataType::Date32).alias("__day"),
            f64_col(&s.amount).alias("__amount"),
        ])?
        .filter(col("__day").lt_eq(self.as_of_lit()))
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

    async fn run_discounted(&self, step: &str, ctx: &SessionContext) -> Result<Vec<DataFrame>> {
        let s = &self.spec;
        let fail = |e: datafusion::error::DataFusionError| Error::step(step, e);
        let tx = self
            .transactions(ctx.table(s.transactions.as_str()).await.map_err(fail)?)
            .map_err(fail)?;
        let cost = match &s.cost {
            CostSpec::Constant(c) => lit(*c),
            CostSpec::Column(c) => f64_col(c),
        };
        let customers = ctx
            .table(s.customers.as_str())
            .await
            .map_err(fail)?
            .select(vec![
                column(&s.id).alias("__cid"),
                cast_expr(column(&s.signup), DataType::Date32).alias("__signup"),
                cost.alias("__cost"),
            ])
            .and_then(|d| d.filter(col("__signup").lt_eq(self.as_of_lit())))
            .map_err(fail)?;
        let days = |e: Expr| cast_expr(e, DataType::Int64);
        // Year of life, counted from the signup day in 365-day years; a
        // transaction dated before its signup counts in year 1.
        let year = datafusion::functions::core::expr_fn::greatest(vec![
            floor(
                cast_expr(
                    days(cast_expr(col("__day"), DataType::Int32)) - days(cast_expr(col("__signup"), DataType::Int32)),
                    DataType::Float64,
                ) / lit(365.0),
            ) + lit(1.0),
            lit(1.0),
        ]);
        let mut joined = tx
            .join(customers.clone(), JoinType::Inner, &["__id"], &["__cid"], None)
            .map_err(fail)?
            .select(vec![col("__id"), col("__amount"), year.alias("__year")])
            .map_err(fail)?;
        if let Some(h) = s.horizon_years {
            joined = joined.filter(col("__year").lt_eq(lit(f64::from(h)))).map_err(fail)?;
        }
        let disc = joined
            .aggregate(
                vec![col("__id")],
                vec![
                    sum(col("__amount") * power(lit(1.0 + s.discount_rate), lit(0.0) - col("__year"))).alias("__disc"),
                ],
            )
            .map_err(fail)?;
        let out = customers
            .join(disc, JoinType::Left, &["__cid"], &["__id"], None)
            .map_err(fail)?
            .select(vec![
                col("__cid").alias(s.id.as_str()),
                (coalesce(vec![col("__disc"), lit(0.0)]) - col("__cost")).alias("clv"),
            ])
            .map_err(fail)?;
        let model = name_value_table(
            ctx,
            "name",
            &[
                ("discount_rate".into(), s.discount_rate),
                ("horizon_years".into(), s.horizon_years.map_or(f64::NAN, f64::from)),
            ],
        )?;
        Ok(vec![out, model])
    }

    /// Per customer: frequency, recency, t, monetary_value (in time units).
    fn rfm(&self, tx: DataFrame) -> datafusion::error::Result<DataFrame> {
        let unit = self.unit().days();
        let as_of = f64::from(self.as_of_days());
        let daily = self
            .transactions(tx)?
            .aggregate(
                vec![col("__id"), col("__day")],
                vec![sum(col("__amount")).alias("__spend")],
            )?
            .select(vec![
                col("__id"),
                cast_expr(cast_expr(col("__day"), DataType::Int32), DataType::Float64).alias("__d"),
                col("__spend"),
            ])?;
        daily
            .aggregate(
                vec![col("__id")],
                vec![
                    min(col("__d")).alias("__first"),
                    max(col("__d")).alias("__last"),
                    count(lit(1)).alias("__n"),
                    sum(col("__spend")).alias("__total"),
                    first_value(col("__spend"), vec![col("__d").sort(true, false)]).alias("__first_spend"),
                ],
            )?
            .select(vec![
                col("__id").alias(self.spec.id.as_str()),
                cast_expr(col("__n") - lit(1i64), DataType::Float64).alias("frequency"),
                ((col("__last") - col("__first")) / lit(unit)).alias("recency"),
                ((lit(as_of) - col("__first")) / lit(unit)).alias("t"),
                when(
                    col("__n").gt(lit(1i64)),
                    (col("__total") - col("__first_spend")) / cast_expr(col("__n") - lit(1i64), DataType::Float64),
                )
                .otherwise(lit(0.0))?
                .alias("monetary_value"),
            ])
    }

    async fn run_bgnbd(&self, step: &str, ctx: &SessionContext) -> Result<Vec<DataFrame>> {
        let s = &self.spec;
        let fail = |e: datafusion::error::DataFusionError| Error::step(step, e);
        let tx = ctx.table(s.transactions.as_str()).await.map_err(fail)?;
        // One row per customer, kept in memory: the model fits on it twice
        // and scores it once.
        let rfm = self.rfm(tx).map_err(fail)?.cache().await.map_err(fail)?;
        // Customers whose first purchase is on as_of (t = 0) carry no
        // information about the process (their likelihood is 1): they are
        // scored but not fitted on.
        let triples = rfm
            .clone()
            .filter(col("t").gt(lit(0.0)))
            .map_err(fail)?
            .aggregate(
                vec![col("frequency"), col("recency"), col("t")],
                vec![count(lit(1)).alias("n")],
            )
            .and_then(|d| {
                d.sort(vec![
                    col("frequency").sort(true, false),
                    col("recency").sort(true, false),
                    col("t").sort(true, false),
                ])
            })
            .map_err(fail)?
            .collect()
            .await
            .map_err(fail)?;
        let mut data = Vec::new();
        for b in &triples {
            let (f, r, t) = (
                b.column(0).as_primitive::<Float64Type>(),
                b.column(1).as_primitive::<Float64Type>(),
                b.column(2).as_primitive::<Float64Type>(),
            );
            let n = b.column(3).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                data.push(Rfm {
                    frequency: f.value(i),
                    recency: r.value(i),
                    t: t.value(i),
                    weight: n.value(i) as f64,
                });
            }
        }
        let customers: f64 = data.iter().map(|d| d.weight).sum();
        if data.is_empty() {
            return Err(Error::step(
                step,
                format!(
                    "no transactions in \"{}\" up to {}: nothing to fit",
                    s.transactions, s.as_of
                ),
            ));
        }
        let penalizer = s.penalizer.unwrap_or(0.0);
        let bg = bgnbd_math::fit_bgnbd(&data, penalizer).map_err(|e| Error::step(step, format!("BG/NBD fit: {e}")))?;
        tracing::info!(
            step,
            r = bg.params.r,
            alpha = bg.params.alpha,
            a = bg.params.a,
            b = bg.params.b,
            log_likelihood = bg.log_likelihood,
            iterations = bg.iterations,
            converged = bg.converged,
            triples = data.len(),
            customers,
            "BG/NBD fitted"
        );
        if !bg.converged {
            tracing::warn!(step, "BG/NBD fit did not converge; parameters are the best found");
        }
        let spends_batches = rfm
            .clone()
            .filter(col("frequency").gt(lit(0.0)))
            .and_then(|d| {
                d.aggregate(
                    vec![col("frequency"), col("monetary_value")],
                    vec![count(lit(1)).alias("n")],
                )
            })
            .and_then(|d| {
                d.sort(vec![
                    col("frequency").sort(true, false),
                    col("monetary_value").sort(true, false),
                ])
            })
            .map_err(fail)?
            .collect()
            .await
            .map_err(fail)?;
        let mut spends = Vec::new();
        for b in &spends_batches {
            let (f, m) = (
                b.column(0).as_primitive::<Float64Type>(),
                b.column(1).as_primitive::<Float64Type>(),
            );
            let n = b.column(2).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                spends.push(Spend {
                    frequency: f.value(i),
                    monetary_value: m.value(i),
                    weight: n.value(i) as f64,
                });
            }
        }
        if spends.iter().any(|sp| sp.monetary_value <= 0.0) {
            let n: f64 = spends
                .iter()
                .filter(|sp| sp.monetary_value <= 0.0)
                .map(|sp| sp.weight)
                .sum();
            return Err(Error::step(
                step,
                format!("{n} repeat buyers have a mean repeat spend <= 0; the Gamma-Gamma model needs positive spend"),
            ));
        }
        let gg = bgnbd_math::fit_gamma_gamma(&spends, penalizer)
            .map_err(|e| Error::step(step, format!("Gamma-Gamma fit: {e}")))?;
        tracing::info!(
            step,
            p = gg.params.p,
            q = gg.params.q,
            v = gg.params.v,
            log_likelihood = gg.log_likelihood,
            iterations = gg.iterations,
            converged = gg.converged,
            "Gamma-Gamma fitted"
        );

        let scorer = ScalarUDF::from(BgNbdScore::new(ScoreModel {
            bg: bg.params.clone(),
            gg: gg.params.clone(),
            horizon_days: self.horizon_units() * self.unit().days(),
            unit_days: self.unit().days(),
            discount_rate: s.discount_rate,
        }));
        let base = [s.id.as_str(), "frequency", "recency", "t", "monetary_value"];
        let mut first: Vec<Expr> = base.iter().map(|c| col(*c)).collect();
        first.push(
            scorer
                .call(vec![col("frequency"), col("recency"), col("t"), col("monetary_value")])
                .alias("__score"),
        );
        let mut out: Vec<Expr> = base.iter().map(|c| col(*c)).collect();
        for f in SCORE_FIELDS {
            out.push(get_field(col("__score"), f).alias(f));
        }
        let scored = rfm.select(first).and_then(|d| d.select(out)).map_err(fail)?;
        let (p, se) = (&bg.params, &bg.std_errors);
        let (g, gse) = (&gg.params, &gg.std_errors);
        let rows = vec![
            ("r".to_string(), p.r),
            ("alpha".into(), p.alpha),
            ("a".into(), p.a),
            ("b".into(), p.b),
            ("r_se".into(), se.r),
            ("alpha_se".into(), se.alpha),
            ("a_se".into(), se.a),
            ("b_se".into(), se.b),
            ("bgnbd_log_likelihood".into(), bg.log_likelihood),
            ("bgnbd_iterations".into(), bg.iterations as f64),
            ("bgnbd_converged".into(), if bg.converged { 1.0 } else { 0.0 }),
            ("p".into(), g.p),
            ("q".into(), g.q),
            ("v".into(), g.v),
            ("p_se".into(), gse.p),
            ("q_se".into(), gse.q),
            ("v_se".into(), gse.v),
            ("gamma_gamma_log_likelihood".into(), gg.log_likelihood),
            ("gamma_gamma_iterations".into(), gg.iterations as f64),
            ("gamma_gamma_converged".into(), if gg.converged { 1.0 } else { 0.0 }),
            ("customers".into(), customers),
            ("distinct_triples".into(), data.len() as f64),
            ("repeat_buyers".into(), spends.iter().map(|sp| sp.weight).sum()),
            ("time_unit_days".into(), self.unit().days()),
            ("horizon".into(), self.horizon_units()),
            ("discount_rate".into(), s.discount_rate),
        ];
        Ok(vec![scored, name_value_table(ctx, "name", &rows)?])
    }
}

const SCORE_FIELDS: [&str; 4] = ["p_alive", "expected_purchases", "expected_avg_spend", "clv"];

impl Stage for Clv {
    fn inputs(&self) -> Vec<String> {
        match self.spec.method {
            Method::Discounted => vec![self.spec.transactions.clone(), self.spec.customers.clone()],
            Method::Bgnbd => vec![self.spec.transactions.clone()],
        }
    }

    fn extra_suffixes(&self) -> &'static [&'static str] {
        &["_model"]
    }

    async fn schemas(&self, step: &str, ctx: &SessionContext) -> std::result::Result<Vec<SchemaRef>, Vec<String>> {
        let s = &self.spec;
        let tx = table_schema(step, ctx, &s.transactions).await.map_err(|e| vec![e])?;
        let mut p: Vec<String> = Vec::new();
        p.extend(check_column(step, &s.transactions, &tx, &s.id, Want::Key));
        p.extend(check_column(step, &s.transactions, &tx, &s.timestamp, Want::Temporal));
        p.extend(check_column(step, &s.transactions, &tx, &s.amount, Want::Number));
        let id_type = tx
            .field_with_name(&s.id)
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Int64);
        let out = match s.method {
            Method::Discounted => {
                let cu = table_schema(step, ctx, &s.customers).await.map_err(|e| vec![e])?;
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
            Method::Bgnbd => {
                let mut fields = vec![Field::new(&s.id, id_type, true)];
                for f in ["frequency", "recency", "t", "monetary_value"]
                    .iter()
                    .chain(SCORE_FIELDS.iter())
                {
                    fields.push(Field::new(*f, DataType::Float64, true));
                }
                Schema::new(fields)
            }
        };
        if !p.is_empty() {
            return Err(p);
        }
        Ok(vec![Arc::new(out), name_value_schema("name")])
    }

    async fn run(&self, step: &str, ctx: &SessionContext) -> Result<Vec<DataFrame>> {
        self.check_amounts(step, ctx).await?;
        match self.spec.method {
            Method::Discounted => self.run_discounted(step, ctx).await,
            Method::Bgnbd => self.run_bgnbd(step, ctx).await,
        }
    }
}

/// Everything the scoring UDF needs.
#[derive(Debug, Clone)]
pub struct ScoreModel {
    pub bg: BgNbdParams,
    pub gg: GammaGammaParams,
    pub horizon_days: f64,
    pub unit_days: f64,
    pub discount_rate: f64,
}

impl ScoreModel {
    fn key(&self) -> [u64; 10] {
        [
            self.bg.r,
            self.bg.alpha,
            self.bg.a,
            self.bg.b,
            self.gg.p,
            self.gg.q,
            self.gg.v,
            self.horizon_days,
            self.unit_days,
            self.discount_rate,
        ]
        .map(f64::to_bits)
    }

    /// p_alive, expected purchases over the horizon, expected average spend,
    /// and the discounted expected spend (see the module docs).
    pub fn score(&self, x: f64, t_x: f64, t: f64, m: f64) -> [f64; 4] {
        // p_alive is the same for every horizon: E[Y(h)] = p_alive · E[Y(h) | alive].
        let p_alive = bgnbd_math::p_alive(&self.bg, x, t_x, t);
        let month = 365.25 / 12.0;
        let if_alive = |days: f64| bgnbd_math::expected_purchases_if_alive(&self.bg, days / self.unit_days, x, t_x, t);
        let expected = p_alive * if_alive(self.horizon_days);
        let spend = bgnbd_math::expected_avg_spend(&self.gg, x, m);
        let steps = (self.horizon_days / month).ceil().max(1.0) as usize;
        let mut clv = 0.0;
        let mut prev = 0.0;
        for j in 1..=steps {
            let t_days = (j as f64 * month).min(self.horizon_days);
            let e = if j == steps {
                expected
            } else {
                p_alive * if_alive(t_days)
            };
            clv += (e - prev) * spend / (1.0 + self.discount_rate).powf(t_days / 365.25);
            prev = e;
        }
        [p_alive, expected, spend, clv]
    }
}

/// The scalar UDF that applies a fitted BG/NBD + Gamma-Gamma model.
#[derive(Debug)]
struct BgNbdScore {
    signature: Signature,
    model: ScoreModel,
}

impl BgNbdScore {
    fn new(model: ScoreModel) -> Self {
        BgNbdScore {
            signature: Signature::exact(vec![DataType::Float64; 4], Volatility::Immutable),
            model,
        }
    }

    fn fields() -> Fields {
        Fields::from(
            SCORE_FIELDS
                .iter()
                .map(|f| Field::new(*f, DataType::Float64, true))
                .collect::<Vec<_>>(),
        )
    }
}

impl PartialEq for BgNbdScore {
    fn eq(&self, other: &Self) -> bool {
        self.model.key() == other.model.key()
    }
}

impl Eq for BgNbdScore {}

impl Hash for BgNbdScore {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.model.key().hash(state);
    }
}

impl ScalarUDFImpl for BgNbdScore {
    fn name(&self) -> &str {
        "crmflow_bgnbd_score"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Struct(Self::fields()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let cols: Vec<&Float64Array> = arrays.iter().map(|a| a.as_primitive::<Float64Type>()).collect();
        let n = args.number_rows;
        let mut out: [Vec<Option<f64>>; 4] = std::array::from_fn(|_| Vec::with_capacity(n));
        for i in 0..n {
            if cols.iter().any(|c| c.is_null(i)) {
                out.iter_mut().for_each(|o| o.push(None));
                continue;
            }
            let v = self
                .model
                .score(cols[0].value(i), cols[1].value(i), cols[2].value(i), cols[3].value(i));
            for (o, x) in out.iter_mut().zip(v) {
                o.push(Some(x));
            }
        }
        let children: Vec<ArrayRef> = out
            .into_iter()
            .map(|v| Arc::new(Float64Array::from(v)) as ArrayRef)
            .collect();
        let s = StructArray::try_new(Self::fields(), children, None)?;
        Ok(ColumnarValue::Array(Arc::new(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(discount_rate: f64) -> ScoreModel {
        ScoreModel {
            bg: BgNbdParams {
                r: 0.243,
                alpha: 4.414,
                a: 0.793,
                b: 2.426,
            },
            gg: GammaGammaParams {
                p: 6.25,
                q: 3.74,
                v: 15.45,
            },
            horizon_days: 365.0,
            unit_days: 7.0,
            discount_rate,
        }
    }

    #[test]
    fn scores_follow_the_documented_convention() {
        for (x, t_x, t) in [
            (0.0, 0.0, 30.0),
            (2.0, 10.0, 40.0),
            (30.0, 50.0, 52.0),
            (400.0, 2000.0, 2100.0),
        ] {
            let m = model(0.1);
            let [p_alive, expected, spend, clv] = m.score(x, t_x, t, 20.0);
            assert_eq!(p_alive, bgnbd_math::p_alive(&m.bg, x, t_x, t));
            let direct = bgnbd_math::expected_purchases(&m.bg, 365.0 / 7.0, x, t_x, t);
            assert!(
                (expected - direct).abs() <= 1e-12 * direct.abs().max(1e-300),
                "{expected} vs {direct}"
            );
            assert_eq!(spend, bgnbd_math::expected_avg_spend(&m.gg, x, 20.0));
            // Discounting at 10% over one year lies between the undiscounted
            // value and that value discounted for the whole year.
            assert!(
                clv <= expected * spend && clv >= expected * spend / 1.1,
                "{clv} {expected} {spend}"
            );
            // Without discounting, the monthly increments add up to E[Y] · E[M].
            let [_, e0, s0, clv0] = model(0.0).score(x, t_x, t, 20.0);
            assert!(
                (clv0 - e0 * s0).abs() <= 1e-12 * (e0 * s0).max(1e-300),
                "{clv0} vs {}",
                e0 * s0
            );
        }
    }
}
