//! Curated Delta Lake tables: opening them on the project's stores, reading them through
//! DataFusion, publishing a job's result atomically (one Delta commit) with `overwrite` or
//! `overwrite_partitions`, and appending to the tables that only grow.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::execution::memory_pool::MemoryLimit;
use datafusion::logical_expr::{Expr, LogicalPlan, col, lit};
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::delta_datafusion::{DeltaScanConfig, DeltaScanNext};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use url::Url;

use crate::error::{Error, Result};
use crate::project::spec::{FileLayout, WriteMode};
use crate::store::Stores;

/// Location of curated table `name` under the curated root.
pub fn table_url(curated_root: &Url, name: &str) -> Result<Url> {
    curated_root
        .join(&format!("{name}/"))
        .map_err(|e| Error::Storage {
            location: curated_root.to_string(),
            message: format!("cannot place table `{name}`: {e}"),
            source: Some(Box::new(e)),
        })
}

/// An unloaded handle on the table at `url`, served by the project's store for that bucket.
pub fn handle(stores: &Stores, url: &Url) -> Result<DeltaTable> {
    crate::store::register_delta_handlers();
    let (store, _) = stores.store_for(url)?;
    if url.scheme() == "file"
        && let Ok(path) = url.to_file_path()
    {
        std::fs::create_dir_all(&path).map_err(|e| Error::Storage {
            location: url.to_string(),
            message: format!("cannot create directory: {e}"),
            source: Some(Box::new(e)),
        })?;
    }
    DeltaTableBuilder::from_url(url.clone())
        .map_err(|e| delta_err(url, e))?
        .with_storage_backend(store, url.clone())
        .build()
        .map_err(|e| delta_err(url, e))
}

fn delta_err(url: &Url, e: DeltaTableError) -> Error {
    Error::storage(url, e)
}

