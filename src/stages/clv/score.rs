//! Scoring a fitted purchase model (BG/NBD, Pareto/NBD or MBG/NBD) with
//! Gamma-Gamma spend inside the plan: the stateless scalar functions
//! `crmflow_bgnbd_score`, `crmflow_pareto_nbd_score` and
//! `crmflow_mbgnbd_score`, registered by name on every engine, with the
//! fitted parameters passed as literal arguments so that a plan calling one
//! serializes:
//!
//! `crmflow_<model>_score(p1, p2, p3, p4, p, q, v, horizon_days, unit_days,
//! discount_rate, frequency, recency, t, monetary_value)` → struct
//! `{p_alive, expected_purchases, expected_avg_spend, clv}`, with (p1..p4)
//! = (r, α, a, b) for BG/NBD and MBG/NBD and (r, α, s, β) for Pareto/NBD.

use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Float64Type};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};

use crate::stages::btyd::{self, BgNbdParams, GammaGammaParams, ParetoNbdParams, mbgnbd, pareto_nbd};

/// The fields of the score struct, in order.
pub const FIELDS: [&str; 4] = ["p_alive", "expected_purchases", "expected_avg_spend", "clv"];

/// The BG/NBD function's name in the engine's registry.
pub const NAME: &str = "crmflow_bgnbd_score";

/// Parameters before the four per-customer columns.
const PARAMS: usize = 10;

/// Which purchase model a score function evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    BgNbd,
    ParetoNbd,
    MbgNbd,
}

impl Kind {
    /// The registered function's name.
    pub fn function_name(self) -> &'static str {
        match self {
            Kind::BgNbd => NAME,
            Kind::ParetoNbd => "crmflow_pareto_nbd_score",
            Kind::MbgNbd => "crmflow_mbgnbd_score",
        }
    }
}

/// A fitted purchase model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Purchase {
    BgNbd(BgNbdParams),
    ParetoNbd(ParetoNbdParams),
    MbgNbd(BgNbdParams),
}

impl Purchase {
    fn kind(&self) -> Kind {
        match self {
            Purchase::BgNbd(_) => Kind::BgNbd,
            Purchase::ParetoNbd(_) => Kind::ParetoNbd,
            Purchase::MbgNbd(_) => Kind::MbgNbd,
        }
    }

    fn params(&self) -> [f64; 4] {
        match self {
            Purchase::BgNbd(p) | Purchase::MbgNbd(p) => [p.r, p.alpha, p.a, p.b],
            Purchase::ParetoNbd(p) => [p.r, p.alpha, p.s, p.beta],
        }
    }

    fn from_params(kind: Kind, v: &[f64]) -> Purchase {
        let bg = BgNbdParams {
            r: v[0],
            alpha: v[1],
            a: v[2],
            b: v[3],
        };
        match kind {
            Kind::BgNbd => Purchase::BgNbd(bg),
            Kind::MbgNbd => Purchase::MbgNbd(bg),
            Kind::ParetoNbd => Purchase::ParetoNbd(ParetoNbdParams {
                r: v[0],
                alpha: v[1],
                s: v[2],
                beta: v[3],
            }),
        }
    }

    /// P(alive | x, t_x, T).
    pub fn p_alive(&self, x: f64, t_x: f64, t: f64) -> f64 {
        match self {
            Purchase::BgNbd(p) => btyd::p_alive(p, x, t_x, t),
            Purchase::ParetoNbd(p) => pareto_nbd::pareto_nbd_p_alive(p, x, t_x, t),
            Purchase::MbgNbd(p) => mbgnbd::mbgnbd_p_alive(p, x, t_x, t),
        }
    }

