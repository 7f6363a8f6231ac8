//! `rfm:` recency / frequency / monetary scores and named segments. The
//! scores are rank quintiles, computed from four order statistics per
//! column (one pass over its three columns, see [`score`]) as `CASE`
//! expressions, so no sort of the table; every output is a plan.
//!
//! Each score is `1 + ⌊5·(rank − 1)/n⌋`: `n` the number of input rows, `rank`
//! the SQL `RANK()` of the row's value ordered from worst to best (recency
//! descending — the most days since the last purchase first — frequency and
//! monetary ascending; nulls first, as the worst). Tied values share the
//! lowest rank of their group, so equal values always get the same score and
//! the scores depend on the values only, never on row order or ids.
//! `rfm_score` is the three digits (`"555"`), `fm = ⌊(f + m)/2⌋`, and
//! `rfm_segment` the name of the first rule of the map that the scores
//! match ([`DEFAULT_MAP`], or `segments:` in the YAML; every one of the 125
//! score combinations must match a rule).
//!
//! Outputs: `<step>` (the input rows + `r_score`, `f_score`, `m_score`
//! (Int32), `rfm_score`, `rfm_segment`) and `<step>_profile` (one row per
//! rule, in map order, empty segments included: rfm_segment, rule, size,
//! share, the mean scores, the mean of the three input columns and the
//! segment's share of the total monetary value).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, RecordBatch, StringArray, downcast_primitive};
use datafusion::arrow::datatypes::{ArrowNativeTypeOp, ArrowPrimitiveType, DataType, Field, Schema, SchemaRef};
use datafusion::common::{JoinType, ScalarValue};
use datafusion::functions::core::expr_fn::coalesce;
use datafusion::functions::string::expr_fn::concat;
use datafusion::functions_aggregate::expr_fn::{avg, count, sum};
use datafusion::logical_expr::{Expr, cast, lit, when};
use datafusion::prelude::{DataFrame, col};
use futures::StreamExt;
use serde::Deserialize;

use super::{Resolver, Stage, Want, check_column, table_schema};
use crate::engine::Engine;
use crate::engine::expr::{column, f64_col};
use crate::error::{Error, Problem, Result};
use crate::vars::Vars;

/// `rfm:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RfmSpec {
    pub input: String,
    /// Days (or any unit) since the last purchase: smaller is better.
    #[serde(default = "default_recency")]
    pub recency: String,
    #[serde(default = "default_frequency")]
    pub frequency: String,
    #[serde(default = "default_monetary")]
    pub monetary: String,
    /// The segment map, first match wins (default: [`DEFAULT_MAP`]).
    pub segments: Option<Vec<RuleSpec>>,
}

fn default_recency() -> String {
    "recency_days".into()
}
fn default_frequency() -> String {
    "frequency".into()
}
fn default_monetary() -> String {
    "monetary".into()
}

/// One rule of the map as written: a name and score ranges (absent = any).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    pub r: Option<RangeSpec>,
    pub f: Option<RangeSpec>,
    pub m: Option<RangeSpec>,
    pub fm: Option<RangeSpec>,
}

/// `5` or `"4-5"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a score (5) or a range of scores (\"4-5\")")]
pub enum RangeSpec {
    One(i64),
    Text(String),
}

/// The score columns a rule can test.
const SCORES: [&str; 4] = ["r", "f", "m", "fm"];

/// A resolved rule: the name and, per score of [`SCORES`], an inclusive
/// range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub ranges: [Option<(i32, i32)>; 4],
}

impl Rule {
    /// Whether scores (r, f, m) match.
    pub fn matches(&self, r: i32, f: i32, m: i32) -> bool {
        let v = [r, f, m, (f + m) / 2];
        self.ranges
            .iter()
            .zip(v)
            .all(|(range, x)| range.is_none_or(|(lo, hi)| lo <= x && x <= hi))
    }

    /// `r 4-5, fm 4-5`, or `any`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = SCORES
            .iter()
            .zip(&self.ranges)
            .filter_map(|(k, r)| {
                r.map(|(lo, hi)| {
                    if lo == hi {
                        format!("{k} {lo}")
                    } else {
                        format!("{k} {lo}-{hi}")
                    }
                })
            })
            .collect();
        if parts.is_empty() {
            "any".into()
        } else {
            parts.join(", ")
        }
    }
}

