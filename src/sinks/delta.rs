//! `format: delta` sinks: the staged, checked output committed to a Delta
//! Lake table through delta-rs, as one commit per sink and run.
//!
//! The sink is staged as for Parquet ([`super::stage`], unpartitioned, so
//! every column keeps its type) and its checks run there: a run whose
//! checks fail commits nothing. Publishing is one delta-rs write reading
//! the staged files: the data files are written into the table directory,
//! where no reader of the log sees them, and a single commit
//! (`_delta_log/<version>.json`, put only if absent) makes them the
//! table's next version. Killed before the commit, the table is at its
//! previous version (the orphaned files are left for `VACUUM`).
//!
//! Modes:
//! - `overwrite`: the table is replaced; the new schema, column comments
//!   and partitioning replace the old ones.
//! - `overwrite_partitions`: a `replaceWhere` over the partition values
//!   present in the new data; other partitions stay.
//! - `append`: the rows are added, once per pipeline, sink and vars: the
//!   commit carries an application transaction (`txn`) whose id is made of
//!   them, and a run that finds that id already committed adds nothing.
//!
//! Schema evolution: none outside `overwrite`. `append` and
//! `overwrite_partitions` need the table's columns with the table's types
//! and its `partition_by`; anything else fails the run, naming the sink
//! and the column.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::Schema;
use datafusion::common::ScalarValue;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{Expr, ExprSchemable, lit, when};
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::DataFrame;
use deltalake_core::DeltaTable;
use deltalake_core::delta_datafusion::planner::DeltaPlanner;
use deltalake_core::kernel::Transaction;
use deltalake_core::kernel::transaction::CommitProperties;
use deltalake_core::operations::write::SchemaMode;
use deltalake_core::protocol::SaveMode;

use super::publish::RunInfo;
use super::{SinkMode, Staged, remove_prefix};
use crate::engine::expr::column;
use crate::engine::{Engine, EngineKind};
use crate::sources::delta::table_at;
use crate::storage::Location;

/// What a Delta commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The table's version after the run.
    pub version: u64,
    /// `append` found its transaction already committed: nothing was added.
    pub skipped: bool,
}

/// Why a Delta table cannot be used here, for a location: `None` when it
/// can. Delta tables are read and written by delta-rs in this process (not
/// by Ballista's executors), and a commit on S3 is a conditional put.
pub fn problems(
    engine: Option<EngineKind>,
    storage: &BTreeMap<String, String>,
) -> impl Fn(&Location) -> Option<String> + '_ {
    move |loc| {
        if engine.is_some_and(|k| k != EngineKind::Local) {
            return Some("format: delta is read and written by the local engine only (engine: kind: local)".into());
        }
        let disabled = |v: &str| v.trim().eq_ignore_ascii_case("disabled");
        let option = storage
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("aws_conditional_put"))
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var("AWS_CONDITIONAL_PUT").ok());
        if loc.url().scheme() == "s3" && option.as_deref().is_some_and(disabled) {
            return Some(
                "format: delta on S3 commits with a conditional put (If-None-Match); remove aws_conditional_put: disabled"
                    .into(),
            );
        }
        None
    }
}

/// The application transaction id of an `append`: the pipeline, the sink
/// and a hash of the vars (as shown, secrets masked), the same tag the
/// Parquet `append` names its files with, so a rerun with the same vars is
/// recognised and one with other vars is not.
pub fn app_id(run: &RunInfo, table: &str) -> String {
    format!(
        "crmflow/{}/{table}/{}",
        run.pipeline,
        super::publish::append_tag(run, table)
    )
}

/// Commits a staged sink to its Delta table, then removes the staging.
///
/// # Errors
/// A message: the location holds files but no Delta table, a schema or
/// partitioning the table does not accept, the commit failed.
pub async fn commit(engine: &Engine, staged: &Staged, run: &RunInfo) -> Result<Committed, String> {
    let result = write(engine, staged, run).await;
    if result.is_ok() {
        remove_prefix(staged.store.as_ref(), &staged.staging).await;
    }
    result
}

/// Checks, before anything is published, that the table at the sink's
/// location takes the staged output: no Parquet files but no Delta log
/// there, the same partitioning and columns outside `overwrite`.
///
/// # Errors
/// A message naming the table's location and the column.
pub async fn preflight(staged: &Staged) -> Result<(), String> {
    opened(staged).await.map(|_| ())
}