/// Open the latest version of the table at `url`; `None` when no table has been published there.
pub async fn open(stores: &Stores, url: &Url) -> Result<Option<DeltaTable>> {
    if !has_log(stores, url).await? {
        return Ok(None);
    }
    let mut table = handle(stores, url)?;
    match table.load().await {
        Ok(()) => Ok(Some(table)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(delta_err(url, e)),
    }
}

/// Whether a Delta log exists at `url` (any object under `_delta_log/`).
pub async fn has_log(stores: &Stores, url: &Url) -> Result<bool> {
    use futures::StreamExt;
    let (store, path) = stores.store_for(url)?;
    let log = path.clone().join("_delta_log");
    match store.list(Some(&log)).next().await {
        None => Ok(false),
        Some(Ok(_)) => Ok(true),
        Some(Err(object_store::Error::NotFound { .. })) => Ok(false),
        Some(Err(e)) => Err(Error::storage(url, e)),
    }
}

/// Open a specific version (time travel).
pub async fn open_version(stores: &Stores, url: &Url, version: i64) -> Result<DeltaTable> {
    let mut table = handle(stores, url)?;
    table
        .load_version(version.max(0) as u64)
        .await
        .map_err(|e| delta_err(url, e))?;
    Ok(table)
}

/// A DataFusion provider reading the table's loaded version, read-only. Partition columns keep
/// their declared type (delta-rs would wrap a string partition column in a dictionary, which a
/// reader's `UNION`, join key or incremental time column would then carry).
pub async fn provider(table: &DeltaTable) -> Result<Arc<dyn TableProvider>> {
    let url = table.table_url().clone();
    let snapshot = table.snapshot().map_err(|e| delta_err(&url, e))?;
    // Read strings as plain Utf8, whatever the session's `schema_force_view_types` (which raw
    // sources follow): read as views, the curated strings made `run --all` at 10M orders slower
    // (106.3 s against 99.2 s). Keep Delta's default of pushing filters into the Parquet scan.
    let mut config = DeltaScanConfig::new()
        .with_wrap_partition_values(false)
        .with_parquet_pushdown(true);
    config.schema_force_view_types = false;
    let scan = DeltaScanNext::new(snapshot.snapshot().clone(), config)
        .map_err(|e| Error::storage(&url, e))?;
    Ok(Arc::new(DeltaReader {
        scan,
        store: DeltaTable::new(table.log_store()),
    }))
}

/// A Delta scan that registers its table's object store with the reading session first (as
/// delta-rs's own provider does when built with a log store).
#[derive(Debug)]
struct DeltaReader {
    scan: DeltaScanNext,
    /// The table's log store, unloaded: `update_datafusion_session` needs only that.
    store: DeltaTable,
}

#[async_trait::async_trait]
impl TableProvider for DeltaReader {
    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        self.scan.schema()
    }

    fn table_type(&self) -> datafusion::datasource::TableType {
        datafusion::datasource::TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<datafusion::logical_expr::TableProviderFilterPushDown>>
    {
        self.scan.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        session: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        self.store.update_datafusion_session(session)?;
        self.scan.scan(session, projection, filters, limit).await
    }
}

/// A column chunk's dictionary grows to this size at most; past it the chunk goes on in plain
/// encoding. Low-cardinality strings (status, region, carrier, issue) stay dictionary-encoded,
/// while ids, timestamps and amounts stop interning after a few thousand values: at 1M orders
/// `order_experience` was written a quarter faster and 18% smaller than with the 1 MiB default
/// (both at zstd 1; docs/BENCHMARKS.md, "the writer").
pub const DICTIONARY_PAGE_LIMIT: usize = 64 << 10;

/// Rows known to take less memory than this before they are written (a result collected for its
/// checks, a ledger append) are compressed with Snappy instead of zstd. Parquet's writer makes a
/// zstd compressor and decompressor for every column chunk, and each asks the CPU for its
/// features (`cpuid`), which a virtual machine traps: about 49 µs a chunk on the benchmark
/// machine. budget_reconciliation writes 24 months of 20 columns for 62 rows, and those 480 chunks
/// cost 23 ms of its 33 ms write, to save under 1% of a few kilobytes (docs/BENCHMARKS.md).
pub const SMALL_ROWS_BYTES: usize = 1 << 20;

/// The bytes `batches`' rows take, counting only the part of each buffer they use (a few rows
/// sliced from an aggregate's large buffers count as just those rows).
pub fn rows_bytes(batches: &[datafusion::arrow::array::RecordBatch]) -> usize {
    let columns = batches.iter().flat_map(|b| b.columns());
    columns
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(usize::MAX))
        .fold(0, usize::saturating_add)
}

/// Parquet settings for curated files: zstd level 1 (level 3 took over a quarter longer for
/// files 7% smaller), small dictionaries, page statistics.
pub fn writer_properties() -> WriterProperties {
    writer_properties_for(&FileLayout::default(), None)
}

/// `writer_properties` with a job's row group size and bloom filters, for rows of
/// `known_bytes` in memory when that is known before they are written ([`SMALL_ROWS_BYTES`]).
pub fn writer_properties_for(layout: &FileLayout, known_bytes: Option<usize>) -> WriterProperties {
    let compression = match known_bytes {
        Some(bytes) if bytes < SMALL_ROWS_BYTES => Compression::SNAPPY,
        _ => Compression::ZSTD(ZstdLevel::try_new(1).expect("valid zstd level")),
    };
    let mut builder = WriterProperties::builder()
        .set_compression(compression)
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_LIMIT)
        .set_statistics_enabled(EnabledStatistics::Page);
    if let Some(rows) = layout.row_group_rows {
        builder = builder.set_max_row_group_row_count(Some(rows.get()));
    }
    for column in &layout.bloom_filter {
        let path = datafusion::parquet::schema::types::ColumnPath::from(column.as_str());
        builder = builder.set_column_bloom_filter_enabled(path, true);
    }
    builder.build()
}