/// The default map, on R and FM (first match wins; it covers every cell of
/// the 5 × 5 grid): the R × F grid widely used for RFM segments, with FM in
/// place of F and Lost split from Hibernating.
pub const DEFAULT_MAP: &[(&str, (i32, i32), (i32, i32))] = &[
    ("Champions", (5, 5), (4, 5)),
    ("Loyal Customers", (3, 4), (4, 5)),
    ("Potential Loyalist", (4, 5), (2, 3)),
    ("New Customers", (5, 5), (1, 1)),
    ("Promising", (4, 4), (1, 1)),
    ("Need Attention", (3, 3), (3, 3)),
    ("About to Sleep", (3, 3), (1, 2)),
    ("Can't Lose Them", (1, 2), (5, 5)),
    ("At Risk", (1, 2), (3, 4)),
    ("Lost", (1, 1), (1, 1)),
    ("Hibernating", (1, 2), (1, 2)),
];

/// [`DEFAULT_MAP`] as rules.
pub fn default_rules() -> Vec<Rule> {
    DEFAULT_MAP
        .iter()
        .map(|(name, r, fm)| Rule {
            name: (*name).to_string(),
            ranges: [Some(*r), None, None, Some(*fm)],
        })
        .collect()
}

/// The output columns the stage adds.
const ADDED: [&str; 5] = ["r_score", "f_score", "m_score", "rfm_score", "rfm_segment"];

/// A resolved `rfm:` step.
#[derive(Debug, Clone)]
pub struct Rfm {
    pub spec: RfmSpec,
    pub rules: Vec<Rule>,
}

fn parse_range(v: &RangeSpec) -> Option<(i32, i32)> {
    let (lo, hi) = match v {
        RangeSpec::One(x) => (*x, *x),
        RangeSpec::Text(t) => match t.trim().split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let x = t.trim().parse().ok()?;
                (x, x)
            }
        },
    };
    (1 <= lo && lo <= hi && hi <= 5).then_some((lo as i32, hi as i32))
}

fn shown(v: &RangeSpec) -> String {
    match v {
        RangeSpec::One(x) => x.to_string(),
        RangeSpec::Text(t) => format!("\"{t}\""),
    }
}

impl RfmSpec {
    /// Binds vars and checks the map: names, ranges, and that every score
    /// combination matches a rule.
    ///
    /// # Errors
    /// Every problem, each about the step and naming the key.
    pub fn resolve(mut self, step: &str, vars: &Vars) -> std::result::Result<Rfm, Vec<Problem>> {
        let mut r = Resolver::new(step, vars);
        r.one("rfm.input", &mut self.input);
        r.one("rfm.recency", &mut self.recency);
        r.one("rfm.frequency", &mut self.frequency);
        r.one("rfm.monetary", &mut self.monetary);
        let rules = match &mut self.segments {
            None => default_rules(),
            Some(specs) => {
                if specs.is_empty() {
                    r.problem("rfm.segments is empty".into());
                }
                let mut rules = Vec::new();
                let mut seen = std::collections::BTreeSet::new();
                for (i, s) in specs.iter_mut().enumerate() {
                    r.one(&format!("rfm.segments[{i}].name"), &mut s.name);
                    if s.name.trim().is_empty() {
                        r.problem(format!("rfm.segments[{i}].name is empty"));
                    } else if !seen.insert(s.name.clone()) {
                        r.problem(format!("rfm.segments names \"{}\" twice", s.name));
                    }
                    let mut ranges = [None; 4];
                    for (j, v) in [&s.r, &s.f, &s.m, &s.fm].into_iter().enumerate() {
                        if let Some(v) = v {
                            match parse_range(v) {
                                Some(range) => ranges[j] = Some(range),
                                None => r.problem(format!(
                                    "rfm.segments[{i}] (\"{}\").{}: {} is not a score range: write a score from 1 to 5 or a range like \"4-5\"",
                                    s.name,
                                    SCORES[j],
                                    shown(v)
                                )),
                            }
                        }
                    }
                    rules.push(Rule {
                        name: s.name.clone(),
                        ranges,
                    });
                }
                if r.problems.is_empty()
                    && let Some((a, b, c)) = uncovered(&rules)
                {
                    r.problem(format!(
                        "rfm.segments: no rule matches r={a} f={b} m={c}; end the map with a catch-all rule (a name without scores)"
                    ));
                }
                rules
            }
        };
        r.finish(Rfm { spec: self, rules })
    }
}