/// The sink's table, loaded (`true`) or not there yet, checked as in
/// [`preflight`].
async fn opened(staged: &Staged) -> Result<(DeltaTable, bool), String> {
    let sink = &staged.sink;
    let loc = sink.location.as_dir();
    let mut table = table_at(staged.store.clone(), &loc, &sink.table)?;
    let exists = crate::sources::delta::has_log(staged.store.as_ref(), &loc).await?;
    if exists {
        table
            .load()
            .await
            .map_err(|e| format!("cannot read the Delta table at {loc}: {e}"))?;
    } else {
        let visible = crate::storage::list_visible(staged.store.as_ref(), &loc)
            .await
            .unwrap_or_default();
        if let Some((first, _)) = visible.first() {
            return Err(format!(
                "{loc} holds files ({first}, ...) but no Delta table (no _delta_log/); remove them or write elsewhere"
            ));
        }
        return Ok((table, false));
    }
    if sink.mode != SinkMode::Overwrite {
        let state = table.snapshot().map_err(|e| e.to_string())?;
        let parts = state.metadata().partition_columns();
        if *parts != sink.partition_by {
            return Err(format!(
                "the Delta table at {loc} is partitioned by [{}], the sink by [{}]; mode {} keeps the table's partitioning (mode overwrite replaces it)",
                parts.join(", "),
                sink.partition_by.join(", "),
                sink.mode.as_str()
            ));
        }
        same_columns(&state.snapshot().arrow_schema(), &staged.schema, sink.mode, &loc)?;
    }
    Ok((table, true))
}

async fn write(engine: &Engine, staged: &Staged, run: &RunInfo) -> Result<Committed, String> {
    let sink = &staged.sink;
    let loc = sink.location.as_dir();
    let (table, exists) = opened(staged).await?;
    let app = app_id(run, &sink.table);
    if exists && sink.mode == SinkMode::Append {
        let state = table.snapshot().map_err(|e| e.to_string())?;
        let done = state
            .transaction_version(table.log_store().as_ref(), &app)
            .await
            .map_err(|e| format!("cannot read the Delta table at {loc}: {e}"))?;
        if done.is_some() {
            return Ok(Committed {
                version: table.version().unwrap_or(0),
                skipped: true,
            });
        }
    }
    let df = staged_frame(engine, staged).await?;
    let predicate = if sink.mode == SinkMode::OverwritePartitions {
        match partitions_present(df.clone(), &sink.partition_by).await? {
            Some(p) => Some(p),
            // No rows: no partition to replace.
            None if exists => {
                return Ok(Committed {
                    version: table.version().unwrap_or(0),
                    skipped: true,
                });
            }
            None => None,
        }
    } else {
        None
    };
    let mut props = CommitProperties::default().with_metadata([
        ("crmflow.run_id".to_string(), serde_json::json!(run.run_id)),
        ("crmflow.pipeline".to_string(), serde_json::json!(run.pipeline)),
        ("crmflow.vars".to_string(), serde_json::json!(run.vars)),
    ]);
    if sink.mode == SinkMode::Append {
        props = props.with_application_transaction(Transaction::new(&app, 1));
    }
    let layout = &sink.layout;
    let mut writer = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(|e| e.to_string())?))
        .set_max_row_group_row_count(Some(layout.row_group_rows))
        .set_created_by(format!(
            "crmflow {} (delta-rs {})",
            env!("CARGO_PKG_VERSION"),
            deltalake_core::crate_version()
        ));
    for c in &layout.bloom_filters {
        writer = writer.set_column_bloom_filter_enabled(c.as_str().into(), true);
    }
    let ctx = engine.context();
    let mut builder = table
        .write(Vec::<RecordBatch>::new())
        .with_input_plan(df.logical_plan().clone())
        // delta-rs plans its write with its own extension nodes.
        .with_session_state(Arc::new(
            SessionStateBuilder::new_from_existing(ctx.state())
                .with_query_planner(DeltaPlanner::new())
                .build(),
        ))
        .with_partition_columns(sink.partition_by.clone())
        .with_writer_properties(writer.build())
        .with_target_file_size(std::num::NonZeroU64::new(layout.target_file_size))
        .with_commit_properties(props)
        .with_table_name(sink.table.clone());
    builder = match sink.mode {
        SinkMode::Overwrite => builder
            .with_save_mode(SaveMode::Overwrite)
            .with_schema_mode(SchemaMode::Overwrite),
        SinkMode::OverwritePartitions => {
            let b = builder.with_save_mode(SaveMode::Overwrite);
            match predicate {
                Some(p) => b.with_replace_where(p),
                None => b,
            }
        }
        SinkMode::Append => builder.with_save_mode(SaveMode::Append),
    };
    let table: DeltaTable = builder
        .await
        .map_err(|e| format!("committing to the Delta table at {loc} failed: {e}"))?;
    Ok(Committed {
        version: table.version().unwrap_or(0),
        skipped: false,
    })
}

