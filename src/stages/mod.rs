//! The analytics step kinds (`clv`, `segment`, `predict`, `rfm`) behind one trait,
//! dispatched in one place.
//!
//! A stage reads its input tables through DataFusion, brings into memory
//! only what its model must fit on ([`features::collect_features`],
//! optionally a deterministic sample), and returns its outputs as DataFusion
//! plans: a fitted model is applied as an expression (or a stateless scalar
//! function registered by name, with the fitted parameters as literal
//! arguments) inside the plan, so scoring streams and runs wherever the
//! engine runs. Small outputs (models, metrics, profiles) are literal
//! `VALUES` plans.
//!
//! The kinds are listed once, in the [`stage_kinds!`] invocation below:
//! adding a stage kind is its module, with a spec (`XxxSpec`, deserialized,
//! with `resolve`) and a resolved type implementing [`Stage`], plus one line
//! there, which makes its YAML key known and dispatches to it.

pub mod btyd;
pub mod clv;
pub mod day_gaps;
pub mod features;
pub mod group_log;
pub mod kmeans;
pub mod logistic;
pub mod ols;
pub mod predict;
pub mod rfm;
pub mod roc;
pub mod segment;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::prelude::DataFrame;

use crate::engine::Engine;
use crate::error::{Error, Problem, Result};
use crate::vars::Vars;

/// A step kind that fits a model on its inputs and makes tables.
#[allow(async_fn_in_trait)]
pub trait Stage {
    /// The tables it reads.
    fn inputs(&self) -> Vec<String>;

    /// Extra tables it makes beside the step's own, as name suffixes.
    fn extra_suffixes(&self) -> &'static [&'static str];

    /// Checks the input schemas and returns the schemas of the outputs (the
    /// step's own table first, then one per suffix) without reading rows.
    ///
    /// # Errors
    /// Every problem found, each about the step and naming the column.
    async fn schemas(&self, step: &str, engine: &Engine) -> std::result::Result<Vec<SchemaRef>, Vec<Problem>>;

    /// Fits and returns the output tables, in the order of [`Stage::schemas`].
    ///
    /// # Errors
    /// [`Error::Step`] naming the step (and the column, for bad data).
    async fn run(&self, step: &str, engine: &Engine) -> Result<Vec<DataFrame>>;
}

/// Declares the stage kinds: their YAML key, variant, spec and resolved
/// type. Generates [`StageSpec`] (as written), [`StageKind`] (resolved, with
/// [`Stage`] implemented by delegation) and the key list.
macro_rules! stage_kinds {
    ($($key:literal => $variant:ident($spec:ty => $resolved:ty)),+ $(,)?) => {
        /// A stage as written: the value under its YAML key.
        #[derive(Debug)]
        pub enum StageSpec {
            $($variant($spec)),+
        }

        /// A resolved stage.
        #[derive(Debug)]
        pub enum StageKind {
            $($variant($resolved)),+
        }

        impl StageSpec {
            /// The YAML keys of the stage kinds, in declaration order.
            pub const KEYS: &'static [&'static str] = &[$($key),+];

            /// Deserializes the value under stage key `key`.
            ///
            /// # Errors
            /// The deserializer's, or an unknown key.
            pub fn deserialize_kind<'de, D: serde::Deserializer<'de>>(
                key: &str,
                d: D,
            ) -> std::result::Result<StageSpec, D::Error> {
                use serde::Deserialize;
                match key {
                    $($key => <$spec>::deserialize(d).map(StageSpec::$variant),)+
                    other => Err(serde::de::Error::unknown_variant(other, Self::KEYS)),
                }
            }

            /// Binds vars and checks the parameters that need no data.
            ///
            /// # Errors
            /// Every problem, each about the step.
            pub fn resolve(self, step: &str, vars: &Vars) -> std::result::Result<StageKind, Vec<Problem>> {
                match self {
                    $(StageSpec::$variant(s) => s.resolve(step, vars).map(StageKind::$variant),)+
                }
            }
        }

        impl StageKind {
            /// The YAML key of the kind.
            pub fn name(&self) -> &'static str {
                match self {
                    $(StageKind::$variant(_) => $key,)+
                }
            }
        }

        impl Stage for StageKind {
            fn inputs(&self) -> Vec<String> {
                match self {
                    $(StageKind::$variant(s) => s.inputs(),)+
                }
            }

            fn extra_suffixes(&self) -> &'static [&'static str] {
                match self {
                    $(StageKind::$variant(s) => s.extra_suffixes(),)+
                }
            }

            async fn schemas(&self, step: &str, engine: &Engine) -> std::result::Result<Vec<SchemaRef>, Vec<Problem>> {
                match self {
                    $(StageKind::$variant(s) => s.schemas(step, engine).await,)+
                }
            }

            async fn run(&self, step: &str, engine: &Engine) -> Result<Vec<DataFrame>> {
                match self {
                    $(StageKind::$variant(s) => s.run(step, engine).await,)+
                }
            }
        }
    };
}

stage_kinds! {
    "clv" => Clv(clv::ClvSpec => clv::Clv),
    "segment" => Segment(segment::SegmentSpec => segment::Segment),
    "predict" => Predict(predict::PredictSpec => predict::Predict),
    "rfm" => Rfm(rfm::RfmSpec => rfm::Rfm),
}

