//! Source contracts checked against the files: every CSV value when a run opens the source, and
//! each Parquet footer's schema and null counts when a scan first reads the file, naming the first
//! file (and line) that breaks the contract; the listing table that reads them has the contract's
//! columns.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::listing::helpers::{expr_applicable_for_cols, pruned_partition_list};
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::physical_plan::ExecutionPlan;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStoreExt};

use crate::error::{Error, Result};
use crate::project::sources::{Column, Source, SourceFormat, type_matches};

fn contract_error(table: &str, message: String) -> Error {
    Error::Contract {
        table: table.to_string(),
        message,
        source: None,
    }
}

/// A contract error caused by `source`, with `what` saying what failed.
fn contract_cause(table: &str, what: String, source: impl Into<crate::error::BoxError>) -> Error {
    let source = source.into();
    Error::Contract {
        table: table.to_string(),
        message: format!("{what}: {source}"),
        source: Some(source),
    }
}

fn listing_options(source: &Source) -> ListingOptions {
    let (format, ext): (Arc<dyn FileFormat>, &str) = match source.format {
        SourceFormat::Parquet => (Arc::new(ParquetFormat::default()), ".parquet"),
        SourceFormat::Csv => (Arc::new(CsvFormat::default().with_has_header(true)), ".csv"),
    };
    ListingOptions::new(format)
        .with_file_extension(ext)
        .with_table_partition_cols(
            source
                .partition_columns
                .iter()
                .map(|p| (p.clone(), DataType::Utf8))
                .collect(),
        )
}

/// Check the files against the contract (every file, naming the first one that breaks it) and
/// return a provider that reads them.
pub async fn register(source: &Source, state: &SessionState) -> Result<Arc<dyn TableProvider>> {
    let table_url = ListingTableUrl::parse(source.location.as_str())
        .map_err(|e| contract_cause(&source.name, "bad location".into(), e))?;
    let options = listing_options(source);
    let store = state
        .runtime_env()
        .object_store(&table_url)
        .map_err(|e| contract_cause(&source.name, "no object store".into(), e))?;
    let files: Vec<_> = table_url
        .list_all_files(state, store.as_ref(), &options.file_extension)
        .await
        .map_err(|e| contract_cause(&source.name, format!("cannot list {}", source.location), e))?
        .try_collect()
        .await
        .map_err(|e| contract_cause(&source.name, format!("cannot list {}", source.location), e))?;
    if files.is_empty() {
        return Err(contract_error(
            &source.name,
            format!(
                "source files missing: no {} files under {}",
                options.file_extension, source.location
            ),
        ));
    }
    // Strings are read as views when the session asks for them (`schema_force_view_types`).
    let views = state
        .config()
        .options()
        .execution
        .parquet
        .schema_force_view_types
        && source.format == SourceFormat::Parquet;
    let table_schema = |nullable: fn(&Column) -> bool| {
        let data: Vec<Field> = source
            .columns
            .iter()
            .map(|c| {
                let data_type = match &c.data_type {
                    DataType::Utf8 if views => DataType::Utf8View,
                    t => t.clone(),
                };
                Field::new(&c.name, data_type, nullable(c))
            })
            .collect();
        Arc::new(Schema::new(data))
    };
    let file_schema = match source.format {
        SourceFormat::Csv => {
            for f in &files {
                check_csv_file(source, store.as_ref(), f).await?;
            }
            table_schema(|_| true)
        }
        SourceFormat::Parquet => table_schema(|c| c.nullable),
    };
    let config = ListingTableConfig::new(table_url)
        .with_listing_options(options)
        .with_schema(file_schema);
    // Each file's statistics are computed once and kept in the runtime's cache (keyed by path and
    // checked against the file's size and time), not again for every scan that plans the source.
    let table = ListingTable::try_new(config)
        .map_err(|e| contract_cause(&source.name, "cannot read".into(), e))?
        .with_cache(state.runtime_env().cache_manager.get_file_statistic_cache());
    Ok(match source.format {
        SourceFormat::Csv => Arc::new(table),
        SourceFormat::Parquet => Arc::new(CheckedParquet {
            source: source.clone(),
            table,
            checked: tokio::sync::Mutex::new(HashSet::new()),
        }),
    })
}