/// `append` and `overwrite_partitions` write the table's columns, with its
/// types: a column added, missing or of another type is refused.
fn same_columns(table: &Schema, staged: &Schema, mode: SinkMode, loc: &Location) -> Result<(), String> {
    let hint = format!(
        "mode {} does not change the table's schema (mode overwrite replaces it)",
        mode.as_str()
    );
    for f in staged.fields() {
        match table.field_with_name(f.name()) {
            Err(_) => {
                return Err(format!(
                    "column \"{}\" is not in the Delta table at {loc} (columns: {}); {hint}",
                    f.name(),
                    crate::checks::column_list(table)
                ));
            }
            Ok(t) if t.data_type() != f.data_type() => {
                return Err(format!(
                    "column \"{}\" is {} in the Delta table at {loc} and {} here; {hint}",
                    f.name(),
                    t.data_type(),
                    f.data_type()
                ));
            }
            Ok(_) => {}
        }
    }
    if let Some(t) = table
        .fields()
        .iter()
        .find(|t| staged.field_with_name(t.name()).is_err())
    {
        return Err(format!(
            "column \"{}\" of the Delta table at {loc} is missing here; {hint}",
            t.name()
        ));
    }
    Ok(())
}

/// The staged files as a frame, the sink's column descriptions as Delta
/// column comments (field metadata `comment`).
async fn staged_frame(engine: &Engine, staged: &Staged) -> Result<DataFrame, String> {
    let ctx = engine.context();
    let listing = crate::sources::list(staged.store.as_ref(), &staged.staging).await?;
    let provider = crate::sources::listing_table(ctx, &listing)
        .await
        .map_err(|e| e.to_string())?;
    let df = ctx.read_table(Arc::new(provider)).map_err(|e| e.to_string())?;
    let descriptions = &staged.sink.layout.descriptions;
    let exprs: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let name = f.name();
            let md: HashMap<String, String> = descriptions
                .get(name)
                .map(|d| HashMap::from([("comment".to_string(), d.clone())]))
                .unwrap_or_default();
            // An empty partition value is NULL, as in Hive and Spark (and
            // the Parquet sinks): delta-rs would keep '' and NULL apart,
            // which Delta readers then read differently.
            let value = if staged.sink.partition_by.contains(name)
                && matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
            {
                when(
                    column(name).eq(lit("")),
                    lit(ScalarValue::Null)
                        .cast_to(f.data_type(), df.schema())
                        .map_err(|e| e.to_string())?,
                )
                .otherwise(column(name))
                .map_err(|e| e.to_string())?
            } else {
                column(name)
            };
            Ok(value.alias_with_metadata(name, Some(md.into())))
        })
        .collect::<Result<_, String>>()?;
    df.select(exprs).map_err(|e| e.to_string())
}

/// `replaceWhere` over the partition values in `df`: an OR of one
/// conjunction per distinct value tuple (`IS NULL` for NULL); `None` when
/// `df` has no rows.
async fn partitions_present(df: DataFrame, cols: &[String]) -> Result<Option<Expr>, String> {
    let names: Vec<&str> = cols.iter().map(String::as_str).collect();
    let batches = df
        .select_columns(&names)
        .and_then(|d| d.distinct())
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let mut seen = BTreeMap::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            let mut conj: Option<Expr> = None;
            let mut key = Vec::new();
            for (j, name) in cols.iter().enumerate() {
                let v = ScalarValue::try_from_array(b.column(j), r).map_err(|e| e.to_string())?;
                key.push(format!("{v:?}"));
                let e = if v.is_null() {
                    column(name).is_null()
                } else {
                    column(name).eq(lit(v))
                };
                conj = Some(match conj {
                    None => e,
                    Some(c) => c.and(e),
                });
            }
            if let Some(c) = conj {
                seen.insert(key, c);
            }
        }
    }
    Ok(seen.into_values().reduce(|a, b| a.or(b)))
}