/// The size at which Delta's writer closes a data file: its default of 100 MiB, or a 128th of a
/// smaller memory limit (at least 8 MiB). The writer keeps each partition's open file in memory,
/// outside DataFusion's pool, and a run of `order_experience` writes 24 month partitions at once.
fn target_file_size(limit: MemoryLimit) -> std::num::NonZeroU64 {
    const DEFAULT: u64 = 100 * 1024 * 1024;
    const SMALLEST: u64 = 8 * 1024 * 1024;
    let bytes = match limit {
        MemoryLimit::Finite(limit) => (limit as u64 / 128).clamp(SMALLEST, DEFAULT),
        MemoryLimit::Infinite | MemoryLimit::Unknown => DEFAULT,
    };
    std::num::NonZeroU64::new(bytes).expect("at least 8 MiB")
}

/// The variable deltalake reads, once per process, for the most writer tasks of a partitioned
/// write: it hashes each row's partition values to one of that many tasks (default: one per core).
pub const CONCURRENT_WRITERS_VAR: &str = "DELTARS_MAX_CONCURRENT_WRITERS";

/// Writer tasks of a partitioned write when the environment does not say: as many as the query's
/// partitions (`default_target_partitions`, at least 8). With one task per core, two cores split
/// `order_experience`'s 24 months by a hash, unevenly, and the core whose months are done first
/// waits; with 8 tasks it takes the next. At 1M orders, order_experience alone took 1.40 s
/// (median of 4) with 2 tasks and 1.32 s with 8 (docs/BENCHMARKS.md). Each month still goes to
/// one task, so the files written are the same.
pub fn default_concurrent_writers(cores: usize) -> usize {
    crate::project::config::default_target_partitions(cores)
}

/// What a publish should do.
pub struct Publish<'a> {
    /// Table name (for messages and the Delta metadata).
    pub table: &'a str,
    pub url: &'a Url,
    pub mode: WriteMode,
    pub partition_by: &'a [String],
    /// For `overwrite_partitions`: the partition values this run produced, one row per partition.
    pub partitions: Vec<Vec<datafusion::common::ScalarValue>>,
    pub description: &'a str,
    /// Table properties set when the table is created (retention of history).
    pub configuration: HashMap<String, Option<String>>,
    /// Stored with the commit (run id, job).
    pub commit_metadata: HashMap<String, serde_json::Value>,
    /// A fenced publish (a daemon's slot run): commit onto exactly this version (`Some(None)`:
    /// onto no table), failing without retry if anyone committed since.
    pub base_version: Option<Option<i64>>,
    /// Replace only the rows matching this predicate (an incremental job's intervals), which
    /// every written row must match; the table's other rows stay.
    pub replace_where: Option<Expr>,
    /// Row group size and bloom filters of the written files (the rows come in order already).
    pub file_layout: &'a FileLayout,
    /// The rows' size in memory, when they were collected before the write (a job with checks).
    pub known_bytes: Option<usize>,
}

/// Commits between checkpoints of the tables retention creates (Delta's default is 100): an
/// incremental job or the run ledger commits every run, and a reader replays the JSON commits
/// since the last checkpoint.
pub const CHECKPOINT_INTERVAL: u32 = 10;

/// Commit metadata key of the cron slot a daemon's run published (RFC 3339).
pub const SLOT_KEY: &str = "retention.slot";
/// Commit metadata key of that run's lease token.
pub const ATTEMPT_KEY: &str = "retention.attempt";

/// Publish `plan`'s rows to the table in one Delta commit; returns the new version.
/// A failure at any point leaves the previous version as the table's latest.
pub async fn publish(
    stores: &Stores,
    session: Arc<dyn datafusion::catalog::Session>,
    plan: LogicalPlan,
    p: Publish<'_>,
) -> Result<Published> {
    let table = match p.base_version {
        Some(Some(version)) => open_version(stores, p.url, version).await?,
        Some(None) => handle(stores, p.url)?,
        None => match open(stores, p.url).await? {
            Some(t) => t,
            None => handle(stores, p.url)?,
        },
    };
    publish_to(table, session, plan, p).await
}

