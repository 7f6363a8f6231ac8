//! Sinks: a table written as Parquet to a staging location, checked there,
//! and published only when every sink of the run has staged and passed.
//!
//! Staging is a hidden sibling of the sink's location,
//! `<parent>/.<name>.crmflow-<run id>/`, on the same store (so that on a
//! local disk publishing is a rename). What readers see and when is the
//! publish protocol of [`publish`], documented in the README.
//!
//! Output is BI-safe ([`bi_safe`]): timestamps as microseconds UTC, no
//! unsigned integers, plain UTF-8 strings, zstd, page statistics.

pub mod convert;
pub mod delta;
pub mod layout;
pub mod lock;
pub mod publish;
pub mod staging;

pub use convert::{bi_safe, safe_type};
pub use layout::Layout;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::config::TableParquetOptions;
use datafusion::datasource::file_format::format_as_file_type;
use datafusion::datasource::file_format::parquet::ParquetFormatFactory;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, SortExpr, cast};
use datafusion::prelude::DataFrame;
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path as StorePath;

use crate::checks::CheckSpec;
use crate::engine::Engine;
use crate::engine::expr::column;
use crate::error::{Error, Result};
use crate::storage::{self, Location};

/// A resolved sink.
#[derive(Debug, Clone)]
pub struct Sink {
    pub table: String,
    pub location: Location,
    /// Where its runs stage their output ([`staging`]).
    pub staging_root: Location,
    /// Parquet files published by manifest, or a Delta table ([`delta`]).
    pub format: crate::config::Format,
    pub partition_by: Vec<String>,
    pub mode: SinkMode,
    pub checks: Vec<CheckSpec>,
    /// The source whose quarantined rows this sink holds (`quarantine:` on
    /// a source); `None` for the pipeline's own sinks.
    pub quarantine_of: Option<String>,
    pub layout: Layout,
}

/// How a sink replaces what is already at its location.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkMode {
    /// The whole location is replaced when the run succeeds.
    #[default]
    Overwrite,
    /// Only the partitions present in the new data are replaced.
    OverwritePartitions,
    /// Files are added; a rerun with the same vars replaces its own files.
    Append,
}

impl SinkMode {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkMode::Overwrite => "overwrite",
            SinkMode::OverwritePartitions => "overwrite_partitions",
            SinkMode::Append => "append",
        }
    }
}

/// A sink's output, written and waiting to be published.
#[derive(Debug)]
pub struct Staged {
    pub sink: Sink,
    pub staging: Location,
    pub store: Arc<dyn ObjectStore>,
    /// Files below `staging`, relative (`segment=0/x.parquet`).
    pub files: Vec<StagedFile>,
    pub rows: u64,
    pub schema: SchemaRef,
}

/// One written file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StagedFile {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

/// The staging location of a sink for a run (see [`staging`]).
pub fn staging_location(sink: &Sink, run_id: &str) -> Option<Location> {
    staging::location(&sink.location, &sink.staging_root, run_id)
}

/// Checks that a sink's location can be written.
///
/// # Errors
/// [`Error::Sink`] naming the sink: the store cannot be built or written.
pub async fn probe(engine: &Engine, sink: &Sink, run_id: &str) -> Result<()> {
    let err = |m: String| Error::sink(&sink.table, &sink.location, m);
    let store = engine.register_store(&sink.location).map_err(err)?;
    crate::storage::probe_writable(store.as_ref(), &sink.location, run_id)
        .await
        .map_err(err)
}

