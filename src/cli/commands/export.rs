//! `retention export`: any curated table as CSV, Parquet, XLSX or JSON (filtered, projected, at a
//! version), and finance's month of the budget reconciliation (`--month`) as CSV files or the
//! XLSX workbook.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Result};
use crate::export::table::{TableExport, TableFormat, export_table};
use crate::export::{csv::export_month_csv, xlsx::export_month_xlsx};
use crate::plan::workspace::Workspace;
use crate::values::Month;

pub const EXAMPLES: &str = "Examples:\n  retention export cohort_retention --format parquet\n  retention export order_experience --where \"order_month = '2026-10' AND bad_experience\" --columns order_id,primary_issue,net_revenue\n  retention export program_roi --format xlsx --version 3\n  retention export budget_reconciliation --month 2026-10 --format xlsx   # finance's workbook";

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The curated table to export.
    pub table: String,
    /// budget_reconciliation only: finance's month (YYYY-MM), as the summary and detail files
    /// (`csv`) or the workbook (`xlsx`), from the frozen snapshot when the month is closed.
    #[arg(long, value_parser = crate::cli::args::month)]
    pub month: Option<Month>,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: TableFormat,
    /// Keep only the rows where this SQL predicate over the table's columns holds.
    #[arg(long = "where", conflicts_with = "month")]
    pub predicate: Option<String>,
    /// Keep these columns, in this order (comma-separated).
    #[arg(long, value_delimiter = ',', conflicts_with = "month")]
    pub columns: Vec<String>,
    /// Export this Delta version of the table (time travel) instead of the latest.
    #[arg(long, conflicts_with = "month")]
    pub version: Option<i64>,
    /// Directory to write into.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

pub async fn run(ws: &Workspace, args: ExportArgs) -> Result<()> {
    let Some(month) = &args.month else {
        let req = TableExport {
            table: args.table,
            format: args.format,
            predicate: args.predicate,
            columns: args.columns,
            version: args.version,
        };
        let (path, rows) = export_table(ws, &req, &args.out).await?;
        println!("wrote {} ({rows} rows)", path.display());
        return Ok(());
    };
    let files = match args.format {
        TableFormat::Csv => export_month_csv(ws, &args.table, month, &args.out).await?,
        TableFormat::Xlsx => export_month_xlsx(ws, &args.table, month, &args.out).await?,
        other => {
            return Err(Error::Argument {
                flag: "--format",
                key: format!("{other:?}").to_lowercase(),
                message: "--month writes finance's csv files or xlsx workbook; drop --month to export the table as parquet or json".into(),
            });
        }
    };
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
