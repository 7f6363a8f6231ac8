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
//! passed as literal arguments, so any plan serializes.
//!
//! Two kinds ([`EngineKind`]): `local` runs plans in this process;
//! `ballista` sends them to an Apache DataFusion Ballista cluster
//! ([`ballista`]: a remote scheduler, or one started in this process with
//! `standalone: true`). What differs is behind this interface: on a cluster
//! a materialized table is Parquet under the run's scratch directory
//! (executors cannot reach this process's memory), registered as a listing
//! table and removed by [`Engine::finish`].

pub mod ballista;
mod config;
pub mod dates;
pub mod dense;
pub mod expr;
mod functions;
pub mod profile;
pub mod spill;

use config::session_config;
pub use config::{SKIPPED_OPTIMIZER_RULES, optimizer_rules};
pub use functions::Functions;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use datafusion::arrow::array::{Array, RecordBatch, UInt64Array};
use datafusion::catalog::TableProvider;
use datafusion::common::{Column, ScalarValue};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{FunctionRegistry, SessionStateBuilder};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, lit};
use datafusion::physical_plan::collect_partitioned;
use datafusion::prelude::{DataFrame, SessionContext};
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
    /// The scheduler of a remote Ballista cluster, `df://host:port`.
    pub url: Option<String>,
    /// Ballista in this process (a scheduler and one executor).
    pub standalone: bool,
    /// Where a Ballista run keeps the tables it materializes (below
    /// `<scratch>/<run id>/`); default for standalone: the temp directory.
    pub scratch: Option<Location>,
    /// Local directories mounted at the same path on the client and every
    /// executor of a remote cluster (vouched for by the pipeline).
    pub shared_paths: Vec<PathBuf>,
    /// Default: the number of cores (16 on Ballista, its own default).
    pub target_partitions: Option<usize>,
    /// Bytes; past it DataFusion spills to disk.
    pub memory_limit: Option<u64>,
}

impl Settings {
    /// Whether this is a cluster in other processes, which cannot see this
    /// machine's disk or memory.
    pub fn is_remote(&self) -> bool {
        self.kind == EngineKind::Ballista && !self.standalone
    }

    /// Why the executors of this engine cannot use `loc`, if they cannot: a
    /// remote cluster reaches object stores, and local paths only below one
    /// of `shared_paths`.
    pub fn unreachable(&self, loc: &Location) -> Option<String> {
        if !self.is_remote() {
            return None;
        }
        if loc.url().scheme() == "memory" {
            return Some(format!(
                "{loc} is memory of this process, which the executors of a remote Ballista cluster do not see"
            ));
        }
        let path = loc.local_path()?;
        if self.shared_paths.iter().any(|s| path.starts_with(s)) {
            return None;
        }
        Some(format!(
            "{loc} is on this machine's disk, which the executors of a remote Ballista cluster do not see; use an object store (s3://, gs://, az://), or a directory mounted at the same path on the client and every executor, listed in engine.shared_paths"
        ))
    }
}

/// Where a Ballista run materializes tables.
#[derive(Debug)]
struct Scratch {
    /// `<scratch>/<run id>/`.
    root: Location,
    next: AtomicUsize,
    used: AtomicBool,
}

/// An execution context with crmflow's stores and functions.
#[derive(Clone)]
pub struct Engine {
    ctx: SessionContext,
    storage: BTreeMap<String, String>,
    functions: Functions,
    /// Set on Ballista: materialized tables go there, not to memory.
    scratch: Option<Arc<Scratch>>,
    /// What the plans run here spilled (local engines only).
    spill: Option<Arc<spill::SpillMeter>>,
    /// Keeps a standalone cluster's work directory for the engine's life.
    _cluster: Option<Arc<ballista::Cluster>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Storage option values may be secrets: never shown.
        f.debug_struct("Engine")
            .field("storage_options", &self.storage.keys().collect::<Vec<_>>())
            .field("scratch", &self.scratch.as_ref().map(|s| s.root.to_string()))
            .finish_non_exhaustive()
    }
}