/// The functions stage plans call, registered by name on every engine
/// (stateless scalars: fitted parameters are literal arguments).
pub fn functions() -> crate::engine::Functions {
    let mut f = clv::functions();
    f.push(features::key_hash_udf());
    // What sinks call while writing (here so that Ballista executors know them).
    f.push(crate::sinks::convert::bi_cast_udf());
    f.push(crate::sinks::layout::hive_value_udf());
    crate::engine::Functions {
        scalar: f,
        aggregate: vec![clv::rfm_days::rfm_days_udaf(), day_gaps::day_gaps_udaf()],
    }
}

/// The default id column of every stage.
pub fn default_id() -> String {
    "customer_id".to_string()
}

/// Resolves a stage's spec: interpolates vars in each of its strings and
/// collects problems about `step`, each naming the key (`segment.input:
/// ...`).
pub struct Resolver<'a> {
    pub step: &'a str,
    pub vars: &'a Vars,
    pub problems: Vec<Problem>,
}

impl<'a> Resolver<'a> {
    /// Starts for `step`.
    pub fn new(step: &'a str, vars: &'a Vars) -> Self {
        Resolver {
            step,
            vars,
            problems: Vec::new(),
        }
    }

    /// Interpolates `value` in place; `key` names it in a problem.
    pub fn one(&mut self, key: &str, value: &mut String) {
        match self.vars.interpolate(value) {
            Ok(v) => *value = v,
            Err(e) => self.problems.push(Problem::step(self.step, format!("{key}: {e}"))),
        }
    }

    /// Interpolates each of `values` in place.
    pub fn all(&mut self, key: &str, values: &mut [String]) {
        for v in values {
            self.one(key, v);
        }
    }

    /// Interpolates a feature list and checks it is not empty and names no
    /// column twice.
    pub fn features(&mut self, key: &str, features: &mut [String]) {
        self.all(key, features);
        if features.is_empty() {
            self.problem(format!("{key} is empty"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in features.iter() {
            if !seen.insert(f) {
                self.problem(format!("{key} lists \"{f}\" twice"));
            }
        }
    }

    /// Records a problem about the step.
    pub fn problem(&mut self, message: String) {
        self.problems.push(Problem::step(self.step, message));
    }

    /// `value` when no problem was found, else every problem.
    ///
    /// # Errors
    /// The problems found.
    pub fn finish<T>(self, value: T) -> std::result::Result<T, Vec<Problem>> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(self.problems)
        }
    }
}

/// The kinds of column a stage can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Number,
    Temporal,
    Date,
    Key,
    Boolean,
}

impl Want {
    fn accepts(self, t: &DataType) -> bool {
        match self {
            Want::Number => t.is_numeric(),
            Want::Temporal => matches!(t, DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64),
            Want::Date => matches!(t, DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _)),
            Want::Key => t.is_integer() || matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View),
            Want::Boolean => matches!(t, DataType::Boolean),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Want::Number => "a number",
            Want::Temporal => "a timestamp or date",
            Want::Date => "a date",
            Want::Key => "an integer or string key",
            Want::Boolean => "a Boolean",
        }
    }
}

/// The schema of a registered table, for stage checks.
///
/// # Errors
/// A problem about the step naming the table.
pub async fn table_schema(step: &str, engine: &Engine, table: &str) -> std::result::Result<SchemaRef, Problem> {
    match engine.context().table_provider(table).await {
        Ok(t) => Ok(t.schema()),
        Err(_) => Err(Problem::step(step, format!("table \"{table}\" is not available"))),
    }
}

/// Checks that `column` exists in `table` with a type `want` accepts.
pub fn check_column(step: &str, table: &str, schema: &Schema, column: &str, want: Want) -> Option<Problem> {
    match schema.field_with_name(column) {
        Err(_) => Some(Problem::step(
            step,
            format!(
                "column \"{column}\" is not in \"{table}\" (columns: {})",
                crate::checks::column_list(schema)
            ),
        )),
        Ok(f) if !want.accepts(f.data_type()) => Some(Problem::step(
            step,
            format!(
                "column \"{column}\" of \"{table}\" is {}, expected {}",
                f.data_type(),
                want.describe()
            ),
        )),
        Ok(_) => None,
    }
}

/// A two-column (name, value) table, the shape of `<step>_model` and
/// `<step>_metrics`, as a literal plan.
///
/// # Errors
/// Only if Arrow rejects the batch (it cannot for these types).
pub fn name_value_table(engine: &Engine, step: &str, key: &str, rows: &[(String, f64)]) -> Result<DataFrame> {
    let schema = name_value_schema(key);
    let names = StringArray::from_iter_values(rows.iter().map(|r| r.0.as_str()));
    let values = Float64Array::from_iter_values(rows.iter().map(|r| r.1));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(names) as ArrayRef, Arc::new(values)])
        .map_err(|e| Error::step(step, e))?;
    engine.values(&batch).map_err(|e| Error::step(step, e))
}

/// The schema of a (name, value) table; `key` is `name` or `metric`.
pub fn name_value_schema(key: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(key, DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
    ]))
}
