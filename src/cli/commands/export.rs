//! `retention export`: a month of the budget reconciliation as CSV files or an XLSX workbook.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::error::Result;
use crate::export::{csv::export_month_csv, xlsx::export_month_xlsx};
use crate::plan::workspace::Workspace;
use crate::values::Month;

pub const EXAMPLES: &str = "Examples:\n  retention export budget_reconciliation --month 2026-10\n  retention export budget_reconciliation --month 2026-10 --out /tmp/close";

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Xlsx,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The table to export (budget_reconciliation).
    pub table: String,
    /// Service month, YYYY-MM.
    #[arg(long, value_parser = crate::cli::args::month)]
    pub month: Month,
    /// `xlsx`: one workbook with a summary and a detail sheet; `csv`: two files.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: ExportFormat,
    /// Directory to write into.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

pub async fn run(ws: &Workspace, args: ExportArgs) -> Result<()> {
    let files = match args.format {
        ExportFormat::Csv => export_month_csv(ws, &args.table, &args.month, &args.out).await?,
        ExportFormat::Xlsx => export_month_xlsx(ws, &args.table, &args.month, &args.out).await?,
    };
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