/// The slot and lease token the table's latest commit was published for, if a daemon's run
/// published it.
pub async fn last_slot(table: &DeltaTable) -> Option<(chrono::DateTime<chrono::Utc>, u64)> {
    use futures::StreamExt;
    let info = table.history(Some(1)).next().await?.ok()?.info;
    let slot = info.get(SLOT_KEY)?.as_str()?;
    let slot = chrono::DateTime::parse_from_rfc3339(slot).ok()?.to_utc();
    Some((slot, info.get(ATTEMPT_KEY)?.as_u64()?))
}

/// Publish onto an already-loaded `table`. Delta's conflict check runs against the version
/// `table` was loaded at: if someone else committed since, the write fails cleanly and both their
/// commit and the previous versions stay intact.
pub async fn publish_to(
    table: DeltaTable,
    session: Arc<dyn datafusion::catalog::Session>,
    plan: LogicalPlan,
    p: Publish<'_>,
) -> Result<Published> {
    let fail = |message: String| Error::Publish {
        table: p.table.to_string(),
        location: p.url.to_string(),
        message,
        source: None,
    };
    let failed = |e: DeltaTableError| Error::Publish {
        table: p.table.to_string(),
        location: p.url.to_string(),
        message: e.to_string(),
        source: Some(Box::new(e)),
    };
    let current = table.version().map(|v| v as i64);
    let exists = current.is_some();
    let target_file_size = target_file_size(session.runtime_env().memory_pool.memory_limit());
    let mut write = table
        .write(vec![])
        .with_input_plan(plan)
        .with_session_state(session)
        .with_target_file_size(Some(target_file_size))
        .with_writer_properties(writer_properties_for(p.file_layout, p.known_bytes))
        .with_save_mode(SaveMode::Overwrite)
        .with_commit_properties(commit_properties(&p));
    if !p.partition_by.is_empty() {
        write = write.with_partition_columns(p.partition_by.to_vec());
    }
    if !exists {
        write = write
            .with_table_name(p.table)
            .with_description(p.description)
            .with_configuration(p.configuration.clone());
    }
    let write = match (&p.replace_where, p.mode) {
        // An incremental job's intervals.
        (Some(pred), _) if exists => write.with_replace_where(pred.clone()),
        // Full replace; the schema may change with the SQL.
        (Some(_), _) | (None, WriteMode::Overwrite) => {
            write.with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite)
        }
        (None, WriteMode::OverwritePartitions) if exists => {
            match partition_predicate(p.partition_by, &p.partitions) {
                Some(pred) => write.with_replace_where(pred),
                None => {
                    // Nothing produced: nothing to replace. Keep the table as it is.
                    let version = current.ok_or_else(|| fail("table has no version".into()))?;
                    return Ok(Published {
                        version,
                        rows_written: 0,
                    });
                }
            }
        }
        (None, WriteMode::OverwritePartitions) => write,
    };
    let written = write.await.map_err(failed)?;
    let version = written
        .version()
        .map(|v| v as i64)
        .ok_or_else(|| fail("commit returned no version".into()))?;
    Ok(Published {
        version,
        rows_written: rows_in_last_commit(&written).await,
    })
}

/// The commit's metadata; a fenced publish never retries onto a newer version.
fn commit_properties(p: &Publish<'_>) -> CommitProperties {
    let props = CommitProperties::default().with_metadata(p.commit_metadata.clone());
    match p.base_version {
        Some(_) => props.with_max_retries(0),
        None => props,
    }
}