/// `df` with its string-view columns cast to plain UTF-8 (binary views to
/// binary), names kept: what a materialized table holds. Parquet sources are
/// read as string views (DataFusion's default, fast to scan and sort), but
/// a view array taken from a hash join's build side (one concatenated batch)
/// keeps every buffer of it, so through a chain of joins on a table read
/// many times the buffer lists multiply by the batch count at each join: the
/// demo's seven-way `customer_scores` join at 1M customers spent 229 s there.
///
/// # Errors
/// DataFusion's, if the projection cannot be built.
pub fn plain_strings(df: DataFrame) -> datafusion::error::Result<DataFrame> {
    use datafusion::arrow::datatypes::DataType;
    let fields = df.schema().fields().clone();
    if !fields
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Utf8View | DataType::BinaryView))
    {
        return Ok(df);
    }
    let exprs: Vec<Expr> = df
        .schema()
        .iter()
        .map(|(q, f)| {
            let c = Expr::Column(Column::new(q.cloned(), f.name()));
            match f.data_type() {
                DataType::Utf8View => {
                    datafusion::logical_expr::cast(c, DataType::Utf8).alias_qualified(q.cloned(), f.name())
                }
                DataType::BinaryView => {
                    datafusion::logical_expr::cast(c, DataType::Binary).alias_qualified(q.cloned(), f.name())
                }
                _ => c,
            }
        })
        .collect();
    df.select(exprs)
}

impl Engine {
    /// An engine running plans in this process. `storage` holds object-store
    /// options (values may be secrets); `functions` are registered by name.
    /// For Ballista settings the context is configured as the cluster's is
    /// (so `validate` and `plan` see the schemas a run sees), but plans run
    /// here: [`Engine::start`] connects to the cluster.
    ///
    /// # Errors
    /// [`Error::Engine`] when the runtime cannot be built (e.g. no temp
    /// directory for spilling).
    pub fn new(settings: &Settings, storage: BTreeMap<String, String>, functions: Functions) -> Result<Engine> {
        let config = session_config(settings, &storage);
        // One store per bucket or container (DataFusion's default registry
        // keys by scheme and host, so two containers of an Azure account
        // would share one).
        let registry = Arc::new(storage::StoreRegistry::new(storage.clone()));
        let mut runtime = RuntimeEnvBuilder::new().with_object_store_registry(registry);
        if let Some(bytes) = settings.memory_limit {
            // Fair among the operators that can spill (each sort or
            // aggregate gets its share, none starves the others); the error
            // of an exhausted pool names the largest consumers. Spill files
            // go to the OS temp directory (DataFusion's default).
            runtime = runtime.with_memory_pool(Arc::new(TrackConsumersPool::new(
                FairSpillPool::new(bytes as usize),
                NonZeroUsize::new(5).unwrap_or(NonZeroUsize::MIN),
            )));
        }
        let runtime = runtime.build_arc().map_err(|e| Error::Engine(e.into()))?;
        let meter = Arc::new(spill::SpillMeter::default());
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_optimizer_rules(optimizer_rules(datafusion::optimizer::Optimizer::new().rules))
            .with_physical_optimizer_rule(Arc::new(dense::DenseRule))
            .with_physical_optimizer_rule(Arc::new(spill::MeterRule(meter.clone())))
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.state_ref()
            .write()
            .register_function_rewrite(Arc::new(dates::UtcDate))
            .map_err(|e| Error::Engine(e.into()))?;
        functions.register(&ctx);
        Ok(Engine {
            ctx,
            storage,
            functions,
            scratch: None,
            spill: Some(meter),
            _cluster: None,
        })
    }