/// The first (r, f, m) no rule matches.
pub fn uncovered(rules: &[Rule]) -> Option<(i32, i32, i32)> {
    for a in 1..=5 {
        for b in 1..=5 {
            for c in 1..=5 {
                if !rules.iter().any(|rule| rule.matches(a, b, c)) {
                    return Some((a, b, c));
                }
            }
        }
    }
    None
}

impl Stage for Rfm {
    fn inputs(&self) -> Vec<String> {
        vec![self.spec.input.clone()]
    }

    fn extra_suffixes(&self) -> &'static [&'static str] {
        &["_profile"]
    }

    async fn schemas(&self, step: &str, engine: &Engine) -> std::result::Result<Vec<SchemaRef>, Vec<Problem>> {
        let s = &self.spec;
        let schema = table_schema(step, engine, &s.input).await.map_err(|e| vec![e])?;
        let mut p: Vec<Problem> = Vec::new();
        for c in [&s.recency, &s.frequency, &s.monetary] {
            p.extend(check_column(step, &s.input, &schema, c, Want::Number));
        }
        for reserved in ADDED {
            if schema.field_with_name(reserved).is_ok() {
                p.push(Problem::step(
                    step,
                    format!("input \"{}\" already has a column \"{reserved}\"", s.input),
                ));
            }
        }
        if !p.is_empty() {
            return Err(p);
        }
        // The plans themselves, with stand-in cuts: their schemas do not
        // depend on the cuts, and finding the cuts reads every row.
        let outputs = self
            .outputs(step, engine, false)
            .await
            .map_err(|e| vec![Problem::step(step, e.render())])?;
        Ok(outputs
            .iter()
            .map(|df| Arc::new(df.schema().as_arrow().clone()))
            .collect())
    }

    async fn run(&self, step: &str, engine: &Engine) -> Result<Vec<DataFrame>> {
        self.outputs(step, engine, true).await
    }
}

impl Rfm {
    /// The scored table and the profile, as plans; with the cuts found on
    /// the input (one pass over it) or, for their schemas only, stand-ins.
    async fn outputs(&self, step: &str, engine: &Engine, find_cuts: bool) -> Result<Vec<DataFrame>> {
        let fail = |e: datafusion::error::DataFusionError| Error::step(step, e);
        let input = engine.context().table(self.spec.input.as_str()).await.map_err(fail)?;
        let cuts = if find_cuts {
            cuts(input.clone(), &self.spec).await.map_err(fail)?
        } else {
            [EVERY; 3]
        };
        let scored = scored(input, &self.spec, &cuts, &self.rules).map_err(fail)?;
        let profile = profile(engine, step, scored.clone(), &self.spec, &self.rules)?;
        Ok(vec![scored, profile])
    }
}

/// The four cuts of each of the three columns (recency, frequency,
/// monetary), from one pass over the input.
///
/// A row's score is `1 + ⌊5·W/n⌋`, `W = rank − 1` the number of rows strictly
/// worse than it, so the score passes `k + 1` exactly when `5·W ≥ k·n`, that
/// is `W ≥ c = ⌈k·n/5⌉`. A null has `W = 0` (score 1). A value with `z`
/// nulls before it has `W ≥ c` when `c ≤ z`, or else when it is strictly
/// better than the `(c − z)`-th worst value. Four such order statistics per
/// column, found by selection over the column's values, make each score a
/// `CASE` on the value ([`scored`]): the ranks' scores, bit for bit, without
/// sorting the table. The pass brings in the three columns (about 8 bytes a
/// value each, and one column's values again while selecting).
///
/// # Errors
/// DataFusion's, if the plan cannot be built or the pass fails.
pub async fn cuts(input: DataFrame, s: &RfmSpec) -> datafusion::error::Result<[[Cut; 4]; 3]> {
    let columns = worse_is_larger(s);
    let values = input.clone().select(
        columns
            .iter()
            .enumerate()
            .map(|(i, (c, _))| column(c).alias(format!("__v{i}")))
            .collect::<Vec<Expr>>(),
    )?;
    let mut stream = values.execute_stream().await?;
    let mut n = 0u64;
    let mut arrays: [Vec<ArrayRef>; 3] = Default::default();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        n += batch.num_rows() as u64;
        for (i, a) in arrays.iter_mut().enumerate() {
            a.push(batch.column(i).clone());
        }
    }
    drop(stream);
    let mut out: [[Cut; 4]; 3] = [EVERY; 3];
    for (i, (c, worse_is_larger)) in columns.iter().enumerate() {
        let data_type = input.schema().field_with_unqualified_name(c)?.data_type().clone();
        out[i] = column_cuts(std::mem::take(&mut arrays[i]), n, *worse_is_larger, &data_type)?;
    }
    Ok(out)
}