/// Append `batches` to the engine-kept table `name` under the curated root in one Delta commit,
/// creating it if needed; new nullable columns are merged into an older table's schema. Returns
/// the new version. Used for the run ledger and the month-close tables, which only ever grow.
pub async fn append(
    stores: &Stores,
    curated_root: &Url,
    name: &str,
    batches: Vec<datafusion::arrow::array::RecordBatch>,
    partition_by: &[&str],
    description: &str,
) -> Result<i64> {
    let url = table_url(curated_root, name)?;
    let table = match open(stores, &url).await? {
        Some(t) => t,
        None => handle(stores, &url)?,
    };
    let fail = |message: String| Error::Publish {
        table: name.to_string(),
        location: url.to_string(),
        message,
        source: None,
    };
    let failed = |e: DeltaTableError| Error::Publish {
        table: name.to_string(),
        location: url.to_string(),
        message: e.to_string(),
        source: Some(Box::new(e)),
    };
    let exists = table.version().is_some();
    let bytes = rows_bytes(&batches);
    let mut write = table
        .write(batches)
        .with_save_mode(SaveMode::Append)
        .with_writer_properties(writer_properties_for(&FileLayout::default(), Some(bytes)))
        .with_schema_mode(deltalake::operations::write::SchemaMode::Merge);
    if !partition_by.is_empty() {
        write = write.with_partition_columns(partition_by.iter().map(|c| c.to_string()));
    }
    if !exists {
        write = write
            .with_table_name(name)
            .with_description(description)
            .with_configuration([(
                "delta.checkpointInterval",
                Some(CHECKPOINT_INTERVAL.to_string()),
            )]);
    }
    let written = write.await.map_err(failed)?;
    written
        .version()
        .map(|v| v as i64)
        .ok_or_else(|| fail("commit returned no version".into()))
}

/// Rewrite the small files of the engine-kept table `name` (one per append) into few large ones,
/// in one commit; older versions stay readable until vacuumed.
pub async fn compact(stores: &Stores, curated_root: &Url, name: &str) -> Result<()> {
    let url = table_url(curated_root, name)?;
    let Some(table) = open(stores, &url).await? else {
        return Ok(());
    };
    table
        .optimize()
        .with_writer_properties(writer_properties())
        .await
        .map_err(|e| delta_err(&url, e))?;
    Ok(())
}

/// What a publish committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub version: i64,
    /// Rows the commit added, from the commit's own metrics (0 when nothing was written).
    pub rows_written: i64,
}

/// `num_added_rows` of the loaded version's commit (Delta's `operationMetrics`).
async fn rows_in_last_commit(table: &DeltaTable) -> i64 {
    use futures::StreamExt;
    let mut history = table.history(Some(1));
    match history.next().await {
        Some(Ok(info)) => info
            .info
            .get("operationMetrics")
            .and_then(|m| m.get("num_added_rows"))
            .and_then(|n| n.as_i64())
            .unwrap_or(0),
        _ => 0,
    }
}