/// Writes the sink's table to its staging location.
///
/// # Errors
/// [`Error::Sink`] naming the sink and its location.
pub async fn stage(engine: &Engine, sink: &Sink, staging: &Location) -> Result<Staged> {
    let err = |m: String| Error::sink(&sink.table, &sink.location, m);
    let ctx = engine.context();
    let store = engine.register_store(&sink.location).map_err(&err)?;
    let staging = staging.clone();
    let df = ctx.table(sink.table.as_str()).await.map_err(|e| err(e.to_string()))?;
    for c in &sink.partition_by {
        if df.schema().field_with_unqualified_name(c).is_err() {
            return Err(err(format!(
                "partition_by column \"{c}\" is not in table \"{}\" (columns: {})",
                sink.table,
                crate::checks::column_list(df.schema().as_arrow())
            )));
        }
    }
    let problems = layout::validate(&sink.layout, &sink.partition_by, df.schema().as_arrow(), &sink.table);
    if let Some(p) = problems.into_iter().next() {
        return Err(err(p));
    }
    // A Delta sink is staged unpartitioned, its partition columns keeping
    // their types: the table's partitions are written at its commit.
    let parts: &[String] = match sink.format {
        crate::config::Format::Parquet => &sink.partition_by,
        crate::config::Format::Delta => &[],
    };
    let df = bi_safe(df).map_err(|e| err(e.to_string()))?;
    let typed = df.schema().as_arrow().clone();
    let df = prepare_columns(df, parts, &sink.layout.descriptions).map_err(|e| err(e.to_string()))?;
    // The table's schema as written (descriptions included), with the
    // partition columns' own types (their directory values are strings).
    let fields: Vec<Field> = df
        .schema()
        .fields()
        .iter()
        .zip(typed.fields())
        .map(|(w, t)| {
            if parts.contains(t.name()) {
                t.as_ref().clone()
            } else {
                w.as_ref().clone()
            }
        })
        .collect();
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let mut opts = TableParquetOptions::default();
    opts.global.compression = Some("zstd(3)".into());
    opts.global.statistics_enabled = Some("page".into());
    // Float columns are nearly all distinct values: building a dictionary
    // for them only costs time before the writer falls back to plain.
    for f in schema.fields() {
        if matches!(f.data_type(), DataType::Float64 | DataType::Float32) {
            let c = opts.column_specific_options.entry(f.name().clone()).or_default();
            c.dictionary_enabled = Some(false);
        }
    }
    layout::apply(&sink.layout, &mut opts);
    opts.global.created_by = format!(
        "crmflow {} (datafusion {})",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION
    );
    let sort: Vec<SortExpr> = layout::sort_columns(&sink.layout, parts, &schema)
        .iter()
        .map(|c| column(c).sort(true, false))
        .collect();
    // One file at a time, each up to the target size (DataFusion's default
    // opens a file per core, whatever the table's size).
    let rows_per_file = layout::rows_per_file(&sink.layout, &schema, parts);
    let (mut state, plan) = df.into_parts();
    let exec = &mut state.config_mut().options_mut().execution;
    let n =
        |v: usize| datafusion::common::config::ConfigNonZeroUsize::try_new(v.max(1)).map_err(|e| err(e.to_string()));
    exec.minimum_parallel_output_files = n(1)?;
    exec.soft_max_rows_per_output_file = n(rows_per_file)?;
    // A file is closed after the batch that reaches its rows: batches that
    // divide it keep files to whole row groups (8192 divides the default).
    if sink.layout.row_group_rows < exec.batch_size.get() {
        exec.batch_size = n(sink.layout.row_group_rows)?;
    }
    let df = DataFrame::new(state, plan);
    let result = write_parquet(df, staging.url().as_str(), parts, sort, opts, &sink.table).await;
    if let Err(e) = result {
        remove_prefix(store.as_ref(), &staging).await;
        return Err(err(match e.find_root() {
            // A value that does not fit (named by `convert`).
            datafusion::error::DataFusionError::Execution(m) if m.starts_with("column \"") => m.clone(),
            _ => format!("writing {staging} failed: {e}"),
        }));
    }
    let mut files = match describe(store.clone(), &staging).await {
        Ok(f) => f,
        Err(e) => {
            remove_prefix(store.as_ref(), &staging).await;
            return Err(err(e));
        }
    };
    if files.is_empty() {
        // DataFusion writes no file for no rows: an empty table is one file
        // with the schema and no rows (a partitioned one has no partitions,
        // so no file), and the staged directory exists either way.
        match write_empty(store.as_ref(), &staging, &schema, parts.is_empty()).await {
            Ok(f) => files = f,
            Err(e) => {
                remove_prefix(store.as_ref(), &staging).await;
                return Err(err(e));
            }
        }
    }
    let rows = files.iter().map(|f| f.rows).sum();
    Ok(Staged {
        sink: sink.clone(),
        staging,
        store,
        files,
        rows,
        schema,
    })
}

/// `DataFrame::write_parquet` (a `COPY TO` plan, sorted by `sort` first),
/// keeping the physical plan to log it with its metrics
/// ([`crate::engine::profile`]).
async fn write_parquet(
    df: DataFrame,
    url: &str,
    partition_by: &[String],
    sort: Vec<SortExpr>,
    opts: TableParquetOptions,
    table: &str,
) -> datafusion::error::Result<()> {
    let (state, plan) = df.into_parts();
    let plan = if sort.is_empty() {
        plan
    } else {
        LogicalPlanBuilder::from(plan).sort(sort)?.build()?
    };
    let format = format_as_file_type(Arc::new(ParquetFormatFactory::new_with_options(opts)));
    let plan =
        LogicalPlanBuilder::copy_to(plan, url.into(), format, Default::default(), partition_by.to_vec())?.build()?;
    let df = DataFrame::new(state, plan);
    let task = Arc::new(df.task_ctx());
    let physical = df.create_physical_plan().await?;
    datafusion::physical_plan::collect(physical.clone(), task).await?;
    crate::engine::profile::log(&format!("sink \"{table}\""), &physical);
    Ok(())
}

