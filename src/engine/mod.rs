//! The engine: everything tied to the execution context, behind the small
//! interface the runner, sources, stages and sinks use.
//!
//! [`Engine`] owns the DataFusion [`SessionContext`] (config, runtime,
//! memory limit and spill directory), registers object stores on it
//! ([`Engine::register_store`]), registers crmflow's own functions (given by
//! the caller, so the engine knows nothing of stages), materializes a table
//! that is read more than once ([`Engine::materialize`]) and turns a small
//! in-process table into a literal plan ([`Engine::values`]). Everything a
//! plan calls is stateless and registered by name, with fitted parameters
//! passed as literal arguments, so any plan serializes — the shape a
//! distributed implementation (Apache DataFusion Ballista) needs. Only the
//! local engine exists today.

pub mod dense_agg;
pub mod expr;

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{EmptyRelation, Expr, LogicalPlan, LogicalPlanBuilder, ScalarUDF, lit};
use datafusion::physical_plan::collect_partitioned;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use object_store::ObjectStore;
use serde::Deserialize;

use crate::error::{Cause, Error, Result};
use crate::storage::{self, Location};

/// The engine kinds of `engine.kind`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    #[default]
    Local,
    Ballista,
}

/// The resolved `engine:` block.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub kind: EngineKind,
    pub url: Option<String>,
    /// Default: the number of cores.
    pub target_partitions: Option<usize>,
    /// Bytes; past it DataFusion spills to disk.
    pub memory_limit: Option<u64>,
}

/// An execution context with crmflow's stores and functions.
#[derive(Clone)]
pub struct Engine {
    ctx: SessionContext,
    storage: BTreeMap<String, String>,
    functions: Vec<ScalarUDF>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Storage option values may be secrets: never shown.
        f.debug_struct("Engine")
            .field("storage_options", &self.storage.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A context with DataFusion's defaults plus crmflow's physical rules
/// ([`dense_agg::DenseAggregateRule`], last).
fn context(config: SessionConfig, runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>) -> SessionContext {
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(dense_agg::DenseAggregateRule))
        .build();
    SessionContext::new_with_state(state)
}

impl Engine {
    /// A local engine. `storage` holds object-store options (values may be
    /// secrets); `functions` are registered by name.
    ///
    /// # Errors
    /// [`Error::Engine`] when the runtime cannot be built (e.g. no temp
    /// directory for spilling).
    pub fn new(settings: &Settings, storage: BTreeMap<String, String>, functions: Vec<ScalarUDF>) -> Result<Engine> {
        let mut config = SessionConfig::new()
            .with_information_schema(false)
            .with_create_default_catalog_and_schema(true);
        if let Some(n) = settings.target_partitions {
            config = config.with_target_partitions(n);
        }
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(bytes) = settings.memory_limit {
            runtime = runtime.with_memory_limit(bytes as usize, 1.0);
        }
        let runtime = runtime.build_arc().map_err(|e| Error::Engine(e.into()))?;
        let ctx = context(config, runtime);
        for f in &functions {
            ctx.register_udf(f.clone());
        }
        Ok(Engine {
            ctx,
            storage,
            functions,
        })
    }

    /// The context plans are built and run in.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// An engine with an empty catalog that shares this one's runtime (its
    /// object stores, memory pool and Parquet footer cache) and functions:
    /// for planning without touching the run's tables.
    pub fn planning(&self) -> Engine {
        let ctx = context(self.ctx.copied_config(), self.ctx.runtime_env());
        for f in &self.functions {
            ctx.register_udf(f.clone());
        }
        Engine {
            ctx,
            storage: self.storage.clone(),
            functions: self.functions.clone(),
        }
    }

    /// Registers the store for `loc` (once per store URL) and returns it.
    ///
    /// # Errors
    /// The store cannot be built from the options and environment.
    pub fn register_store(&self, loc: &Location) -> std::result::Result<Arc<dyn ObjectStore>, String> {
        let key = loc.store_url();
        if let Ok(store) = self.ctx.runtime_env().object_store(&key) {
            return Ok(store);
        }
        let store = storage::build_store(loc, &self.storage)?;
        self.ctx.register_object_store(key.as_ref(), store.clone());
        Ok(store)
    }

    /// Computes `df` once, keeping its partitioning, for several readers;
    /// returns the table and its row count.
    ///
    /// # Errors
    /// The query fails.
    pub async fn materialize(&self, df: DataFrame) -> Result<(Arc<dyn TableProvider>, u64), Cause> {
        let task = Arc::new(df.task_ctx());
        let physical = df.create_physical_plan().await?;
        let schema = physical.schema();
        let parts = collect_partitioned(physical, task).await?;
        let rows = parts.iter().flatten().map(|b| b.num_rows() as u64).sum();
        Ok((Arc::new(MemTable::try_new(schema, parts)?), rows))
    }

    /// A small table (a model, metrics, a profile) as a literal `VALUES`
    /// plan: it travels inside the plan, wherever the plan runs.
    ///
    /// # Errors
    /// A value DataFusion cannot turn into a literal (it can for the
    /// primitive and string columns stages make).
    pub fn values(&self, batch: &RecordBatch) -> Result<DataFrame, Cause> {
        let schema = Arc::new(DFSchema::try_from(batch.schema().as_ref().clone())?);
        let plan = if batch.num_rows() == 0 {
            LogicalPlan::EmptyRelation(EmptyRelation {
                produce_one_row: false,
                schema,
            })
        } else {
            let mut rows = Vec::with_capacity(batch.num_rows());
            for r in 0..batch.num_rows() {
                let row = batch
                    .columns()
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, r).map(lit))
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                rows.push(row);
            }
            // VALUES names its columns column1, column2, ...: name them.
            let names: Vec<Expr> = batch
                .schema()
                .fields()
                .iter()
                .enumerate()
                .map(|(j, f)| Expr::Column(Column::from_name(format!("column{}", j + 1))).alias(f.name()))
                .collect();
            LogicalPlanBuilder::values_with_schema(rows, &schema)?
                .project(names)?
                .build()?
        };
        Ok(DataFrame::new(self.ctx.state(), plan))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float64Array, Int32Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[tokio::test]
    async fn values_tables_round_trip_with_their_schema() {
        let engine = Engine::new(&Settings::default(), BTreeMap::new(), vec![]).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("segment", DataType::Int32, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("value", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int32Array::from(vec![0, 1])),
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Float64Array::from(vec![Some(1.5), None])),
            ],
        )
        .unwrap();
        let df = engine.values(&batch).unwrap();
        assert_eq!(df.schema().as_arrow(), schema.as_ref());
        let got = df.collect().await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0], batch);
        let empty = engine.values(&RecordBatch::new_empty(schema.clone())).unwrap();
        assert_eq!(empty.schema().as_arrow(), schema.as_ref());
        assert_eq!(empty.count().await.unwrap(), 0);
    }
}
