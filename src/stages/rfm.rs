//! `rfm:` recency / frequency / monetary scores and named segments, in
//! DataFusion window functions (nothing is collected: every output is a
//! plan).
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

use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::JoinType;
use datafusion::functions::core::expr_fn::coalesce;
use datafusion::functions::string::expr_fn::concat;
use datafusion::functions_aggregate::expr_fn::{avg, count, sum};
use datafusion::functions_window::expr_fn::rank;
use datafusion::logical_expr::{Expr, ExprFunctionExt, cast, lit, when};
use datafusion::prelude::{DataFrame, col};
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
        // The plans themselves, built on the planning engine's empty tables.
        let outputs = self
            .run(step, engine)
            .await
            .map_err(|e| vec![Problem::step(step, e.render())])?;
        Ok(outputs
            .iter()
            .map(|df| Arc::new(df.schema().as_arrow().clone()))
            .collect())
    }

    async fn run(&self, step: &str, engine: &Engine) -> Result<Vec<DataFrame>> {
        let fail = |e: datafusion::error::DataFusionError| Error::step(step, e);
        let input = engine.context().table(self.spec.input.as_str()).await.map_err(fail)?;
        let scored = score(input, &self.spec, &self.rules).map_err(fail)?;
        let profile = profile(engine, step, scored.clone(), &self.spec, &self.rules)?;
        Ok(vec![scored, profile])
    }
}

/// The input rows plus the scores and the segment, as a plan.
///
/// # Errors
/// DataFusion's, if the plan cannot be built.
pub fn score(input: DataFrame, s: &RfmSpec, rules: &[Rule]) -> datafusion::error::Result<DataFrame> {
    let names: Vec<String> = input.schema().fields().iter().map(|f| f.name().clone()).collect();
    // n, as a one-row table on the build side of a cross join.
    let n = input.clone().aggregate(vec![], vec![count(lit(1)).alias("__n")])?;
    // Worst first: the most days since the last purchase, the fewest
    // purchases, the least spent; nulls before everything.
    let orders = [(&s.recency, false), (&s.frequency, true), (&s.monetary, true)];
    let mut ranked: Vec<Expr> = names.iter().map(|c| column(c)).collect();
    for (i, (c, ascending)) in orders.iter().enumerate() {
        ranked.push(
            rank()
                .order_by(vec![column(c).sort(*ascending, true)])
                .build()?
                .alias(format!("__rank{i}")),
        );
    }
    let ranked = input.select(ranked)?;
    let joined = n.join_on(ranked, JoinType::Inner, vec![])?;
    let mut scores: Vec<Expr> = names.iter().map(|c| column(c)).collect();
    for (i, name) in ["r_score", "f_score", "m_score"].iter().enumerate() {
        let r = cast(col(format!("__rank{i}")), DataType::Int64);
        let q = lit(1i64) + (lit(5i64) * (r - lit(1i64))) / col("__n");
        scores.push(cast(q, DataType::Int32).alias(*name));
    }
    let with_scores = joined.select(scores)?;
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