/// The staging of a table without rows: a Parquet file with the schema
/// and no rows (`with_file`, for an unpartitioned sink), and the directory
/// on local disk.
async fn write_empty(
    store: &dyn ObjectStore,
    staging: &Location,
    schema: &SchemaRef,
    with_file: bool,
) -> std::result::Result<Vec<StagedFile>, String> {
    if let Some(dir) = staging.local_path() {
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if !with_file {
        return Ok(vec![]);
    }
    let mut bytes = Vec::new();
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(&mut bytes, schema.clone(), None)
        .map_err(|e| format!("writing an empty file to {staging} failed: {e}"))?;
    w.finish()
        .map_err(|e| format!("writing an empty file to {staging} failed: {e}"))?;
    drop(w);
    let name = "part-00000.parquet";
    let size = bytes.len() as u64;
    object_store::ObjectStoreExt::put(store, &staging.child_path(name), object_store::PutPayload::from(bytes))
        .await
        .map_err(|e| format!("writing an empty file to {staging} failed: {e}"))?;
    Ok(vec![StagedFile {
        path: name.to_string(),
        rows: 0,
        bytes: size,
    }])
}

/// The data files below a location with their row counts (from the
/// footers) and sizes, sorted by path.
///
/// # Errors
/// A listing or footer failure, as a message.
pub async fn describe(store: Arc<dyn ObjectStore>, dir: &Location) -> std::result::Result<Vec<StagedFile>, String> {
    let mut files = Vec::new();
    for (path, bytes) in list_data(store.as_ref(), dir).await? {
        let rows = footer_rows(store.clone(), &dir.child_path(&path), bytes).await?;
        files.push(StagedFile { path, rows, bytes });
    }
    Ok(files)
}

/// The data files below a location: (path relative to it, size), sorted;
/// hidden (`.`/`_`) files and directories and non-Parquet files skipped.
///
/// # Errors
/// A listing failure, as a message.
pub async fn list_data(store: &dyn ObjectStore, dir: &Location) -> std::result::Result<Vec<(String, u64)>, String> {
    let mut out: Vec<(String, u64)> = storage::list_visible(store, dir)
        .await?
        .into_iter()
        .filter(|(rel, _)| rel.ends_with(".parquet"))
        .map(|(rel, m)| (rel, m.size))
        .collect();
    out.sort();
    Ok(out)
}

/// The row count in a Parquet file's footer.
///
/// # Errors
/// The footer cannot be read.
pub async fn footer_rows(store: Arc<dyn ObjectStore>, path: &StorePath, size: u64) -> std::result::Result<u64, String> {
    let meta = object_store::ObjectMeta {
        location: path.clone(),
        last_modified: chrono::Utc::now(),
        size,
        e_tag: None,
        version: None,
    };
    let md = DFParquetMetadata::new(store.as_ref(), &meta)
        .fetch_metadata()
        .await
        .map_err(|e| format!("cannot read the footer of {path}: {e}"))?;
    Ok(md.file_metadata().num_rows().max(0) as u64)
}

/// Deletes everything below a location (best effort: used on failure
/// paths and to drop staging after publishing).
pub async fn remove_prefix(store: &dyn ObjectStore, dir: &Location) {
    let prefix = dir.path();
    let metas: Vec<object_store::ObjectMeta> = store.list(Some(&prefix)).try_collect().await.unwrap_or_default();
    for m in metas {
        let _ = object_store::ObjectStoreExt::delete(store, &m.location).await;
    }
    // A local store leaves the (now empty) directories behind.
    if let Some(path) = dir.local_path()
        && path.is_dir()
    {
        let _ = std::fs::remove_dir_all(path);
    }
}

/// Column descriptions as field metadata, partition values as Hive
/// directory values ([`layout::hive_escape`]).
fn prepare_columns(
    df: DataFrame,
    partition_by: &[String],
    descriptions: &std::collections::BTreeMap<String, String>,
) -> datafusion::error::Result<DataFrame> {
    if partition_by.is_empty() && descriptions.is_empty() {
        return Ok(df);
    }
    let exprs: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let name = f.name();
            if partition_by.contains(name) {
                layout::hive_value_udf()
                    .call(vec![cast(column(name), DataType::Utf8)])
                    .alias(name)
            } else if let Some(d) = descriptions.get(name) {
                let mut md = f.metadata().clone();
                md.insert("description".to_string(), d.clone());
                column(name).alias_with_metadata(name, Some(md.into()))
            } else {
                column(name)
            }
        })
        .collect();
    df.select(exprs)
}

/// Schema as JSON for manifests: name, type, nullable (and description),
/// partition columns last, in `partition_by` order, as readers show them.
pub fn schema_json(schema: &Schema, partition_by: &[String]) -> serde_json::Value {
    let json = |f: &Field| {
        let mut v =
            serde_json::json!({"name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()});
        if let Some(d) = f.metadata().get("description") {
            v["description"] = serde_json::Value::String(d.clone());
        }
        v
    };
    let data = schema.fields().iter().filter(|f| !partition_by.contains(f.name()));
    let parts = partition_by.iter().filter_map(|p| schema.field_with_name(p).ok());
    serde_json::Value::Array(data.map(|f| json(f)).chain(parts.map(json)).collect())
}