/// A Parquet source read as its contract says: the table has the contract's columns and types,
/// and a scan first checks the footer of every file it reads (after partition pruning) that this
/// provider has not checked yet. A run that reads the last days of a long history checks only
/// those days' files; a broken file fails the job that reads it before anything is published.
#[derive(Debug)]
struct CheckedParquet {
    source: Source,
    table: ListingTable,
    /// The files checked so far; held while a scan checks, so that two scans of the source
    /// planned at once (a job reading it twice) check each file once.
    checked: tokio::sync::Mutex<HashSet<object_store::path::Path>>,
}

impl CheckedParquet {
    /// Check the files a scan with `filters` reads.
    async fn check_files_read(&self, state: &dyn Session, filters: &[Expr]) -> Result<()> {
        let cause =
            |what: &str, e: DataFusionError| contract_cause(&self.source.name, what.into(), e);
        let url = &self.table.table_paths()[0];
        let options = self.table.options();
        let store = state
            .runtime_env()
            .object_store(url)
            .map_err(|e| cause("no object store", e))?;
        let partition_cols = &options.table_partition_cols;
        let names: Vec<&str> = partition_cols.iter().map(|(n, _)| n.as_str()).collect();
        let pruning: Vec<Expr> = filters
            .iter()
            .filter(|f| !names.is_empty() && expr_applicable_for_cols(&names, f))
            .cloned()
            .collect();
        let files: Vec<PartitionedFile> = pruned_partition_list(
            state,
            store.as_ref(),
            url,
            &pruning,
            &options.file_extension,
            partition_cols,
        )
        .await
        .map_err(|e| cause("cannot list", e))?
        .try_collect()
        .await
        .map_err(|e| cause("cannot list", e))?;
        let mut checked = self.checked.lock().await;
        let unchecked: Vec<ObjectMeta> = files
            .into_iter()
            .map(|f| f.object_meta)
            .filter(|m| !checked.contains(&m.location))
            .collect();
        check_footers(&self.source, state, options, store, &unchecked).await?;
        checked.extend(unchecked.into_iter().map(|m| m.location));
        Ok(())
    }
}

#[async_trait]
impl TableProvider for CheckedParquet {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        self.table.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let started = std::time::Instant::now();
        self.check_files_read(state, filters)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let checked = started.elapsed();
        let scan = self.table.scan(state, projection, filters, limit).await;
        tracing::debug!(source = %self.source.name, check_seconds = checked.as_secs_f64(),
            scan_seconds = (started.elapsed() - checked).as_secs_f64(), "source scan planned");
        scan
    }
}

