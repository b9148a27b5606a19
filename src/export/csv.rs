//! A month of the reconciliation as two CSV files (summary and detail) with exact decimal text.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::export::{create_dir, read_month, write_atomically};
use crate::plan::workspace::Workspace;
use crate::values::Month;

/// Write `<table>_<month>_summary.csv` and `<table>_<month>_detail.csv` into `dir`.
pub async fn export_month_csv(
    ws: &Workspace,
    table: &str,
    month: &Month,
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    let m = read_month(ws, table, month).await?;
    create_dir(dir)?;
    let mut written = Vec::new();
    for (part, batches) in [("summary", &m.summary), ("detail", &m.detail)] {
        let path = dir.join(format!("{table}_{}_{part}.csv", m.month));
        let mut bytes = Vec::new();
        {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut bytes);
            for b in batches {
                w.write(b)?;
            }
        }
        write_atomically(&path, &bytes)?;
        written.push(path);
    }
    Ok(written)
}
