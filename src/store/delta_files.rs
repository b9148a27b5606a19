//! A curated Delta table read as the plain Parquet files of one of its versions, with each file's
//! partition values: a scan DataFusion's own codec can ship to a cluster's workers, which
//! delta-rs 1.1's scan cannot. Only for tables without deletion vectors or column mapping, which
//! is every table retention writes; any other table is refused by name.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{FieldRef, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use deltalake::DeltaTable;
use deltalake::kernel::LogicalFileView;
use object_store::path::Path;
use url::Url;

use crate::error::{Error, Result};

/// The loaded version of `table` as its Parquet files; its schema is the one `delta::provider`
/// gives (same columns, same order, same types).
pub async fn provider(table: &DeltaTable) -> Result<Arc<dyn TableProvider>> {
    let url = table.table_url().clone();
    let schema = crate::store::delta::provider(table).await?.schema();
    let snapshot = table.snapshot().map_err(|e| Error::storage(&url, e))?;
    let eager = snapshot.snapshot();
    let mapping = eager
        .metadata()
        .configuration()
        .get("delta.columnMapping.mode")
        .filter(|mode| mode.as_str() != "none");
    if let Some(mode) = mapping {
        return Err(unreadable(&url, &format!("uses column mapping (`{mode}`)")));
    }
    let partition_columns = eager.metadata().partition_columns().to_vec();
    let partition_fields: Vec<FieldRef> = partition_columns
        .iter()
        .map(|c| schema.field_with_name(c).map(|f| Arc::new(f.clone())))
        .collect::<std::result::Result<_, _>>()?;
    let file_schema = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .filter(|f| !partition_columns.contains(f.name()))
            .cloned()
            .collect::<Vec<_>>(),
    ));
    let root = Path::from_url_path(url.path()).map_err(|e| Error::storage(&url, e))?;
    let files = snapshot
        .log_data()
        .iter()
        .map(|view| data_file(&url, &root, &view, &partition_fields))
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(SnapshotFiles {
        store: crate::store::object_store_url(&url)?,
        schema,
        table_schema: TableSchema::builder(file_schema)
            .with_table_partition_cols(partition_fields)
            .build(),
        files,
    }))
}

fn unreadable(url: &Url, why: &str) -> Error {
    Error::Storage {
        location: url.to_string(),
        message: format!(
            "a distributed engine reads curated tables as plain Parquet files, and this table {why}"
        ),
        source: None,
    }
}

/// One active file of the snapshot: its place in the store and its partition values, typed.
fn data_file(
    url: &Url,
    root: &Path,
    view: &LogicalFileView,
    partition_fields: &[FieldRef],
) -> Result<PartitionedFile> {
    if view.deletion_vector_descriptor().is_some() {
        return Err(unreadable(
            url,
            &format!("has deletion vectors (file {})", view.path()),
        ));
    }
    let relative = view.object_store_path();
    if view.path().contains("://") {
        return Err(unreadable(
            url,
            &format!("names a file outside it ({})", view.path()),
        ));
    }
    let location = Path::from_iter(root.parts().chain(relative.parts()));
    let mut file = PartitionedFile::new(location.to_string(), view.size().max(0) as u64);
    let values = view.partition_values_map();
    for field in partition_fields {
        let value = match values.get(field.name()).cloned().flatten() {
            Some(text) => ScalarValue::try_from_string(text, field.data_type())?,
            None => ScalarValue::try_from(field.data_type())?,
        };
        file.partition_values.push(value);
    }
    Ok(file)
}

/// The files of one table version, scanned with DataFusion's Parquet reader.
#[derive(Debug)]
struct SnapshotFiles {
    store: ObjectStoreUrl,
    /// The table's columns in the Delta schema's order.
    schema: SchemaRef,
    /// The same columns as the scan sees them: the files' columns, then the partition columns.
    table_schema: TableSchema,
    files: Vec<PartitionedFile>,
}

impl SnapshotFiles {
    /// The scan's column index of each of the table's columns in `projection` (all by default).
    fn scan_indices(&self, projection: Option<&Vec<usize>>) -> Vec<usize> {
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        let scan = self.table_schema.table_schema();
        projection
            .unwrap_or(&all)
            .iter()
            .map(|&i| {
                scan.index_of(self.schema.field(i).name())
                    .expect("the scan holds every column")
            })
            .collect()
    }

    /// The files spread over `n` groups of about equal bytes, largest file first.
    fn groups(&self, n: usize) -> Vec<FileGroup> {
        let mut files = self.files.clone();
        files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); n.max(1)];
        for file in files {
            let lightest = groups
                .iter_mut()
                .min_by_key(|(bytes, _)| *bytes)
                .expect("at least one group");
            lightest.0 += file.object_meta.size;
            lightest.1.push(file);
        }
        groups
            .into_iter()
            .filter(|(_, files)| !files.is_empty())
            .map(|(_, files)| FileGroup::new(files))
            .collect()
    }
}

#[async_trait]
impl TableProvider for SnapshotFiles {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Filters are applied above the scan, and pushed into the Parquet reader (row groups,
    /// pages, whole files by their partition values) by DataFusion's physical optimizer.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        if self.files.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let source = format.file_source(self.table_schema.clone());
        let config = FileScanConfigBuilder::new(self.store.clone(), source)
            .with_file_groups(self.groups(state.config().target_partitions()))
            .with_projection_indices(Some(self.scan_indices(projection)))?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}