/// The three score columns and whether worse is larger in each: for
/// recency (the most days since the last purchase), not for frequency and
/// monetary.
fn worse_is_larger(s: &RfmSpec) -> [(&String, bool); 3] {
    [(&s.recency, true), (&s.frequency, false), (&s.monetary, false)]
}

/// Cuts that score every non-null value 5 (a stand-in when only the
/// schema matters).
const EVERY: [Cut; 4] = [Cut::Every, Cut::Every, Cut::Every, Cut::Every];

/// The input rows plus the scores (from `cuts`, see [`cuts`]) and the
/// segment, as a plan.
///
/// # Errors
/// DataFusion's, if the plan cannot be built.
pub fn scored(
    input: DataFrame,
    s: &RfmSpec,
    cuts: &[[Cut; 4]; 3],
    rules: &[Rule],
) -> datafusion::error::Result<DataFrame> {
    let names: Vec<String> = input.schema().fields().iter().map(|f| f.name().clone()).collect();
    let mut out: Vec<Expr> = names.iter().map(|c| column(c)).collect();
    for (((c, worse_is_larger), name), cuts) in worse_is_larger(s)
        .iter()
        .zip(["r_score", "f_score", "m_score"])
        .zip(cuts)
    {
        out.push(score_expr(column(c), cuts, *worse_is_larger)?.alias(name));
    }
    let with_scores = input.select(out)?;
    let digits = concat(
        ["r_score", "f_score", "m_score"]
            .iter()
            .map(|c| cast(col(*c), DataType::Utf8))
            .collect(),
    );
    let mut out: Vec<Expr> = names.iter().map(|c| column(c)).collect();
    out.extend(["r_score", "f_score", "m_score"].iter().map(|c| col(*c)));
    out.push(digits.alias("rfm_score"));
    out.push(segment_expr(rules)?.alias("rfm_segment"));
    with_scores.select(out)
}

/// Which non-null values of a column score above `k`, for k = 1..4.
#[derive(Debug, Clone, PartialEq)]
pub enum Cut {
    /// Every one (the nulls before them are enough).
    Every,
    /// Those strictly better than this value.
    Beyond(ScalarValue),
}

/// The four cuts of a column of `n` rows, from its values (in batches).
fn column_cuts(
    arrays: Vec<ArrayRef>,
    n: u64,
    worse_is_larger: bool,
    data_type: &DataType,
) -> datafusion::error::Result<[Cut; 4]> {
    macro_rules! typed {
        ($t:ty) => {
            cuts_of::<$t>(arrays, n, worse_is_larger, data_type)
        };
    }
    downcast_primitive! {
        data_type => (typed),
        t => Err(datafusion::error::DataFusionError::Plan(format!("rfm cannot score a column of type {t}"))),
    }
}

fn cuts_of<T: ArrowPrimitiveType>(
    arrays: Vec<ArrayRef>,
    n: u64,
    worse_is_larger: bool,
    data_type: &DataType,
) -> datafusion::error::Result<[Cut; 4]> {
    let mut v: Vec<T::Native> = Vec::with_capacity(arrays.iter().map(|a| a.len() - a.null_count()).sum());
    // -0.0 as 0.0: they are equal values, and the engine's comparisons
    // treat them so.
    let zero = |x: T::Native| if x.is_zero() { T::Native::ZERO } else { x };
    for a in arrays {
        let a = a.as_primitive::<T>();
        if a.null_count() == 0 {
            v.extend(a.values().iter().map(|&x| zero(x)));
        } else {
            v.extend(a.iter().flatten().map(zero));
        }
    }
    // Worst first, in the order of the engine's comparisons: for floats
    // the total order (NaN after every number, -NaN before) but for zeros.
    let worst_first = |a: &T::Native, b: &T::Native| {
        if worse_is_larger { b.compare(*a) } else { a.compare(*b) }
    };
    let nulls = n - v.len() as u64;
    let mut cuts: [Cut; 4] = std::array::from_fn(|_| Cut::Every);
    // The indexes asked never fall: after selecting index i, v[i..] holds
    // the values of sorted places i.., so the next selection works there.
    let mut done = 0usize;
    for (k, cut) in (1..=4u64).zip(cuts.iter_mut()) {
        let c = (k * n).div_ceil(5);
        *cut = if c <= nulls {
            Cut::Every
        } else {
            // c ≤ ⌈4n/5⌉ ≤ n = nulls + v.len(): always a value.
            let i = (c - nulls - 1) as usize;
            let (_, nth, _) = v[done..].select_nth_unstable_by(i - done, worst_first);
            let nth = *nth;
            done = i;
            Cut::Beyond(ScalarValue::new_primitive::<T>(Some(nth), data_type)?)
        };
    }
    Ok(cuts)
}

