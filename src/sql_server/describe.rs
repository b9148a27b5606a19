//! Table and column descriptions for BI tools: `pg_catalog.pg_description` holds the job specs'
//! descriptions beside PostgreSQL's own rows (DBeaver, JDBC's metadata calls and Metabase join
//! it; `compat` rewrites psql's `obj_description` / `col_description` calls into lookups of it).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{TableType, cast, col};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SessionContext};

use crate::error::{Error, Result};
use crate::sql_server::catalog::{CATALOG, ServedCatalog};

/// `pg_class`'s class oid: every description here is of a table or one of its columns.
const PG_CLASS_OID: i32 = 1259;
const PG_CATALOG: &str = "pg_catalog";
const PG_DESCRIPTION: &str = "pg_description";

/// One description: schema, table, column (`None` for the table itself), text.
type Description = (String, String, Option<String>, String);

/// The descriptions' rows: schema, table, column (NULL for the table itself), description.
fn description_rows(catalog: &ServedCatalog) -> Result<RecordBatch> {
    let mut rows: Vec<Description> = vec![];
    for (schema, tables) in &catalog.delta_schemas {
        for (table, served) in tables.described() {
            if !served.description.is_empty() {
                rows.push((
                    schema.clone(),
                    table.clone(),
                    None,
                    served.description.clone(),
                ));
            }
            for (column, text) in &served.columns {
                rows.push((
                    schema.clone(),
                    table.clone(),
                    Some(column.clone()),
                    text.clone(),
                ));
            }
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("schema_name", DataType::Utf8, false),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, true),
        Field::new("description", DataType::Utf8, false),
    ]));
    let text =
        |f: fn(&Description) -> Option<&str>| Arc::new(StringArray::from_iter(rows.iter().map(f)));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            text(|r| Some(&r.0)),
            text(|r| Some(&r.1)),
            text(|r| r.2.as_deref()),
            text(|r| Some(&r.3)),
        ],
    )?)
}

/// Our rows of `pg_description`: each described table (objsubid 0) and column (its attnum).
const DESCRIBED_SQL: &str = "
SELECT c.oid AS objoid, d.description AS description, 0 AS objsubid
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN descriptions d ON d.schema_name = n.nspname AND d.table_name = c.relname
WHERE d.column_name IS NULL
UNION ALL
SELECT a.attrelid AS objoid, d.description AS description, a.attnum AS objsubid
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN descriptions d ON d.schema_name = n.nspname AND d.table_name = c.relname
  AND d.column_name = a.attname";

/// Replace the served catalog's `pg_catalog` by one whose `pg_description` also holds the specs'
/// descriptions. Call once, after datafusion-postgres's `setup_pg_catalog`.
pub async fn describe_catalog(ctx: &SessionContext, catalog: &ServedCatalog) -> Result<()> {
    let served = ctx
        .catalog(CATALOG)
        .ok_or_else(|| internal(format!("catalog {CATALOG} is not registered")))?;
    let pg = served
        .schema(PG_CATALOG)
        .ok_or_else(|| internal("pg_catalog is not set up".into()))?;
    let builtin = pg
        .table(PG_DESCRIPTION)
        .await?
        .ok_or_else(|| internal("pg_catalog has no pg_description".into()))?;
    let scratch = SessionContext::new();
    for name in ["pg_class", "pg_namespace", "pg_attribute"] {
        if let Some(table) = pg.table(name).await? {
            scratch.register_table(name, table)?;
        }
    }
    let rows = description_rows(catalog)?;
    let descriptions = MemTable::try_new(rows.schema(), vec![vec![rows]])?;
    scratch.register_table("descriptions", Arc::new(descriptions))?;
    scratch.register_table("builtin", builtin.clone())?;
    // Cast ours to the built-in table's column types, in its column order, and append them.
    let ours = scratch.sql(DESCRIBED_SQL).await?;
    let mut columns = vec![];
    for field in builtin.schema().fields() {
        let name = field.name();
        let value = match name.as_str() {
            "objoid" | "objsubid" | "description" => cast(col(name), field.data_type().clone()),
            "classoid" => cast(
                datafusion::logical_expr::lit(PG_CLASS_OID),
                field.data_type().clone(),
            ),
            _ => datafusion::logical_expr::lit(datafusion::common::ScalarValue::try_from(
                field.data_type(),
            )?),
        };
        columns.push(value.alias(name));
    }
    let rows = scratch
        .table("builtin")
        .await?
        .union(ours.select(columns)?)?;
    let described = Arc::new(DescribedPgCatalog {
        inner: pg,
        description: Arc::new(DescriptionTable {
            rows,
            schema: builtin.schema(),
        }),
    });
    served.register_schema(PG_CATALOG, described)?;
    Ok(())
}

fn internal(message: String) -> Error {
    Error::SqlServer {
        endpoint: "postgres".into(),
        message,
        source: None,
    }
}

/// `pg_description`: the built-in rows and ours, computed when a query reads it (table oids are
/// handed out as `pg_class` is read), in the built-in table's exact schema.
#[derive(Debug)]
struct DescriptionTable {
    rows: DataFrame,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for DescriptionTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[datafusion::prelude::Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // The oid columns carry type metadata in one input and not the other: re-wrap every
        // batch in the built-in schema.
        let batches = self
            .rows
            .clone()
            .collect()
            .await?
            .into_iter()
            .map(|b| RecordBatch::try_new(self.schema.clone(), b.columns().to_vec()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        MemTable::try_new(self.schema.clone(), vec![batches])?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// datafusion-postgres's `pg_catalog`, with our `pg_description`.
#[derive(Debug)]
struct DescribedPgCatalog {
    inner: Arc<dyn SchemaProvider>,
    description: Arc<dyn TableProvider>,
}

#[async_trait]
impl SchemaProvider for DescribedPgCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if name == PG_DESCRIPTION {
            return Ok(Some(self.description.clone()));
        }
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}
