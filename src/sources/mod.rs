//! Sources: a Parquet file or a directory of Parquet files, registered with
//! DataFusion as a listing table under the source's name.
//!
//! The directory is listed once through `object_store`, so that a missing
//! path, an empty directory or a stray non-Parquet file is reported with the
//! source's name and the offending path before DataFusion sees it. Hive
//! `key=value/` directories become (string) partition columns. Registering
//! reads Parquet footers (for the schema), never rows. Delta Lake tables
//! (`format: delta`) are read through their log ([`delta`]).

pub mod delta;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::prelude::SessionContext;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::checks::CheckSpec;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::storage::{self, Location};

/// A resolved source.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub location: Location,
    /// A directory of Parquet files or a Delta table ([`delta`]).
    pub format: crate::config::Format,
    /// `format: delta`: the version or time to read the table as of.
    pub as_of: Option<delta::AsOf>,
    pub checks: Vec<CheckSpec>,
    /// `quarantine:` (a directory): rows failing the row-level checks go
    /// there instead of downstream; published as the sink
    /// `<name>_quarantine` of the plan.
    pub quarantine: Option<Location>,
}

/// What listing a location found.
#[derive(Debug)]
pub struct Listing {
    /// The table's root (a directory, or the single file).
    pub location: Location,
    pub files: Vec<ObjectMeta>,
    /// Hive partition keys, outermost first.
    pub partition_cols: Vec<String>,
}

/// Registers `source` as a table and returns its schema.
///
/// # Errors
/// [`Error::Source`] naming the source and the path: nothing there, no
/// Parquet files, a file that is not Parquet, inconsistent partitions.
pub async fn register(engine: &Engine, source: &Source) -> Result<SchemaRef> {
    let ctx = engine.context();
    let err = |url: &str, message: String| Error::source(&source.name, url, message);
    let shown = source.location.to_string();
    let store = engine.register_store(&source.location).map_err(|m| err(&shown, m))?;
    if source.format == crate::config::Format::Delta {
        let table = delta::provider(engine, store, source)
            .await
            .map_err(|m| err(&shown, m))?;
        let schema = table.schema();
        ctx.register_table(source.name.as_str(), table)
            .map_err(|e| err(&shown, e.to_string()))?;
        return Ok(schema);
    }
    let listing = list(store.as_ref(), &source.location)
        .await
        .map_err(|m| err(&shown, m))?;
    let table = listing_table(ctx, &listing).await;
    let table = match table {
        Ok(t) => t,
        Err(e) => {
            // DataFusion's message does not say which file is broken: find it.
            let message = match find_bad_file(store.clone(), &listing).await {
                Some((path, why)) => format!("{path} is not a readable Parquet file: {why}"),
                None => e.to_string(),
            };
            return Err(err(&shown, message));
        }
    };
    let table = hive_nulls(ctx, table, &listing.partition_cols).map_err(|e| err(&shown, e.to_string()))?;
    let schema = table.schema();
    ctx.register_table(source.name.as_str(), table)
        .map_err(|e| err(&shown, e.to_string()))?;
    Ok(schema)
}

/// A listing table over the files found (schema from the footers).
///
/// # Errors
/// DataFusion's, e.g. a corrupt footer.
pub async fn listing_table(ctx: &SessionContext, listing: &Listing) -> datafusion::error::Result<ListingTable> {
    let url = if listing.location.is_dir() {
        // DataFusion lists the directory again when it scans: the glob keeps
        // it to the files `list` found, leaving out names that start with `.`
        // or `_` (staging, `_SUCCESS`, hidden copies), as Spark and Hive do.
        // It is matched against the first path part that is not a
        // `key=value` partition directory, i.e. the file name.
        let glob =
            glob::Pattern::new("[!._]*").map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        ListingTableUrl::try_new(listing.location.url().clone(), Some(glob))?
    } else {
        ListingTableUrl::parse(listing.location.url().as_str())?
    };
    // The session's Parquet options.
    let format = ParquetFormat::default().with_options(ctx.state().table_options().parquet.clone());
    let mut options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
    if !listing.partition_cols.is_empty() {
        options = options.with_table_partition_cols(
            listing
                .partition_cols
                .iter()
                .map(|c| (c.clone(), DataType::Utf8))
                .collect(),
        );
    }
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .infer_schema(&ctx.state())
        .await?;
    ListingTable::try_new(config)
}