/// Each Parquet file's footer checked against the contract (schema, and null counts of NOT NULL
/// columns), naming the first file, in file order, that breaks it. The footers land in the
/// session's metadata cache, where the scan finds them. A source's files nearly always share one
/// Parquet schema, so DataFusion turns each distinct schema into Arrow once, and a file's null
/// counts are read from its row groups' statistics instead of every column's statistics.
async fn check_footers(
    source: &Source,
    state: &dyn Session,
    options: &ListingOptions,
    store: Arc<dyn object_store::ObjectStore>,
    files: &[ObjectMeta],
) -> Result<()> {
    let format: &dyn std::any::Any = options.format.as_ref();
    let size_hint = format
        .downcast_ref::<ParquetFormat>()
        .and_then(|f| f.metadata_size_hint());
    let cache = state.runtime_env().cache_manager.get_file_metadata_cache();
    let mut footers = futures::stream::iter(files.iter().cloned())
        .map(|meta| {
            let (store, cache) = (store.clone(), cache.clone());
            // A task each, so the footers are decoded on every core while the job is planned.
            tokio::spawn(async move {
                let footer = DFParquetMetadata::new(store.as_ref(), &meta)
                    .with_metadata_size_hint(size_hint)
                    .with_file_metadata_cache(Some(cache))
                    .fetch_metadata()
                    .await;
                (meta, footer)
            })
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| contract_cause(&source.name, "a footer read stopped".into(), e))?;
    footers.sort_by(|a, b| a.0.location.cmp(&b.0.location));
    let mut schemas = FileSchemas::default();
    for (meta, footer) in footers {
        let location = meta.location.to_string();
        let unreadable = |e: DataFusionError| {
            contract_cause(
                &source.name,
                format!(
                    "file {location} ({} bytes) is not readable Parquet",
                    meta.size
                ),
                e,
            )
        };
        let footer = footer.map_err(unreadable)?;
        let schema = schemas
            .arrow(&footer, || {
                options
                    .format
                    .infer_schema(state, &store, std::slice::from_ref(&meta))
            })
            .await
            .map_err(unreadable)?;
        check_schema(source, &schema, &location)?;
        check_not_null(source, &schema, &footer, &location)?;
    }
    Ok(())
}

/// The Arrow schema DataFusion infers for each distinct Parquet schema (with its embedded Arrow
/// schema) among a source's files, so it is inferred once per schema, not once per file.
#[derive(Default)]
struct FileSchemas(Vec<(Arc<ParquetMetaData>, SchemaRef)>);

impl FileSchemas {
    async fn arrow<F>(
        &mut self,
        footer: &Arc<ParquetMetaData>,
        infer: impl FnOnce() -> F,
    ) -> datafusion::error::Result<SchemaRef>
    where
        F: std::future::Future<Output = datafusion::error::Result<SchemaRef>>,
    {
        let same = |known: &ParquetMetaData| {
            let (a, b) = (known.file_metadata(), footer.file_metadata());
            a.schema_descr().root_schema() == b.schema_descr().root_schema()
                && arrow_schema_text(known) == arrow_schema_text(footer)
        };
        if let Some((_, schema)) = self.0.iter().find(|(known, _)| same(known)) {
            return Ok(schema.clone());
        }
        let schema = infer().await?;
        self.0.push((footer.clone(), schema.clone()));
        Ok(schema)
    }
}

/// The Arrow schema a writer embedded in the footer, if any (it decides the inferred types).
fn arrow_schema_text(footer: &ParquetMetaData) -> Option<&str> {
    footer
        .file_metadata()
        .key_value_metadata()?
        .iter()
        .find(|kv| kv.key == datafusion::parquet::arrow::ARROW_SCHEMA_META_KEY)
        .and_then(|kv| kv.value.as_deref())
}

/// Columns declared `nullable = false` must hold no nulls, per the null counts of the file's row
/// groups (a column whose statistics lack a null count in some row group is not checked).
pub fn check_not_null(
    source: &Source,
    schema: &Schema,
    footer: &ParquetMetaData,
    file: &str,
) -> Result<()> {
    let descr = footer.file_metadata().schema_descr();
    for c in source.columns.iter().filter(|c| !c.nullable) {
        let Some((leaf, _)) = datafusion::parquet::arrow::parquet_column(descr, schema, &c.name)
        else {
            continue;
        };
        let nulls: Option<u64> = footer
            .row_groups()
            .iter()
            .map(|rg| {
                rg.column(leaf)
                    .statistics()
                    .and_then(|s| s.null_count_opt())
            })
            .sum();
        if let Some(n) = nulls.filter(|n| *n > 0) {
            return Err(contract_error(
                &source.name,
                format!(
                    "column `{}`: declared not null but {n} value(s) are null in file {file}",
                    c.name
                ),
            ));
        }
    }
    Ok(())
}

/// Compare one file's schema with the contract.
pub fn check_schema(source: &Source, found: &Schema, file: &str) -> Result<()> {
    for c in &source.columns {
        match found.field_with_name(&c.name) {
            Err(_) => {
                return Err(contract_error(
                    &source.name,
                    format!(
                        "column `{}`: expected {} but the column is missing in file {file}",
                        c.name, c.declared
                    ),
                ));
            }
            Ok(f) if !type_matches(&c.data_type, f.data_type()) => {
                return Err(contract_error(
                    &source.name,
                    format!(
                        "column `{}`: expected {} ({}) but found {} in file {file}",
                        c.name,
                        c.declared,
                        c.data_type,
                        f.data_type()
                    ),
                ));
            }
            Ok(_) => {}
        }
    }
    let extra: Vec<&str> = found
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|n| !source.columns.iter().any(|c| c.name == *n))
        .collect();
    if !extra.is_empty() {
        tracing::info!(source = %source.name, file, extra = ?extra, "source file has columns beyond its contract");
    }
    Ok(())
}