    /// E[Y(horizon)] of a customer alive at T (horizon in time units).
    pub fn if_alive(&self, horizon: f64, x: f64, t_x: f64, t: f64) -> f64 {
        match self {
            Purchase::BgNbd(p) => btyd::expected_purchases_if_alive(p, horizon, x, t_x, t),
            Purchase::ParetoNbd(p) => pareto_nbd::pareto_nbd_expected_purchases_if_alive(p, horizon, x, t_x, t),
            Purchase::MbgNbd(p) => mbgnbd::mbgnbd_expected_purchases_if_alive(p, horizon, x, t_x, t),
        }
    }
}

/// Everything scoring needs besides the customer's RFM values.
#[derive(Debug, Clone)]
pub struct ScoreModel {
    pub purchase: Purchase,
    pub gg: GammaGammaParams,
    pub horizon_days: f64,
    pub unit_days: f64,
    pub discount_rate: f64,
}

impl ScoreModel {
    fn params(&self) -> [f64; PARAMS] {
        let b = self.purchase.params();
        [
            b[0],
            b[1],
            b[2],
            b[3],
            self.gg.p,
            self.gg.q,
            self.gg.v,
            self.horizon_days,
            self.unit_days,
            self.discount_rate,
        ]
    }

    fn from_params(kind: Kind, v: &[f64; PARAMS]) -> ScoreModel {
        ScoreModel {
            purchase: Purchase::from_params(kind, &v[..4]),
            gg: GammaGammaParams {
                p: v[4],
                q: v[5],
                v: v[6],
            },
            horizon_days: v[7],
            unit_days: v[8],
            discount_rate: v[9],
        }
    }

    /// The call of the registered function for one customer's columns.
    pub fn expr(&self, frequency: Expr, recency: Expr, t: Expr, monetary_value: Expr) -> Expr {
        let mut args: Vec<Expr> = self.params().iter().map(|v| lit(*v)).collect();
        args.extend([frequency, recency, t, monetary_value]);
        udf(self.purchase.kind()).call(args)
    }

    /// p_alive, expected purchases over the horizon, expected average spend,
    /// and the discounted expected spend (see the parent module).
    pub fn score(&self, x: f64, t_x: f64, t: f64, m: f64) -> [f64; 4] {
        let schedule = self.schedule();
        let mut part = vec![0.0; 1 + schedule.horizons.len()];
        self.purchases(&schedule, x, t_x, t, &mut part);
        self.finish(&schedule, x, m, &part)
    }

    /// The months of the horizon: each month's end in time units (the last
    /// one the horizon itself) and its discount factor, the same for every
    /// customer.
    fn schedule(&self) -> Schedule {
        let month = 365.25 / 12.0;
        let steps = (self.horizon_days / month).ceil().max(1.0) as usize;
        let horizons = (1..=steps)
            .map(|j| {
                let days = if j == steps {
                    self.horizon_days
                } else {
                    (j as f64 * month).min(self.horizon_days)
                };
                days / self.unit_days
            })
            .collect();
        let discounts = (1..=steps)
            .map(|j| {
                let t_days = (j as f64 * month).min(self.horizon_days);
                (1.0 + self.discount_rate).powf(t_days / 365.25)
            })
            .collect();
        Schedule { horizons, discounts }
    }

    /// The purchase-model part of a score, which depends on (x, t_x, T)
    /// only, into `part`: p_alive, then E[Y(t_j)] at the end of each month
    /// j of the schedule.
    fn purchases(&self, schedule: &Schedule, x: f64, t_x: f64, t: f64, part: &mut [f64]) {
        // p_alive is the same for every horizon: E[Y(h)] = p_alive · E[Y(h) | alive].
        let p_alive = self.purchase.p_alive(x, t_x, t);
        let (head, e) = part.split_at_mut(1);
        head[0] = p_alive;
        if let Purchase::BgNbd(p) = &self.purchase {
            // Every month's E[Y | alive] in one pass over the series
            // (bit-identical to one call per month).
            btyd::bgnbd_multi::expected_purchases_if_alive_into(p, &schedule.horizons, x, t_x, t, e);
            for v in e.iter_mut() {
                *v *= p_alive;
            }
            return;
        }
        for (v, h) in e.iter_mut().zip(&schedule.horizons) {
            *v = p_alive * self.purchase.if_alive(*h, x, t_x, t);
        }
    }