/// The table with Hive's NULL partition value, `__HIVE_DEFAULT_PARTITION__`,
/// read as NULL (DataFusion already percent-decodes the directory values,
/// which for Hive's escaping is its unescaping).
fn hive_nulls(
    ctx: &SessionContext,
    table: ListingTable,
    partition_cols: &[String],
) -> datafusion::error::Result<Arc<dyn TableProvider>> {
    use datafusion::logical_expr::{Expr, lit, when};
    let table: Arc<dyn TableProvider> = Arc::new(table);
    if partition_cols.is_empty() {
        return Ok(table);
    }
    let df = ctx.read_table(table)?;
    let exprs: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let c = crate::engine::expr::column(f.name());
            if partition_cols.contains(f.name()) {
                when(
                    c.clone().eq(lit(crate::sinks::layout::HIVE_DEFAULT_PARTITION)),
                    lit(datafusion::common::ScalarValue::Utf8(None)),
                )
                .otherwise(c)
                .map(|e| e.alias(f.name()))
            } else {
                Ok(c)
            }
        })
        .collect::<datafusion::error::Result<_>>()?;
    let plan = df.select(exprs)?.into_unoptimized_plan();
    Ok(Arc::new(datafusion::catalog::view::ViewTable::new(plan, None)))
}

/// Lists the Parquet files of a location (a file or a directory).
///
/// Files and directories whose name starts with `.` or `_` (`_SUCCESS`,
/// staging directories) are ignored, as Spark and Hive do.
///
/// # Errors
/// A message naming the path: nothing there, no Parquet files, a file that
/// is not Parquet, partition directories that disagree.
pub async fn list(store: &dyn ObjectStore, location: &Location) -> std::result::Result<Listing, String> {
    let path = location.path();
    if !location.is_dir() {
        match store.head(&path).await {
            Ok(meta) => {
                if !meta.location.as_ref().ends_with(".parquet") {
                    return Err(format!("{location} is not a Parquet file (expected a .parquet name)"));
                }
                return Ok(Listing {
                    location: location.clone(),
                    files: vec![meta],
                    partition_cols: vec![],
                });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(format!("cannot read {location}: {e}")),
        }
    }
    let dir = location.as_dir();
    let mut files = Vec::new();
    let mut partition_cols: Option<Vec<String>> = None;
    for (rel, meta) in storage::list_visible(store, &dir).await? {
        let rel: Vec<&str> = rel.split('/').collect();
        let name = rel.last().copied().unwrap_or_default();
        if !name.ends_with(".parquet") {
            return Err(format!(
                "{} is not a Parquet file (expected only *.parquet files below {dir})",
                dir.join(&rel.join("/"))
            ));
        }
        let keys: Vec<String> = rel[..rel.len() - 1]
            .iter()
            .filter_map(|p| p.split_once('=').map(|(k, _)| k.to_string()))
            .collect();
        match &partition_cols {
            None => partition_cols = Some(keys),
            Some(k) if *k == keys => {}
            Some(k) => {
                return Err(format!(
                    "partition directories disagree: {} has keys [{}], others [{}]",
                    dir.join(&rel.join("/")),
                    keys.join(", "),
                    k.join(", ")
                ));
            }
        }
        files.push(meta);
    }
    if files.is_empty() {
        let exists = location.local_path().map(|p| p.exists()).unwrap_or(true);
        return Err(if exists {
            format!("no Parquet files found in {dir}")
        } else {
            format!("{} does not exist", location)
        });
    }
    Ok(Listing {
        location: dir,
        files,
        partition_cols: partition_cols.unwrap_or_default(),
    })
}

/// The first file whose footer cannot be read, with the reason.
async fn find_bad_file(store: Arc<dyn ObjectStore>, listing: &Listing) -> Option<(String, String)> {
    for meta in &listing.files {
        if let Err(e) = DFParquetMetadata::new(store.as_ref(), meta).fetch_metadata().await {
            let shown = match listing.location.local_path() {
                Some(_) => format!("/{}", meta.location),
                None => format!("{}{}", listing.location.store_url(), meta.location),
            };
            return Some((shown, e.to_string()));
        }
    }
    None
}