    /// The engine of `settings` for run `run_id`: [`Engine::new`] for
    /// `local`; for `ballista`, the client of the remote scheduler or of a
    /// cluster started in this process, materializing below
    /// `<scratch>/<run_id>/`.
    ///
    /// # Errors
    /// [`Error::Engine`]: the scheduler cannot be reached, the in-process
    /// cluster does not start, no scratch directory.
    pub async fn start(
        settings: &Settings,
        storage: BTreeMap<String, String>,
        functions: Functions,
        run_id: &str,
    ) -> Result<Engine> {
        if settings.kind == EngineKind::Local {
            return Engine::new(settings, storage, functions);
        }
        let config = session_config(settings, &storage);
        let cluster = match (&settings.url, settings.standalone) {
            (Some(url), false) => {
                reachable(url).await.map_err(|m| Error::Engine(m.into()))?;
                ballista::Cluster::remote(url, config, &functions).await
            }
            _ => ballista::Cluster::standalone(config, &functions, 0, settings.memory_limit).await,
        }
        .map_err(|m| Error::Engine(format!("Ballista: {m}").into()))?;
        let scratch = match &settings.scratch {
            Some(s) => s.clone(),
            None => Location::parse(&format!("{}/", std::env::temp_dir().join("crmflow-scratch").display()))
                .map_err(|m| Error::Engine(format!("no scratch directory: {m}").into()))?,
        };
        let cluster = Arc::new(cluster);
        Ok(Engine {
            ctx: cluster.ctx.clone(),
            storage,
            functions,
            scratch: Some(Arc::new(Scratch {
                root: scratch.join(&format!("{run_id}/")),
                next: AtomicUsize::new(0),
                used: AtomicBool::new(false),
            })),
            spill: None,
            _cluster: Some(cluster),
        })
    }

    /// What the plans this engine ran spilled to disk so far; `None` on
    /// Ballista (the executors spill, and keep their metrics).
    pub fn spilled(&self) -> Option<spill::Spill> {
        self.spill.as_ref().map(|m| m.totals())
    }

    /// The context plans are built and run in.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// An engine with an empty catalog that shares this one's runtime (its
    /// object stores, memory pool and Parquet footer cache), configuration
    /// and functions: for planning without touching the run's tables. It
    /// plans in this process, also for a Ballista engine.
    pub fn planning(&self) -> Engine {
        let ctx = SessionContext::new_with_config_rt(self.ctx.copied_config(), self.ctx.runtime_env());
        self.functions.register(&ctx);
        Engine {
            ctx,
            storage: self.storage.clone(),
            functions: self.functions.clone(),
            scratch: None,
            spill: None,
            _cluster: self._cluster.clone(),
        }
    }

    /// The store for `loc` (built on first use, one per bucket or
    /// container, [`storage::StoreRegistry`]).
    ///
    /// # Errors
    /// The store cannot be built from the options and environment.
    pub fn register_store(&self, loc: &Location) -> std::result::Result<Arc<dyn ObjectStore>, String> {
        let key = loc.store_url();
        match self.ctx.runtime_env().object_store(&key) {
            Ok(store) => Ok(store),
            // The registry's error wraps the message: build again for the
            // plain one (it fails the same way).
            Err(e) => Err(storage::build_store(loc, &self.storage)
                .err()
                .unwrap_or_else(|| e.to_string())),
        }
    }

    /// Computes `df` once, keeping its partitioning, for several readers;
    /// returns the table and its row count. On Ballista the executors write
    /// it as Parquet below the run's scratch directory and it is read back
    /// as a listing table.
    ///
    /// # Errors
    /// The query fails.
    pub async fn materialize(&self, df: DataFrame) -> Result<(Arc<dyn TableProvider>, u64), Cause> {
        if let Some(scratch) = &self.scratch {
            return self.materialize_parquet(scratch, df).await;
        }
        let df = plain_strings(df)?;
        let task = Arc::new(df.task_ctx());
        let physical = df.create_physical_plan().await?;
        let schema = physical.schema();
        let parts = collect_partitioned(physical.clone(), task).await?;
        profile::log("materialized table", &physical);
        let rows = parts.iter().flatten().map(|b| b.num_rows() as u64).sum();
        Ok((Arc::new(MemTable::try_new(schema, parts)?), rows))
    }

    async fn materialize_parquet(
        &self,
        scratch: &Scratch,
        df: DataFrame,
    ) -> Result<(Arc<dyn TableProvider>, u64), Cause> {
        let n = scratch.next.fetch_add(1, Ordering::Relaxed);
        let dir = scratch.root.join(&format!("table-{n:04}/"));
        // Marked before the first byte, so that finish() looks even if the
        // write fails half way.
        scratch.used.store(true, Ordering::Relaxed);
        self.register_store(&dir).map_err(Cause::Message)?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let counts = df
            .write_parquet(dir.url().as_str(), DataFrameWriteOptions::new(), None)
            .await?;
        let rows = counts
            .iter()
            .filter_map(|b| b.column(0).as_any().downcast_ref::<UInt64Array>())
            .flat_map(|c| c.iter().flatten())
            .sum();
        let url = ListingTableUrl::parse(dir.url().as_str())?;
        let format = ParquetFormat::default().with_options(self.ctx.state().table_options().parquet.clone());
        let options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(schema);
        Ok((Arc::new(ListingTable::try_new(config)?), rows))
    }