/// `(p1 = v AND p2 = w) OR ...` over the produced partitions; `None` when there are none.
pub fn partition_predicate(
    columns: &[String],
    partitions: &[Vec<datafusion::common::ScalarValue>],
) -> Option<Expr> {
    partitions
        .iter()
        .map(|values| {
            columns
                .iter()
                .zip(values)
                .map(|(c, v)| {
                    if v.is_null() {
                        col(c.as_str()).is_null()
                    } else {
                        col(c.as_str()).eq(lit(v.clone()))
                    }
                })
                .reduce(Expr::and)
                .expect("at least one partition column")
        })
        .reduce(Expr::or)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::common::ScalarValue;

    #[test]
    fn predicate_covers_each_partition() {
        let cols = vec!["month".to_string(), "region".to_string()];
        let parts = vec![
            vec![ScalarValue::from("2026-01"), ScalarValue::from("eu")],
            vec![ScalarValue::from("2026-02"), ScalarValue::Utf8(None)],
        ];
        let e = partition_predicate(&cols, &parts).unwrap().to_string();
        assert_eq!(
            e,
            "month = Utf8(\"2026-01\") AND region = Utf8(\"eu\") OR month = Utf8(\"2026-02\") AND region IS NULL"
        );
        assert!(partition_predicate(&cols, &[]).is_none());
    }

    #[test]
    fn table_urls_nest_under_root() {
        let root = Url::parse("s3://bucket/curated/").unwrap();
        assert_eq!(
            table_url(&root, "orders").unwrap().as_str(),
            "s3://bucket/curated/orders/"
        );
    }

    /// Rows known to be small are compressed with Snappy; rows of unknown or larger size with zstd.
    #[test]
    fn small_rows_known_before_the_write_are_compressed_with_snappy() {
        use datafusion::parquet::schema::types::ColumnPath;
        let codec = |known| {
            writer_properties_for(&FileLayout::default(), known)
                .compression(&ColumnPath::from("amount"))
        };
        let zstd = Compression::ZSTD(ZstdLevel::try_new(1).unwrap());
        assert_eq!(codec(Some(62 * 200)), Compression::SNAPPY);
        assert_eq!(codec(Some(SMALL_ROWS_BYTES - 1)), Compression::SNAPPY);
        assert_eq!(codec(Some(SMALL_ROWS_BYTES)), zstd);
        assert_eq!(codec(None), zstd);
        assert_eq!(
            writer_properties().compression(&ColumnPath::from("x")),
            zstd
        );
        // 62 rows sliced from an aggregate's buffer of 100,000 count as 62 rows.
        use datafusion::arrow::array::{Int64Array, RecordBatch};
        let ids: Arc<dyn datafusion::arrow::array::Array> =
            Arc::new(Int64Array::from_iter_values(0..100_000));
        let batch = RecordBatch::try_from_iter([("id", ids)]).unwrap();
        assert_eq!(rows_bytes(&[batch.slice(10, 62)]), 62 * 8);
        assert!(batch.slice(10, 62).get_array_memory_size() >= 800_000);
    }

    /// Low-cardinality strings stay dictionary-encoded; a column of unique ids stops growing its
    /// dictionary at the limit and goes on in plain encoding.
    #[test]
    fn unique_ids_fall_back_to_plain_and_a_status_stays_a_dictionary() {
        use datafusion::arrow::array::{ArrayRef, StringArray};
        use datafusion::arrow::record_batch::RecordBatch;
        use datafusion::parquet::arrow::ArrowWriter;
        use datafusion::parquet::basic::Encoding;
        use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
        let rows = 20_000;
        let ids: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..rows).map(|i| format!("order-{i:08}")),
        ));
        let statuses = ["delivered", "cancelled", "returned"];
        let status: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..rows).map(|i| statuses[i % 3]),
        ));
        let batch = RecordBatch::try_from_iter([("order_id", ids), ("status", status)]).unwrap();
        let mut bytes = Vec::new();
        let mut w =
            ArrowWriter::try_new(&mut bytes, batch.schema(), Some(writer_properties())).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
        let chunk = |i: usize| reader.metadata().row_group(0).column(i).clone();
        // 20,000 ids of 14 bytes (plus a length each) need 350 KB of dictionary.
        let id_pages = chunk(0).page_encoding_stats_mask().cloned().unwrap();
        assert!(id_pages.is_set(Encoding::PLAIN), "{id_pages:?}");
        assert!(id_pages.is_set(Encoding::RLE_DICTIONARY), "{id_pages:?}");
        let status_pages = chunk(1).page_encoding_stats_mask().cloned().unwrap();
        assert!(
            status_pages.is_only(Encoding::RLE_DICTIONARY),
            "{status_pages:?}"
        );
        assert!(matches!(chunk(0).compression(), Compression::ZSTD(_)));
    }
}