/// `CASE WHEN <above 4> THEN 5 ... WHEN <above 1> THEN 2 ELSE 1 END`: the
/// cuts rise with k, so the first that holds is the score.
fn score_expr(value: Expr, cuts: &[Cut; 4], worse_is_larger: bool) -> datafusion::error::Result<Expr> {
    let mut case: Option<datafusion::logical_expr::conditional_expressions::CaseBuilder> = None;
    // k from 4 down: the first cut a value passes gives its score.
    for (k, cut) in cuts.iter().enumerate().rev() {
        let cond = match cut {
            Cut::Every => value.clone().is_not_null(),
            Cut::Beyond(t) if worse_is_larger => value.clone().lt(lit(t.clone())),
            Cut::Beyond(t) => value.clone().gt(lit(t.clone())),
        };
        let then = lit(k as i32 + 2);
        case = Some(match case {
            None => when(cond, then),
            Some(mut c) => c.when(cond, then),
        });
    }
    match case {
        None => Ok(lit(1i32)),
        Some(mut c) => c.otherwise(lit(1i32)),
    }
}

/// `CASE WHEN <rule 1> THEN 'name 1' ... END` over the score columns.
fn segment_expr(rules: &[Rule]) -> datafusion::error::Result<Expr> {
    let value = |j: usize| match j {
        0 => col("r_score"),
        1 => col("f_score"),
        2 => col("m_score"),
        _ => (col("f_score") + col("m_score")) / lit(2i32),
    };
    let cond = |rule: &Rule| {
        rule.ranges
            .iter()
            .enumerate()
            .filter_map(|(j, r)| r.map(|(lo, hi)| value(j).between(lit(lo), lit(hi))))
            .reduce(Expr::and)
            .unwrap_or_else(|| lit(true))
    };
    let mut rest = rules.iter();
    let Some(first) = rest.next() else {
        return Ok(lit(datafusion::common::ScalarValue::Utf8(None)));
    };
    let mut case = when(cond(first), lit(first.name.clone()));
    for rule in rest {
        case = case.when(cond(rule), lit(rule.name.clone()));
    }
    case.end()
}