    /// Ends the engine's run: removes what it materialized (Ballista's
    /// scratch directory of the run). Best effort; safe to call on every
    /// engine.
    pub async fn finish(&self) {
        let Some(scratch) = &self.scratch else { return };
        if !scratch.used.load(Ordering::Relaxed) {
            return;
        }
        let Ok(store) = self.register_store(&scratch.root) else {
            return;
        };
        remove_below(store.as_ref(), &scratch.root).await;
    }

    /// A small table (a model, metrics, a profile) as a literal `VALUES`
    /// plan: it travels inside the plan, wherever the plan runs, with the
    /// batch's column types and nullability.
    ///
    /// # Errors
    /// A value DataFusion cannot turn into a literal (it can for the
    /// primitive and string columns stages make).
    pub fn values(&self, batch: &RecordBatch) -> Result<DataFrame, Cause> {
        let schema = batch.schema();
        let n = schema.fields().len();
        // A serialized VALUES plan carries no schema: the node that decodes
        // it infers each column's type from the literals and makes it
        // nullable only if one of them is NULL. So the plan has one guard
        // row — NULL in the nullable columns, a default in the others — that
        // its NULL marker column filters out: every node sees the batch's
        // own schema, also for an empty batch.
        let mut rows = Vec::with_capacity(batch.num_rows() + 1);
        for r in 0..batch.num_rows() {
            let mut row = batch
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, r).map(lit))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            row.push(lit(true));
            rows.push(row);
        }
        let mut guard = schema
            .fields()
            .iter()
            .map(|f| {
                if f.is_nullable() {
                    ScalarValue::try_from(f.data_type())
                } else {
                    ScalarValue::new_default(f.data_type())
                }
                .map(lit)
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        guard.push(lit(ScalarValue::Boolean(None)));
        rows.push(guard);
        let keep = Expr::Column(Column::from_name(format!("column{}", n + 1)));
        // VALUES names its columns column1, column2, ...: name them.
        let names: Vec<Expr> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(j, f)| Expr::Column(Column::from_name(format!("column{}", j + 1))).alias(f.name()))
            .collect();
        let plan = LogicalPlanBuilder::values(rows)?
            .filter(keep.is_not_null())?
            .project(names)?
            .build()?;
        Ok(DataFrame::new(self.ctx.state(), plan))
    }
}

/// Deletes every object below `dir` (and, on local disk, the directory).
async fn remove_below(store: &dyn ObjectStore, dir: &Location) {
    use futures::TryStreamExt;
    let prefix = dir.path();
    let metas: Vec<object_store::ObjectMeta> = store.list(Some(&prefix)).try_collect().await.unwrap_or_default();
    for m in metas {
        let _ = object_store::ObjectStoreExt::delete(store, &m.location).await;
    }
    if let Some(path) = dir.local_path()
        && path.is_dir()
    {
        let _ = std::fs::remove_dir_all(path);
    }
}