    /// The score from its purchase-model part and the Gamma-Gamma spend.
    fn finish(&self, schedule: &Schedule, x: f64, m: f64, part: &[f64]) -> [f64; 4] {
        let (p_alive, e) = (part[0], &part[1..]);
        let spend = btyd::expected_avg_spend(&self.gg, x, m);
        let mut clv = 0.0;
        let mut prev = 0.0;
        for (&e, d) in e.iter().zip(&schedule.discounts) {
            clv += (e - prev) * spend / d;
            prev = e;
        }
        [p_alive, e.last().copied().unwrap_or(0.0), spend, clv]
    }
}

/// The months of a score's horizon (see [`ScoreModel::schedule`]).
struct Schedule {
    horizons: Vec<f64>,
    discounts: Vec<f64>,
}

/// The registered function of a purchase model.
pub fn udf(kind: Kind) -> ScalarUDF {
    ScalarUDF::from(ModelScore {
        kind,
        signature: Signature::exact(vec![DataType::Float64; PARAMS + 4], Volatility::Immutable),
        if_alive: Mutex::new(IfAlive::default()),
    })
}

/// The implementation behind [`udf`]. Its values depend on its arguments
/// only; `if_alive` memoizes a part of them across batches.
#[derive(Debug)]
struct ModelScore {
    kind: Kind,
    signature: Signature,
    if_alive: Mutex<IfAlive>,
}

// Two functions are the same function when they score the same model kind;
// the memo is not part of what they are.
impl PartialEq for ModelScore {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.signature == other.signature
    }
}

impl Eq for ModelScore {}

impl std::hash::Hash for ModelScore {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        self.signature.hash(state);
    }
}

/// Distinct (x, T) kept in [`IfAlive`] at most; past it, new ones are
/// computed for their batch and not kept (at 12 months, 25 MB).
const IF_ALIVE_LIMIT: usize = 1 << 18;

/// The BG/NBD E[Y(t_j) | alive] at every month end of a schedule, by
/// customer (x, T) (it does not depend on t_x): many customers share them,
/// across batches (at 1M customers in weeks, a few tens of thousands of
/// pairs), and they are the series, most of scoring's work. Valid only for
/// the parameters `params`; cleared when a batch brings others.
#[derive(Debug, Default)]
struct IfAlive {
    params: [u64; PARAMS],
    index: HashMap<[u64; 2], usize>,
    values: Vec<f64>,
}

type HashMap<K, V> = datafusion::common::HashMap<K, V>;

fn fields() -> Fields {
    Fields::from(
        FIELDS
            .iter()
            .map(|f| Field::new(*f, DataType::Float64, true))
            .collect::<Vec<_>>(),
    )
}

impl ScalarUDFImpl for ModelScore {
    fn name(&self) -> &str {
        self.kind.function_name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Struct(fields()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let cols: Vec<&Float64Array> = arrays.iter().map(|a| a.as_primitive::<Float64Type>()).collect();
        let n = args.number_rows;
        let out = match self.one_bgnbd_model(&cols, n) {
            Some(bits) => self.score_bgnbd(&cols, n, bits),
            None => score_rows(self.kind, &cols, n),
        };
        let children: Vec<ArrayRef> = out
            .into_iter()
            .map(|v| Arc::new(Float64Array::from(v)) as ArrayRef)
            .collect();
        let s = StructArray::try_new(fields(), children, None)?;
        Ok(ColumnarValue::Array(Arc::new(s)))
    }
}

/// Whether a row has a null argument.
fn has_null(cols: &[&Float64Array], i: usize) -> bool {
    cols.iter().any(|c| c.is_null(i))
}

/// The model of row `i` (its parameter arguments), as bits.
fn model_bits(cols: &[&Float64Array], i: usize) -> [u64; PARAMS] {
    std::array::from_fn(|j| cols[j].value(i).to_bits())
}

impl ModelScore {
    /// The parameters, when this is BG/NBD and every scored row of the
    /// batch has the same (as when they are literals, always).
    fn one_bgnbd_model(&self, cols: &[&Float64Array], n: usize) -> Option<[u64; PARAMS]> {
        if self.kind != Kind::BgNbd {
            return None;
        }
        let mut rows = (0..n).filter(|i| !has_null(cols, *i));
        let first = model_bits(cols, rows.next()?);
        rows.all(|i| model_bits(cols, i) == first).then_some(first)
    }