/// One row per rule in map order (empty segments included), as a plan over
/// the scored table: an aggregate by segment joined to the map.
fn profile(engine: &Engine, step: &str, scored: DataFrame, s: &RfmSpec, rules: &[Rule]) -> Result<DataFrame> {
    let fail = |e: datafusion::error::DataFusionError| Error::step(step, e);
    let map_schema = Arc::new(Schema::new(vec![
        Field::new("__order", DataType::Int32, false),
        Field::new("rfm_segment", DataType::Utf8, false),
        Field::new("rule", DataType::Utf8, false),
    ]));
    let map = RecordBatch::try_new(
        map_schema,
        vec![
            Arc::new(Int32Array::from_iter_values(0..rules.len() as i32)) as ArrayRef,
            Arc::new(StringArray::from_iter_values(rules.iter().map(|r| r.name.as_str()))),
            Arc::new(StringArray::from_iter_values(rules.iter().map(Rule::describe))),
        ],
    )
    .map_err(|e| Error::step(step, e))?;
    let map = engine.values(&map).map_err(|e| Error::step(step, e))?;
    let means = [
        ("r_score", "mean_r_score"),
        ("f_score", "mean_f_score"),
        ("m_score", "mean_m_score"),
        (s.recency.as_str(), &*format!("mean_{}", s.recency)),
        (s.frequency.as_str(), &*format!("mean_{}", s.frequency)),
        (s.monetary.as_str(), &*format!("mean_{}", s.monetary)),
    ]
    .map(|(c, a)| (c.to_string(), a.to_string()));
    let mut aggs = vec![
        count(lit(1)).alias("__size"),
        sum(f64_col(&s.monetary)).alias("__value"),
    ];
    aggs.extend(means.iter().map(|(c, a)| avg(f64_col(c)).alias(format!("__{a}"))));
    let grouped = scored
        .clone()
        .aggregate(vec![col("rfm_segment").alias("__segment")], aggs)
        .map_err(fail)?;
    let totals = scored
        .aggregate(
            vec![],
            vec![
                count(lit(1)).alias("__total"),
                sum(f64_col(&s.monetary)).alias("__total_value"),
            ],
        )
        .map_err(fail)?;
    let joined = map
        .join(grouped, JoinType::Left, &["rfm_segment"], &["__segment"], None)
        .and_then(|d| totals.join_on(d, JoinType::Inner, vec![]))
        .map_err(fail)?;
    let size = coalesce(vec![col("__size"), lit(0i64)]);
    let mut out = vec![
        col("rfm_segment"),
        col("rule"),
        size.clone().alias("size"),
        when(
            col("__total").gt(lit(0i64)),
            cast(size, DataType::Float64) / cast(col("__total"), DataType::Float64),
        )
        .otherwise(lit(0.0))
        .map_err(fail)?
        .alias("share"),
    ];
    out.extend(means.iter().map(|(_, a)| col(format!("__{a}")).alias(a.as_str())));
    out.push((coalesce(vec![col("__value"), lit(0.0)]) / col("__total_value")).alias(format!("{}_share", s.monetary)));
    joined
        .sort(vec![col("__order").sort(true, false)])
        .and_then(|d| d.select(out))
        .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    use datafusion::arrow::array::{Decimal128Array, Float64Array, Int32Array as I32, Int64Array};
    use datafusion::datasource::MemTable;

    /// Scores by the definition, counting: `1 + ⌊5·W/n⌋`, W the rows
    /// strictly worse (a null is worse than any value and ties other nulls).
    fn by_count<T: Copy>(v: &[Option<T>], cmp: impl Fn(&T, &T) -> Ordering, worse_is_larger: bool) -> Vec<i32> {
        let n = v.len();
        let nulls = v.iter().filter(|x| x.is_none()).count();
        let worse = |b: &T, a: &T| {
            let o = cmp(b, a);
            if worse_is_larger {
                o == Ordering::Greater
            } else {
                o == Ordering::Less
            }
        };
        v.iter()
            .map(|x| match x {
                None => 1,
                Some(a) => {
                    let w = nulls + v.iter().flatten().filter(|b| worse(b, a)).count();
                    1 + (5 * w / n) as i32
                }
            })
            .collect()
    }

    fn zero(x: f64) -> f64 {
        if x == 0.0 { 0.0 } else { x }
    }

    fn int32s(batches: &[RecordBatch], name: &str) -> Vec<i32> {
        batches
            .iter()
            .flat_map(|b| {
                b.column_by_name(name)
                    .unwrap()
                    .as_primitive::<datafusion::arrow::datatypes::Int32Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    /// Three partitions of `n` rows: `r` Float64 with NaN, ±0.0, ±inf and
    /// nulls; `f` Int32 with nulls and negatives; `m` Decimal128 with ties.
    /// With `negative_zero` false, 0.0 in place of -0.0.
    fn table(n: usize, negative_zero: bool) -> (Vec<Option<f64>>, Vec<Option<i32>>, Vec<Option<i128>>, Arc<MemTable>) {
        let z = if negative_zero { -0.0 } else { 0.0 };
        let rs = [
            Some(f64::NAN),
            Some(z),
            Some(0.0),
            Some(1.5),
            Some(-2.0),
            Some(f64::INFINITY),
            Some(-f64::NAN),
            Some(f64::NEG_INFINITY),
            None,
            Some(1.5),
        ];
        let fs = [None, Some(0), Some(1), Some(1), Some(2), Some(5), Some(-3)];
        let ms = [None, Some(0), Some(1050), Some(1050), Some(-25), Some(99_999)];
        let r: Vec<Option<f64>> = (0..n).map(|i| rs[(i * 7 + n) % rs.len()]).collect();
        let f: Vec<Option<i32>> = (0..n).map(|i| fs[(i * 5 + 2 * n) % fs.len()]).collect();
        let m: Vec<Option<i128>> = (0..n).map(|i| ms[(i * 11 + 3 * n) % ms.len()]).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("r", DataType::Float64, true),
            Field::new("f", DataType::Int32, true),
            Field::new("m", DataType::Decimal128(10, 2), true),
        ]));
        let bounds = [0, n / 3, 2 * n / 3, n];
        let parts = bounds
            .windows(2)
            .map(|w| {
                let (a, b) = (w[0], w[1]);
                vec![
                    RecordBatch::try_new(
                        schema.clone(),
                        vec![
                            Arc::new(Int64Array::from_iter_values((a..b).map(|i| i as i64))) as ArrayRef,
                            Arc::new(Float64Array::from(r[a..b].to_vec())),
                            Arc::new(I32::from(f[a..b].to_vec())),
                            Arc::new(
                                Decimal128Array::from(m[a..b].to_vec())
                                    .with_precision_and_scale(10, 2)
                                    .unwrap(),
                            ),
                        ],
                    )
                    .unwrap(),
                ]
            })
            .collect();
        (r, f, m, Arc::new(MemTable::try_new(schema, parts).unwrap()))
    }

    /// Against counting by the definition and against the `RANK()` window
    /// the stage used before, for sizes around the quintile boundaries. The
    /// window's sort puts -0.0 before 0.0, and so could score equal values
    /// apart; the stage ties them, so the window runs on the same rows with
    /// 0.0 in place of -0.0.
    #[tokio::test]
    async fn scores_equal_the_counted_ranks_and_the_rank_window() {
        let engine = Engine::new(&Default::default(), Default::default(), crate::stages::functions()).unwrap();
        let ctx = engine.context();
        let spec = RfmSpec {
            input: "t".into(),
            recency: "r".into(),
            frequency: "f".into(),
            monetary: "m".into(),
            segments: None,
        };
        for n in [0, 1, 2, 3, 4, 5, 6, 7, 9, 11, 24, 37, 200] {
            let (r, f, m, t) = table(n, true);
            let _ = ctx.deregister_table("t");
            ctx.register_table("t", t).unwrap();
            let _ = ctx.deregister_table("u");
            ctx.register_table("u", table(n, false).3).unwrap();
            let t = ctx.table("t").await.unwrap();
            let cuts = cuts(t.clone(), &spec).await.unwrap();
            let out = scored(t, &spec, &cuts, &default_rules())
                .unwrap()
                .sort(vec![col("id").sort(true, false)])
                .unwrap()
                .collect()
                .await
                .unwrap();
            let want = [
                by_count(&r, |a, b| zero(*a).total_cmp(&zero(*b)), true),
                by_count(&f, Ord::cmp, false),
                by_count(&m, Ord::cmp, false),
            ];
            let got = [
                int32s(&out, "r_score"),
                int32s(&out, "f_score"),
                int32s(&out, "m_score"),
            ];
            assert_eq!(got, want, "n = {n}");
            let window = ctx
                .sql(
                    "SELECT CAST(1 + 5 * (CAST(RANK() OVER (ORDER BY r DESC NULLS FIRST) AS BIGINT) - 1) / COUNT(*) OVER () AS INT) AS r_score,
                            CAST(1 + 5 * (CAST(RANK() OVER (ORDER BY f ASC NULLS FIRST) AS BIGINT) - 1) / COUNT(*) OVER () AS INT) AS f_score,
                            CAST(1 + 5 * (CAST(RANK() OVER (ORDER BY m ASC NULLS FIRST) AS BIGINT) - 1) / COUNT(*) OVER () AS INT) AS m_score,
                            id
                     FROM u ORDER BY id",
                )
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let by_window = [
                int32s(&window, "r_score"),
                int32s(&window, "f_score"),
                int32s(&window, "m_score"),
            ];
            assert_eq!(got, by_window, "n = {n}");
        }
    }

    #[test]
    fn cuts_are_the_order_statistics_of_the_worst_first_order() {
        // n = 7 with two nulls: c = ⌈7k/5⌉ = 2, 3, 5, 6; nulls cover c = 2,
        // then the 1st, 3rd and 4th worst of 5 values (worst = smallest).
        let a: ArrayRef = Arc::new(I32::from(vec![
            Some(40),
            None,
            Some(10),
            Some(30),
            None,
            Some(20),
            Some(50),
        ]));
        let cuts = column_cuts(vec![a.clone()], 7, false, &DataType::Int32).unwrap();
        let b = |v: i32| Cut::Beyond(ScalarValue::Int32(Some(v)));
        assert_eq!(cuts, [Cut::Every, b(10), b(30), b(40)]);
        // Worst is largest: the 1st, 3rd and 4th largest.
        let cuts = column_cuts(vec![a], 7, true, &DataType::Int32).unwrap();
        assert_eq!(cuts, [Cut::Every, b(50), b(30), b(20)]);
        // n = 3, one value: c = 1, 2, 2, 3. The nulls cover c = 1 and 2; for
        // c = 3 the worst value itself, which no value is strictly better than.
        let a: ArrayRef = Arc::new(I32::from(vec![None, Some(7), None]));
        let cuts = column_cuts(vec![a], 3, false, &DataType::Int32).unwrap();
        assert_eq!(cuts, [Cut::Every, Cut::Every, Cut::Every, b(7)]);
        // Floats: -0.0 is 0.0; NaN is the best (largest) value, -NaN the worst.
        let a: ArrayRef = Arc::new(Float64Array::from(vec![f64::NAN, -0.0, -f64::NAN, 2.0, 0.0]));
        let cuts = column_cuts(vec![a], 5, false, &DataType::Float64).unwrap();
        let c = |v: f64| v.to_bits();
        let bits: Vec<u64> = cuts
            .iter()
            .map(|cut| match cut {
                Cut::Beyond(ScalarValue::Float64(Some(x))) => x.to_bits(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(bits, [c(-f64::NAN), c(0.0), c(0.0), c(2.0)]);
    }

    fn rules_of(yaml: &str) -> std::result::Result<Rfm, Vec<String>> {
        let spec: RfmSpec = serde_saphyr::from_str(yaml).unwrap();
        spec.resolve("rfm", &Vars::default())
            .map_err(|p| p.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn the_default_map_names_every_cell_of_the_grid_as_documented() {
        let rules = default_rules();
        assert_eq!(uncovered(&rules), None);
        let name = |r: i32, fm: i32| {
            // f = m = fm gives that fm.
            rules.iter().find(|x| x.matches(r, fm, fm)).unwrap().name.clone()
        };
        // The README's table, row by row (r 5 down to 1, fm 1 to 5).
        let want = [
            [
                "New Customers",
                "Potential Loyalist",
                "Potential Loyalist",
                "Champions",
                "Champions",
            ],
            [
                "Promising",
                "Potential Loyalist",
                "Potential Loyalist",
                "Loyal Customers",
                "Loyal Customers",
            ],
            [
                "About to Sleep",
                "About to Sleep",
                "Need Attention",
                "Loyal Customers",
                "Loyal Customers",
            ],
            ["Hibernating", "Hibernating", "At Risk", "At Risk", "Can't Lose Them"],
            ["Lost", "Hibernating", "At Risk", "At Risk", "Can't Lose Them"],
        ];
        for (i, row) in want.iter().enumerate() {
            for (j, w) in row.iter().enumerate() {
                assert_eq!(name(5 - i as i32, j as i32 + 1), *w, "r {} fm {}", 5 - i, j + 1);
            }
        }
        // fm rounds down: f 5, m 4 is fm 4; f 1, m 2 is fm 1.
        assert!(rules[0].matches(5, 5, 4));
        assert_eq!(rules.iter().find(|x| x.matches(1, 1, 2)).unwrap().name, "Lost");
    }

    #[test]
    fn a_map_is_parsed_and_checked_word_for_word() {
        let ok = rules_of("input: f\nsegments:\n  - {name: VIP, r: \"4-5\", m: 5}\n  - {name: Rest}\n").unwrap();
        assert_eq!(ok.rules[0].ranges, [Some((4, 5)), None, Some((5, 5)), None]);
        assert_eq!(ok.rules[0].describe(), "r 4-5, m 5");
        assert_eq!(ok.rules[1].describe(), "any");
        let err = rules_of("input: f\nsegments:\n  - {name: VIP, r: \"4-7\"}\n  - {name: VIP, fm: 0}\n").unwrap_err();
        assert_eq!(
            err,
            vec![
                "step \"rfm\": rfm.segments[0] (\"VIP\").r: \"4-7\" is not a score range: write a score from 1 to 5 or a range like \"4-5\"",
                "step \"rfm\": rfm.segments names \"VIP\" twice",
                "step \"rfm\": rfm.segments[1] (\"VIP\").fm: 0 is not a score range: write a score from 1 to 5 or a range like \"4-5\"",
            ]
        );
        let err = rules_of("input: f\nsegments:\n  - {name: Top, r: 5}\n  - {name: Low, r: \"2-4\"}\n").unwrap_err();
        assert_eq!(
            err,
            vec![
                "step \"rfm\": rfm.segments: no rule matches r=1 f=1 m=1; end the map with a catch-all rule (a name without scores)"
            ]
        );
    }
}