/// Check a CSV file against the contract: the header names the columns in order, and every value
/// parses as its column's type (the first bad value is named with its line).
async fn check_csv_file(
    source: &Source,
    store: &dyn object_store::ObjectStore,
    meta: &object_store::ObjectMeta,
) -> Result<()> {
    let cannot_read = |e: object_store::Error| {
        contract_cause(&source.name, format!("cannot read {}", meta.location), e)
    };
    let bytes = store
        .get(&meta.location)
        .await
        .map_err(cannot_read)?
        .bytes()
        .await
        .map_err(cannot_read)?;
    check_csv_text(
        &source.name,
        &source.columns,
        &bytes,
        meta.location.as_ref(),
    )
}

/// The CSV contract check on a file's bytes; `file` names it in messages.
pub fn check_csv_text(table: &str, columns: &[Column], bytes: &[u8], file: &str) -> Result<()> {
    use datafusion::arrow::array::{Array, StringArray};
    use datafusion::arrow::compute::{CastOptions, cast_with_options};
    let err = |message: String| contract_error(table, message);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|e| err(format!("file {file} (line 1): not readable CSV: {e}")))?
        .clone();
    for (i, c) in columns.iter().enumerate() {
        match header.get(i).map(str::trim) {
            Some(n) if n == c.name => {}
            Some(n) => {
                return Err(err(format!(
                    "column `{}`: expected it as CSV column {} but the header has `{n}` in file {file} (line 1)",
                    c.name,
                    i + 1
                )));
            }
            None => {
                return Err(err(format!(
                    "column `{}`: expected {} but the column is missing in file {file} (line 1)",
                    c.name, c.declared
                )));
            }
        }
    }
    let mut values: Vec<Vec<Option<String>>> = vec![Vec::new(); columns.len()];
    let mut lines: Vec<u64> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            err(format!("file {file} (line {line}): not readable CSV: {e}"))
        })?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        lines.push(line);
        for (i, c) in columns.iter().enumerate() {
            let v = record.get(i).unwrap_or("");
            if v.is_empty() {
                if !c.nullable {
                    return Err(err(format!(
                        "column `{}`: expected {} but found an empty value in file {file} (line {line})",
                        c.name, c.declared
                    )));
                }
                values[i].push(None);
            } else {
                values[i].push(Some(v.to_string()));
            }
        }
    }
    let safe = CastOptions {
        safe: true,
        ..Default::default()
    };
    for (i, c) in columns.iter().enumerate() {
        if matches!(c.data_type, DataType::Utf8) {
            continue;
        }
        let text = StringArray::from(values[i].clone());
        let parsed = cast_with_options(&text, &c.data_type, &safe).map_err(|e| {
            contract_cause(
                table,
                format!("column `{}`: cannot check values", c.name),
                e,
            )
        })?;
        if let Some(row) = (0..text.len()).find(|&r| text.is_valid(r) && parsed.is_null(r)) {
            return Err(err(format!(
                "column `{}`: expected {} but found `{}` in file {file} (line {})",
                c.name,
                c.declared,
                text.value(row),
                lines[row]
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use url::Url;

    fn root() -> Url {
        Url::parse("memory:///raw/").unwrap()
    }

    fn parse(path: &Path, text: &str, root: &Url) -> Result<Vec<Source>> {
        crate::project::sources::parse(path, text, root)
    }

    #[test]
    fn check_schema_names_file_and_column() {
        let s = parse(
            Path::new("s.toml"),
            "[[source]]\nname = \"t\"\ncolumns = [{ name = \"amount\", type = \"decimal(18,2)\" }]\n",
            &root(),
        )
        .unwrap();
        let found = Schema::new(vec![Field::new("amount", DataType::Float64, true)]);
        let e = check_schema(&s[0], &found, "raw/t/part-0.parquet")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "source `t`: column `amount`: expected decimal(18,2) (Decimal128(18, 2)) but found Float64 in file raw/t/part-0.parquet"
        );
    }

    /// A one-row Parquet file of a column `status` with values of `data_type`, nullable or not,
    /// holding `value` (or a null).
    fn one_row_file(data_type: DataType, nullable: bool, value: Option<&str>) -> Vec<u8> {
        use datafusion::arrow::array::{ArrayRef, LargeStringArray, StringArray};
        use datafusion::parquet::arrow::ArrowWriter;
        let array: ArrayRef = match data_type {
            DataType::LargeUtf8 => Arc::new(LargeStringArray::from(vec![value])),
            _ => Arc::new(StringArray::from(vec![value])),
        };
        let schema = Arc::new(Schema::new(vec![Field::new("status", data_type, nullable)]));
        let batch =
            datafusion::arrow::record_batch::RecordBatch::try_new(schema.clone(), vec![array])
                .unwrap();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        bytes
    }

    /// The footer of `one_row_file`.
    fn footer(data_type: DataType, nullable: bool, value: Option<&str>) -> Arc<ParquetMetaData> {
        use datafusion::parquet::file::metadata::ParquetMetaDataReader;
        let bytes = one_row_file(data_type, nullable, value);
        let footer = ParquetMetaDataReader::new()
            .parse_and_finish(&bytes::Bytes::from(bytes))
            .unwrap();
        Arc::new(footer)
    }

    #[tokio::test]
    async fn each_distinct_file_schema_is_inferred_once() {
        let mut schemas = FileSchemas::default();
        let mut inferred = Vec::new();
        let files = [
            (DataType::Utf8, true),
            (DataType::Utf8, true),
            // The same Parquet schema, but the embedded Arrow schema says large strings.
            (DataType::LargeUtf8, true),
            // Required instead of optional: another Parquet schema.
            (DataType::Utf8, false),
            (DataType::LargeUtf8, true),
        ];
        for (i, (data_type, nullable)) in files.into_iter().enumerate() {
            let footer = footer(data_type.clone(), nullable, Some("completed"));
            let schema = schemas
                .arrow(&footer, || {
                    inferred.push(i);
                    let t = data_type.clone();
                    async move { Ok(Arc::new(Schema::new(vec![Field::new("status", t, true)]))) }
                })
                .await
                .unwrap();
            assert_eq!(schema.field(0).data_type(), &data_type, "file {i}");
        }
        assert_eq!(inferred, [0, 2, 3]);
    }

    #[test]
    fn null_counts_come_from_the_row_groups() {
        let s = parse(
            Path::new("s.toml"),
            "[[source]]\nname = \"t\"\ncolumns = [{ name = \"status\", type = \"string\", nullable = false }]\n",
            &root(),
        )
        .unwrap();
        let schema = Schema::new(vec![Field::new("status", DataType::Utf8, true)]);
        let full = footer(DataType::Utf8, true, Some("completed"));
        check_not_null(&s[0], &schema, &full, "raw/t/a.parquet").unwrap();
        let null = footer(DataType::Utf8, true, None);
        let e = check_not_null(&s[0], &schema, &null, "raw/t/b.parquet")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "source `t`: column `status`: declared not null but 1 value(s) are null in file raw/t/b.parquet"
        );
    }

    /// Every scan planned over a source (a job reading it twice, the jobs after it) finds each
    /// file's statistics in the runtime's cache instead of computing them again.
    #[tokio::test]
    async fn file_statistics_are_kept_in_the_runtime_cache() {
        use datafusion::prelude::SessionContext;
        use object_store::memory::InMemory;
        let store = Arc::new(InMemory::new());
        let ctx = SessionContext::new();
        ctx.runtime_env()
            .register_object_store(&Url::parse("memory://").unwrap(), store.clone());
        for (i, status) in ["completed", "cancelled", "completed"]
            .into_iter()
            .enumerate()
        {
            let path = object_store::path::Path::from(format!("raw/t/part-{i}.parquet"));
            let file = one_row_file(DataType::Utf8, true, Some(status));
            store.put(&path, file.into()).await.unwrap();
        }
        let s = parse(
            Path::new("s.toml"),
            "[[source]]\nname = \"t\"\ncolumns = [{ name = \"status\", type = \"string\" }]\n",
            &root(),
        )
        .unwrap();
        let provider = register(&s[0], &ctx.state()).await.unwrap();
        let statistics = ctx
            .runtime_env()
            .cache_manager
            .get_file_statistic_cache()
            .expect("on by default");
        assert_eq!(statistics.len(), 0);
        for _ in 0..2 {
            provider.scan(&ctx.state(), None, &[], None).await.unwrap();
            assert_eq!(statistics.len(), 3);
        }
    }
}
