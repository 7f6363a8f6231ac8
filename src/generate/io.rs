//! Parquet and object_store: the writer properties of the three tables,
//! writing one table of a chunk as one Parquet object (row group by row
//! group, through object_store's buffered writer), and clearing stale part
//! files before a run.
//!
//! The driver in [`super`] calls these per chunk, in chunk order.

use std::sync::Arc;

use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::{Compression, Encoding, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;
use futures::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::batch::Chunk;
use super::schema::table_schema;
use super::{GenerateError, ROW_GROUP_ROWS};

/// Deletes every `*.parquet` object under `dir` (recursively), so that a
/// rerun replaces rather than mixes.
pub(super) async fn delete_parquet_under(store: &dyn ObjectStore, dir: &Path) -> Result<(), GenerateError> {
    let listed: Vec<_> = match store.list(Some(dir)).try_collect().await {
        Ok(v) => v,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(source) => {
            return Err(GenerateError::List {
                path: dir.to_string(),
                source,
            });
        }
    };
    let mut stale: Vec<Path> = listed
        .into_iter()
        .map(|m| m.location)
        .filter(|p| p.as_ref().ends_with(".parquet"))
        .collect();
    stale.sort();
    for path in stale {
        tracing::debug!(path = %path, "deleting stale part file");
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => {
                return Err(GenerateError::Delete {
                    path: path.to_string(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Writer properties of the three tables, indexed like [`super::TABLES`].
pub(super) fn table_props() -> [WriterProperties; 3] {
    [
        writer_props(&["customer_id"]),
        writer_props(&["transaction_id", "customer_id", "transaction_ts"]),
        writer_props(&["interaction_id", "customer_id", "interaction_ts"]),
    ]
}

/// Properties of every part file: zstd, page statistics, row groups of
/// [`ROW_GROUP_ROWS`], and delta encoding for `delta_columns`.
fn writer_props(delta_columns: &[&str]) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    // Ids and timestamps are (mostly) increasing: delta encoding is smaller
    // and faster than a dictionary that would overflow anyway.
    for c in delta_columns {
        let col = ColumnPath::from(*c);
        b = b
            .set_column_dictionary_enabled(col.clone(), false)
            .set_column_encoding(col, Encoding::DELTA_BINARY_PACKED);
    }
    b.build()
}

/// Writes table `t` (index into [`super::TABLES`]) of `chunk` to `path`, returning
/// the row count. `id_base` is the global id of the row before the first.
pub(super) async fn write_table(
    store: Arc<dyn ObjectStore>,
    path: Path,
    props: WriterProperties,
    chunk: &Chunk,
    t: usize,
    id_base: u64,
) -> Result<u64, GenerateError> {
    let schema = table_schema(t);
    let rows = chunk.rows(t);
    let werr = |source| GenerateError::Write {
        path: path.to_string(),
        source,
    };
    // parquet 59.2 deprecated `ParquetObjectWriter` in favour of passing
    // object_store's `BufWriter` (an `AsyncWrite`) to `AsyncArrowWriter`
    // directly; small files go up with one put, large ones as multipart.
    let sink = BufWriter::new(store, path.clone());
    let mut writer = AsyncArrowWriter::try_new(sink, Arc::clone(&schema), Some(props)).map_err(werr)?;
    let mut start = 0;
    while start < rows {
        let end = (start + ROW_GROUP_ROWS).min(rows);
        let batch = chunk
            .batch(t, &schema, start..end, id_base)
            .map_err(|source| GenerateError::Arrow {
                path: path.to_string(),
                source,
            })?;
        writer.write(&batch).await.map_err(werr)?;
        start = end;
    }
    writer.close().await.map_err(werr)?;
    Ok(rows as u64)
}