    /// A BG/NBD batch of one model: each distinct (x, T) of valid histories
    /// looks its month values up in the memo or computes them (outside the
    /// lock), then every row its own p_alive and score. The same values,
    /// to the bit, as [`score_rows`].
    fn score_bgnbd(&self, cols: &[&Float64Array], n: usize, bits: [u64; PARAMS]) -> [Vec<Option<f64>>; 4] {
        let m = ScoreModel::from_params(self.kind, &bits.map(f64::from_bits));
        let schedule = m.schedule();
        let Purchase::BgNbd(p) = m.purchase else {
            unreachable!("one_bgnbd_model checked the kind");
        };
        let width = schedule.horizons.len();
        let history = |i: usize| {
            (
                cols[PARAMS].value(i),
                cols[PARAMS + 1].value(i),
                cols[PARAMS + 2].value(i),
            )
        };
        // The batch's distinct (x, T), each at an offset of `values`; a
        // row's offset, or None for a null row or an invalid history.
        let mut index: HashMap<[u64; 2], usize> = HashMap::new();
        let mut keys: Vec<([u64; 2], usize)> = Vec::new();
        let mut at: Vec<Option<usize>> = Vec::with_capacity(n);
        for i in 0..n {
            let (x, t_x, t) = history(i);
            if has_null(cols, i) || !btyd::bgnbd::rfm_valid(x, t_x, t) {
                at.push(None);
                continue;
            }
            let key = [x.to_bits(), t.to_bits()];
            let next = keys.len() * width;
            let o = *index.entry(key).or_insert_with(|| {
                keys.push((key, i));
                next
            });
            at.push(Some(o));
        }
        let mut values = vec![0.0; keys.len() * width];
        let mut missing = Vec::new();
        {
            let mut memo = self.if_alive.lock().unwrap_or_else(|e| e.into_inner());
            if memo.params != bits {
                *memo = IfAlive {
                    params: bits,
                    ..IfAlive::default()
                };
            }
            for (k, (key, i)) in keys.iter().enumerate() {
                match memo.index.get(key) {
                    Some(&o) => values[k * width..(k + 1) * width].copy_from_slice(&memo.values[o..o + width]),
                    None => missing.push((k, *i)),
                }
            }
        }
        for &(k, i) in &missing {
            let (x, t_x, t) = history(i);
            let e = &mut values[k * width..(k + 1) * width];
            btyd::bgnbd_multi::expected_purchases_if_alive_into(&p, &schedule.horizons, x, t_x, t, e);
        }
        if !missing.is_empty() {
            let mut guard = self.if_alive.lock().unwrap_or_else(|e| e.into_inner());
            let memo = &mut *guard;
            if memo.params == bits {
                for &(k, _) in &missing {
                    if memo.index.len() >= IF_ALIVE_LIMIT {
                        break;
                    }
                    let o = memo.values.len();
                    if let datafusion::common::hash_map::Entry::Vacant(e) = memo.index.entry(keys[k].0) {
                        e.insert(o);
                        memo.values.extend_from_slice(&values[k * width..(k + 1) * width]);
                    }
                }
            }
        }
        let mut out: [Vec<Option<f64>>; 4] = std::array::from_fn(|_| Vec::with_capacity(n));
        let mut part = vec![0.0; 1 + width];
        for (i, row_at) in at.iter().enumerate() {
            if has_null(cols, i) {
                out.iter_mut().for_each(|o| o.push(None));
                continue;
            }
            let (x, t_x, t) = history(i);
            match *row_at {
                Some(o) => {
                    // As ScoreModel::purchases: p_alive, then p_alive times each month's value.
                    let p_alive = m.purchase.p_alive(x, t_x, t);
                    part[0] = p_alive;
                    for (v, e) in part[1..].iter_mut().zip(&values[o..o + width]) {
                        *v = e * p_alive;
                    }
                }
                None => m.purchases(&schedule, x, t_x, t, &mut part),
            }
            let v = m.finish(&schedule, x, cols[PARAMS + 3].value(i), &part);
            for (o, x) in out.iter_mut().zip(v) {
                o.push(Some(x));
            }
        }
        out
    }
}

/// Any batch, row by row: the model built once and again only where a
/// row's parameters differ; customers with the same (x, t_x, T) in the
/// batch share the purchase-model part.
fn score_rows(kind: Kind, cols: &[&Float64Array], n: usize) -> [Vec<Option<f64>>; 4] {
    let mut out: [Vec<Option<f64>>; 4] = std::array::from_fn(|_| Vec::with_capacity(n));
    let mut model: Option<([u64; PARAMS], ScoreModel, Schedule)> = None;
    let mut seen: HashMap<[u64; 3], usize> = HashMap::new();
    let mut parts: Vec<f64> = Vec::new();
    for i in 0..n {
        if has_null(cols, i) {
            out.iter_mut().for_each(|o| o.push(None));
            continue;
        }
        let bits = model_bits(cols, i);
        if model.as_ref().is_none_or(|(p, _, _)| *p != bits) {
            let m = ScoreModel::from_params(kind, &bits.map(f64::from_bits));
            let schedule = m.schedule();
            model = Some((bits, m, schedule));
            seen.clear();
            parts.clear();
        }
        let Some((_, m, schedule)) = model.as_ref() else {
            continue;
        };
        let (x, t_x, t) = (
            cols[PARAMS].value(i),
            cols[PARAMS + 1].value(i),
            cols[PARAMS + 2].value(i),
        );
        let width = 1 + schedule.horizons.len();
        let at = *seen
            .entry([x.to_bits(), t_x.to_bits(), t.to_bits()])
            .or_insert_with(|| {
                let at = parts.len();
                parts.resize(at + width, 0.0);
                m.purchases(schedule, x, t_x, t, &mut parts[at..]);
                at
            });
        let v = m.finish(schedule, x, cols[PARAMS + 3].value(i), &parts[at..at + width]);
        for (o, x) in out.iter_mut().zip(v) {
            o.push(Some(x));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::datatypes::Schema;
    use datafusion::functions::core::expr_fn::get_field;
    use datafusion::prelude::{SessionContext, col};

    use super::*;

    fn model(discount_rate: f64, horizon_days: f64) -> ScoreModel {
        ScoreModel {
            purchase: Purchase::BgNbd(BgNbdParams {
                r: 0.243,
                alpha: 4.414,
                a: 0.793,
                b: 2.426,
            }),
            gg: GammaGammaParams {
                p: 6.25,
                q: 3.74,
                v: 15.45,
            },
            horizon_days,
            unit_days: 7.0,
            discount_rate,
        }
    }

    fn bg(m: &ScoreModel) -> BgNbdParams {
        match m.purchase {
            Purchase::BgNbd(p) => p,
            _ => unreachable!(),
        }
    }

    const CUSTOMERS: [(f64, f64, f64); 4] = [
        (0.0, 0.0, 30.0),
        (2.0, 10.0, 40.0),
        (30.0, 50.0, 52.0),
        (400.0, 2000.0, 2100.0),
    ];

    /// The month-by-month discounted expected spend, computed directly from
    /// its definition: month ends at j·365.25/12 days capped at the horizon,
    /// the full E[Y(t)] of the paper at each (not p_alive times the
    /// conditional value), each month's increment discounted at
    /// (1+i)^(t/365.25).
    fn discounted_by_definition(m: &ScoreModel, x: f64, t_x: f64, t: f64, spend: f64) -> f64 {
        let mut ends = Vec::new();
        let mut j = 1.0;
        loop {
            let end = j * 365.25 / 12.0;
            if end >= m.horizon_days {
                ends.push(m.horizon_days);
                break;
            }
            ends.push(end);
            j += 1.0;
        }
        let mut prev = 0.0;
        let mut total = 0.0;
        for end in ends {
            let e = btyd::expected_purchases(&bg(m), end / m.unit_days, x, t_x, t);
            total += (e - prev) * spend * (1.0 + m.discount_rate).powf(-end / 365.25);
            prev = e;
        }
        total
    }

    #[test]
    fn clv_is_discounted_month_by_month() {
        for horizon in [365.0, 100.0, 730.0] {
            for (x, t_x, t) in CUSTOMERS {
                let m = model(0.1, horizon);
                let [p_alive, expected, spend, clv] = m.score(x, t_x, t, 20.0);
                assert_eq!(p_alive, btyd::p_alive(&bg(&m), x, t_x, t));
                let direct = btyd::expected_purchases(&bg(&m), horizon / 7.0, x, t_x, t);
                assert!(
                    (expected - direct).abs() <= 1e-12 * direct.abs().max(1e-300),
                    "{expected} vs {direct}"
                );
                assert_eq!(spend, btyd::expected_avg_spend(&m.gg, x, 20.0));
                let want = discounted_by_definition(&m, x, t_x, t, spend);
                assert!(
                    (clv - want).abs() <= 1e-9 * want.abs().max(1e-300),
                    "horizon {horizon}, customer {x} {t_x} {t}: {clv} vs {want}"
                );
            }
        }
    }

    /// The four score fields of `m` over a table of the four RFM columns.
    fn score_fields(df: datafusion::prelude::DataFrame, m: &ScoreModel) -> datafusion::prelude::DataFrame {
        df.select(vec![
            m.expr(col("frequency"), col("recency"), col("t"), col("monetary_value"))
                .alias("s"),
        ])
        .unwrap()
        .select(
            FIELDS
                .iter()
                .map(|f| get_field(col("s"), *f).alias(*f))
                .collect::<Vec<Expr>>(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_registered_function_takes_parameters_as_arguments() {
        let ctx = SessionContext::new();
        ctx.register_udf(udf(Kind::BgNbd));
        let schema = Arc::new(Schema::new(
            ["frequency", "recency", "t", "monetary_value"]
                .map(|n| Field::new(n, DataType::Float64, true))
                .to_vec(),
        ));
        // Monetary value 23 for every customer.
        let column_j = |j: usize| -> ArrayRef {
            let v: Vec<f64> = CUSTOMERS.iter().map(|c| [c.0, c.1, c.2, 23.0][j]).collect();
            Arc::new(Float64Array::from(v))
        };
        let batch = RecordBatch::try_new(schema, (0..4).map(column_j).collect()).unwrap();
        let m = model(0.1, 365.0);
        let df = score_fields(ctx.read_batch(batch).unwrap(), &m);
        // The plan names the function and carries the parameters as literals.
        let shown = df.logical_plan().display_indent().to_string();
        assert!(
            shown.contains("crmflow_bgnbd_score(Float64(0.243), Float64(4.414)"),
            "{shown}"
        );
        let out = df.collect().await.unwrap();
        let got: Vec<Vec<f64>> = (0..4)
            .map(|j| out[0].column(j).as_primitive::<Float64Type>().values().to_vec())
            .collect();
        for (i, (x, t_x, t)) in CUSTOMERS.iter().enumerate() {
            let want = m.score(*x, *t_x, *t, 23.0);
            for j in 0..4 {
                assert_eq!(got[j][i], want[j], "customer {i}, field {}", FIELDS[j]);
            }
        }
    }

    /// Customers sharing (x, T) with different t_x, within a batch and
    /// across batches, an invalid t_x beside a valid (x, T), and nulls: the
    /// memo by (x, T) gives every row its own score, bit for bit.
    #[tokio::test]
    async fn customers_sharing_x_and_t_keep_their_own_scores() {
        use datafusion::datasource::MemTable;
        let schema = Arc::new(Schema::new(
            ["frequency", "recency", "t", "monetary_value"]
                .map(|n| Field::new(n, DataType::Float64, true))
                .to_vec(),
        ));
        // (frequency, recency, t, monetary_value)
        type Row = (Option<f64>, f64, f64, f64);
        let rows: [&[Row]; 3] = [
            &[
                (Some(2.0), 10.0, 40.0, 23.0),
                (Some(2.0), 30.0, 40.0, 17.5),
                (Some(0.0), 0.0, 40.0, 0.0),
                (Some(2.0), 10.0, 40.0, 23.0),
                (None, 1.0, 40.0, 9.0),
            ],
            &[
                (Some(2.0), 39.0, 40.0, 23.0),
                (Some(2.0), -1.0, 40.0, 23.0),
                (Some(30.0), 50.0, 52.0, 41.0),
                (Some(0.0), 0.0, 40.0, 0.0),
            ],
            &[(Some(30.0), 12.0, 52.0, 8.0), (Some(2.0), 5.0, 41.0, 23.0)],
        ];
        let batches: Vec<RecordBatch> = rows
            .iter()
            .map(|b| {
                let col = |f: &dyn Fn(&Row) -> Option<f64>| -> ArrayRef {
                    Arc::new(Float64Array::from(b.iter().map(f).collect::<Vec<_>>()))
                };
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        col(&|r| r.0),
                        col(&|r| Some(r.1)),
                        col(&|r| Some(r.2)),
                        col(&|r| Some(r.3)),
                    ],
                )
                .unwrap()
            })
            .collect();
        let ctx = SessionContext::new();
        let table = MemTable::try_new(schema.clone(), vec![batches]).unwrap();
        ctx.register_table("h", Arc::new(table)).unwrap();
        let m = model(0.1, 365.0);
        let df = score_fields(ctx.table("h").await.unwrap(), &m);
        let out = df.collect().await.unwrap();
        assert_eq!(out.len(), 3, "one output batch per input batch");
        let mut compared = 0;
        for (batch, want_rows) in out.iter().zip(rows) {
            for (i, (x, t_x, t, mv)) in want_rows.iter().enumerate() {
                let got: Vec<Option<f64>> = (0..4)
                    .map(|j| {
                        let c = batch.column(j).as_primitive::<Float64Type>();
                        c.is_valid(i).then(|| c.value(i))
                    })
                    .collect();
                let Some(x) = x else {
                    assert_eq!(got, vec![None; 4], "a null frequency scores null");
                    continue;
                };
                let want = m.score(*x, *t_x, *t, *mv);
                for j in 0..4 {
                    let g = got[j].unwrap();
                    assert_eq!(
                        g.to_bits(),
                        want[j].to_bits(),
                        "({x}, {t_x}, {t}) {}: {g} vs {}",
                        FIELDS[j],
                        want[j]
                    );
                }
                compared += 1;
            }
        }
        assert_eq!(compared, 10);
        // The invalid history scores NaN although its (x, T) is memoized.
        let c = out[1].column(1).as_primitive::<Float64Type>();
        assert!(c.value(1).is_nan(), "{}", c.value(1));
    }
}
