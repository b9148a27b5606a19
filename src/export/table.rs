//! Any curated table to a file: CSV, Parquet, XLSX or JSON, optionally at a Delta version,
//! filtered by a SQL predicate and cut to some columns. Decimals keep every digit in CSV, JSON
//! (numbers written as their exact text) and Parquet (Decimal128); the file appears in one rename.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;

use crate::error::{Error, Result};
use crate::export::{create_dir, write_atomically};
use crate::plan::workspace::Workspace;
use crate::store::delta;

/// File formats of `export TABLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TableFormat {
    Csv,
    Parquet,
    Xlsx,
    /// A JSON array of objects, one per row.
    Json,
}

impl TableFormat {
    fn extension(self) -> &'static str {
        match self {
            TableFormat::Csv => "csv",
            TableFormat::Parquet => "parquet",
            TableFormat::Xlsx => "xlsx",
            TableFormat::Json => "json",
        }
    }
}

/// What to export.
#[derive(Debug, Clone)]
pub struct TableExport {
    pub table: String,
    pub format: TableFormat,
    /// A SQL predicate over the table's columns (`month = '2026-10' AND status = 'over'`).
    pub predicate: Option<String>,
    /// Columns to keep, in this order (all when empty).
    pub columns: Vec<String>,
    /// A Delta version (time travel); the latest when `None`.
    pub version: Option<i64>,
}

/// Write the table to `<dir>/<table>[_v<version>].<ext>`; returns the path and the row count.
pub async fn export_table(
    ws: &Workspace,
    req: &TableExport,
    dir: &Path,
) -> Result<(PathBuf, usize)> {
    let (schema, batches) = read_table(ws, req).await?;
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    let name = match req.version {
        Some(v) => format!("{}_v{v}.{}", req.table, req.format.extension()),
        None => format!("{}.{}", req.table, req.format.extension()),
    };
    let path = dir.join(name);
    let bytes = encode(schema, &batches, req, &path)?;
    create_dir(dir)?;
    write_atomically(&path, &bytes)?;
    Ok((path, rows))
}

/// The table's rows at the version asked, filtered and projected.
async fn read_table(ws: &Workspace, req: &TableExport) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    if !ws.curated_tables().contains(&req.table) {
        return Err(Error::Argument {
            flag: "TABLE",
            key: req.table.clone(),
            message: format!(
                "not a curated table; the curated tables are: {}",
                ws.curated_tables().join(", ")
            ),
        });
    }
    let url = ws.table_url(&req.table)?;
    let table = match req.version {
        Some(v) => delta::open_version(&ws.engine.stores, &url, v).await?,
        None => delta::open(&ws.engine.stores, &url)
            .await?
            .ok_or_else(|| Error::Export {
                path: req.table.clone().into(),
                message: format!(
                    "`{}` has not been published yet; run its job first",
                    req.table
                ),
                source: None,
            })?,
    };
    let provider = delta::provider(&table).await?;
    let ctx = ws
        .engine
        .session(&[(req.table.clone(), Arc::clone(&provider))])?;
    let mut df = ctx.table(req.table.as_str()).await?;
    if let Some(predicate) = &req.predicate {
        // Parsed as one expression over the table's columns: nothing else can run.
        let expr = df.parse_sql_expr(predicate).map_err(|e| Error::Argument {
            flag: "--where",
            key: predicate.clone(),
            message: crate::engine::job::strip_context(&e),
        })?;
        df = df.filter(expr)?;
    }
    if !req.columns.is_empty() {
        let names: Vec<&str> = req.columns.iter().map(String::as_str).collect();
        df = df.select_columns(&names).map_err(|e| Error::Argument {
            flag: "--columns",
            key: req.columns.join(","),
            message: crate::engine::job::strip_context(&e),
        })?;
    }
    let schema = Arc::new(df.schema().as_arrow().clone());
    Ok((schema, df.collect().await?))
}

fn encode(
    schema: SchemaRef,
    batches: &[RecordBatch],
    req: &TableExport,
    path: &Path,
) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    match req.format {
        TableFormat::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut bytes);
            for b in batches {
                w.write(b)?;
            }
        }
        TableFormat::Json => {
            let mut w = datafusion::arrow::json::ArrayWriter::new(&mut bytes);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        TableFormat::Parquet => {
            let mut w = ArrowWriter::try_new(&mut bytes, schema, Some(delta::writer_properties()))?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
        }
        TableFormat::Xlsx => {
            let title = match req.version {
                Some(v) => format!("{} (version {v})", req.table),
                None => req.table.clone(),
            };
            bytes = crate::export::xlsx::table_workbook(&title, batches).map_err(|e| {
                Error::Export {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                    source: Some(Box::new(e)),
                }
            })?;
        }
    }
    Ok(bytes)
}