/// Fails fast, with the URL, when nothing listens at a scheduler's address.
async fn reachable(url: &str) -> std::result::Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("engine url {url}: {e}"))?;
    let host = parsed.host_str().unwrap_or_default().to_string();
    let port = parsed.port().unwrap_or(50050);
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot reach the Ballista scheduler at {url}: {e}")),
        Err(_) => Err(format!(
            "cannot reach the Ballista scheduler at {url}: no answer in 10 s"
        )),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float64Array, Int32Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[tokio::test]
    async fn values_tables_round_trip_with_their_schema() {
        let engine = Engine::new(&Settings::default(), BTreeMap::new(), Functions::default()).unwrap();
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

    /// On Ballista the plans are serialized, sent and planned again on the
    /// scheduler: VALUES keep their schema, materialized tables land in the
    /// run's scratch directory and are gone after `finish`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ballista_standalone_keeps_values_and_materializes_in_scratch() {
        let scratch = tempfile::tempdir().unwrap();
        let settings = Settings {
            kind: EngineKind::Ballista,
            standalone: true,
            scratch: Some(Location::parse(&format!("{}/", scratch.path().display())).unwrap()),
            target_partitions: Some(2),
            ..Settings::default()
        };
        let engine = Engine::start(&settings, BTreeMap::new(), Functions::default(), "run-1")
            .await
            .unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int32, false),
            Field::new("v", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int32Array::from(vec![1, 2, 3])),
                Arc::new(Float64Array::from(vec![Some(0.5), Some(1.5), Some(2.5)])),
            ],
        )
        .unwrap();
        // Through the cluster: the nullable column stays nullable although
        // it holds no NULL.
        let got = engine.values(&batch).unwrap().sort_by(vec![expr::column("k")]).unwrap();
        let got = got.collect().await.unwrap();
        let got = datafusion::arrow::compute::concat_batches(&got[0].schema(), &got).unwrap();
        assert_eq!(got, batch);
        let empty = engine.values(&RecordBatch::new_empty(schema.clone())).unwrap();
        assert_eq!(
            empty
                .collect()
                .await
                .unwrap()
                .iter()
                .map(|b| b.num_rows())
                .sum::<usize>(),
            0
        );

        let df = engine.values(&batch).unwrap();
        let (table, rows) = engine.materialize(df).await.unwrap();
        assert_eq!(rows, 3);
        assert_eq!(table.schema(), schema);
        let run_dir = scratch.path().join("run-1");
        assert!(run_dir.is_dir());
        let back = engine.context().read_table(table).unwrap();
        assert_eq!(back.count().await.unwrap(), 3);
        engine.finish().await;
        assert!(!run_dir.exists());
    }

    /// Batches of 32K rows without a memory limit and under one of at least
    /// 512 MiB a partition; DataFusion's 8K under a smaller one.
    #[test]
    fn batches_are_32k_rows_unless_a_memory_limit_is_small() {
        // 4 partitions: 32K rows from a 2 GiB limit on.
        let mib = |n: u64| Some(n << 20);
        for (limit, want) in [
            (None, 32 * 1024),
            (mib(64), 8192),
            (mib(2047), 8192),
            (mib(2048), 32 * 1024),
        ] {
            let settings = Settings {
                memory_limit: limit,
                target_partitions: Some(4),
                ..Settings::default()
            };
            let engine = Engine::new(&settings, BTreeMap::new(), Functions::default()).unwrap();
            assert_eq!(engine.context().state().config().batch_size(), want, "{limit:?}");
        }
    }

    /// With a memory limit joins are sort-merge joins (their sorts spill);
    /// without one, hash joins.
    #[tokio::test]
    async fn a_memory_limit_makes_joins_sort_merge_joins() {
        for (limit, want, not) in [
            (None, "HashJoinExec", "SortMergeJoin"),
            (Some(64 << 20), "SortMergeJoin", "HashJoinExec"),
        ] {
            let settings = Settings {
                memory_limit: limit,
                ..Settings::default()
            };
            let engine = Engine::new(&settings, BTreeMap::new(), Functions::default()).unwrap();
            let ctx = engine.context();
            ctx.sql("CREATE TABLE a AS VALUES (1, 'x'), (2, 'y')").await.unwrap();
            ctx.sql("CREATE TABLE b AS VALUES (1, 10.0), (3, 30.0)").await.unwrap();
            let df = ctx
                .sql("SELECT a.column2, b.column2 FROM a JOIN b ON a.column1 = b.column1")
                .await
                .unwrap();
            let plan = df.clone().create_physical_plan().await.unwrap();
            let shown = datafusion::physical_plan::displayable(plan.as_ref())
                .indent(true)
                .to_string();
            assert!(shown.contains(want) && !shown.contains(not), "{limit:?}: {shown}");
            let got = df.collect().await.unwrap();
            assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        }
    }

    /// A struct-valued function counting its calls, for the test below.
    #[derive(Debug, PartialEq, Eq, Hash)]
    struct Pair {
        signature: datafusion::logical_expr::Signature,
    }

    static PAIR_CALLS: AtomicUsize = AtomicUsize::new(0);

    impl datafusion::logical_expr::ScalarUDFImpl for Pair {
        fn name(&self) -> &str {
            "test_pair"
        }
        fn signature(&self) -> &datafusion::logical_expr::Signature {
            &self.signature
        }
        fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
            Ok(DataType::Struct(pair_fields()))
        }
        fn invoke_with_args(
            &self,
            args: datafusion::logical_expr::ScalarFunctionArgs,
        ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
            use datafusion::arrow::array::{ArrayRef, AsArray, StructArray};
            PAIR_CALLS.fetch_add(1, Ordering::SeqCst);
            let a = datafusion::logical_expr::ColumnarValue::values_to_arrays(&args.args)?;
            let x = a[0].as_primitive::<datafusion::arrow::datatypes::Float64Type>();
            let plus: Float64Array = x.unary(|v| v + 1.0);
            let twice: Float64Array = x.unary(|v| v * 2.0);
            let s = StructArray::try_new(pair_fields(), vec![Arc::new(plus) as ArrayRef, Arc::new(twice)], None)?;
            Ok(datafusion::logical_expr::ColumnarValue::Array(Arc::new(s)))
        }
    }

    fn pair_fields() -> datafusion::arrow::datatypes::Fields {
        vec![
            Field::new("plus", DataType::Float64, true),
            Field::new("twice", DataType::Float64, true),
        ]
        .into()
    }

    /// A struct computed once and read field by field is computed once per
    /// batch, however many fields are read (DataFusion's struct-field
    /// pushdown would inline it into each field read).
    #[tokio::test]
    async fn a_struct_valued_function_runs_once_for_all_its_fields() {
        use datafusion::functions::core::expr_fn::get_field;
        let pair = datafusion::logical_expr::ScalarUDF::from(Pair {
            signature: datafusion::logical_expr::Signature::exact(
                vec![DataType::Float64],
                datafusion::logical_expr::Volatility::Immutable,
            ),
        });
        let engine = Engine::new(
            &Settings::default(),
            BTreeMap::new(),
            Functions {
                scalar: vec![pair.clone()],
                aggregate: vec![],
            },
        )
        .unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Float64Array::from(vec![1.0, 2.5]))]).unwrap();
        let df = engine
            .values(&batch)
            .unwrap()
            .select(vec![expr::column("x"), pair.call(vec![expr::column("x")]).alias("s")])
            .unwrap()
            .select(vec![
                get_field(expr::column("s"), "plus").alias("plus"),
                get_field(expr::column("s"), "twice").alias("twice"),
            ])
            .unwrap();
        PAIR_CALLS.store(0, Ordering::SeqCst);
        let got = df.collect().await.unwrap();
        let got = datafusion::arrow::compute::concat_batches(&got[0].schema(), &got).unwrap();
        assert_eq!(PAIR_CALLS.load(Ordering::SeqCst), 1);
        let col = |i: usize| {
            got.column(i)
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .values()
                .to_vec()
        };
        assert_eq!(col(0), vec![2.0, 3.5]);
        assert_eq!(col(1), vec![2.0, 5.0]);
    }

    /// A materialized table holds plain UTF-8 and binary where its plan gives
    /// string and binary views (views multiply buffer lists through chains of
    /// joins), with the same names and values.
    #[tokio::test]
    async fn materialized_tables_hold_plain_strings() {
        let engine = Engine::new(&Settings::default(), BTreeMap::new(), Functions::default()).unwrap();
        let df = engine
            .context()
            .sql(
                "SELECT arrow_cast('United Kingdom and Northern Ireland', 'Utf8View') AS country, \
                 arrow_cast(arrow_cast('0123456789abcdef', 'Binary'), 'BinaryView') AS b, 7 AS n",
            )
            .await
            .unwrap();
        let types: Vec<DataType> = df.schema().fields().iter().map(|f| f.data_type().clone()).collect();
        assert_eq!(types, vec![DataType::Utf8View, DataType::BinaryView, DataType::Int64]);
        let (t, rows) = engine.materialize(df).await.unwrap();
        assert_eq!(rows, 1);
        let schema = t.schema();
        let got: Vec<(&str, &DataType)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("country", &DataType::Utf8),
                ("b", &DataType::Binary),
                ("n", &DataType::Int64)
            ]
        );
        let back = engine.context().read_table(t).unwrap().collect().await.unwrap();
        let c = back[0].column(0).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(c.value(0), "United Kingdom and Northern Ireland");
    }
}
