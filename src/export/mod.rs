//! Exports: any curated table as a file (`table`), and finance's month of the budget reconciliation read for export (a closed month from its
//! frozen snapshot), written as CSV files with exact decimal text (`csv`) or an XLSX workbook
//! (`xlsx`). Files are written to a temporary file beside their name and persisted in one rename,
//! so a reader never sees half a file.

pub mod csv;
pub mod table;
pub mod xlsx;

use std::io::Write;
use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::prelude::SessionContext;

use crate::close::log::current_closes;
use crate::error::{Error, Result};
use crate::plan::workspace::Workspace;
use crate::values::Month;

/// The one table `export` knows how to export.
pub const EXPORTABLE: &str = "budget_reconciliation";

/// The month's reconciliation rows: from the current snapshot when the month is closed.
const SUMMARY_SQL: &str = "
SELECT * FROM budget_reconciliation WHERE month = $month ORDER BY program_id, cost_center";
const CLOSED_SUMMARY_SQL: &str = "
SELECT * EXCLUDE (closed_month, snapshot) FROM _closed_budget_reconciliation
WHERE closed_month = $month AND snapshot = $snapshot ORDER BY program_id, cost_center";

/// Every ledger entry reconciled in the month with its mapping (prior-period adjustments
/// included, with their service month).
const DETAIL_SQL: &str = "
SELECT * FROM budget_reconciliation_entries WHERE reconciled_month = $month ORDER BY entry_id";
const CLOSED_DETAIL_SQL: &str = "
SELECT * EXCLUDE (closed_month, snapshot) FROM _closed_budget_reconciliation_entries
WHERE closed_month = $month AND snapshot = $snapshot ORDER BY entry_id";

/// A month of the reconciliation, read for export.
pub struct MonthExport {
    pub month: Month,
    /// The snapshot read, when the month is closed.
    pub snapshot: Option<i64>,
    pub summary: Vec<RecordBatch>,
    pub detail: Vec<RecordBatch>,
}

/// Read a month's summary and detail: the current snapshot of a closed month, else the latest
/// published tables.
pub async fn read_month(ws: &Workspace, table: &str, month: &Month) -> Result<MonthExport> {
    if table != EXPORTABLE {
        return Err(Error::NotExportable {
            table: table.to_string(),
            exportable: EXPORTABLE,
        });
    }
    let month = month.clone();
    let ctx = ws.query_session().await?;
    let snapshot = current_closes(&ctx)
        .await?
        .into_iter()
        .find(|c| c.month == month.as_str() && c.frozen(table).is_some())
        .map(|c| c.snapshot);
    let mut params = vec![("month", ScalarValue::Utf8(Some(month.to_string())))];
    let (summary_sql, detail_sql) = match snapshot {
        Some(s) => {
            params.push(("snapshot", ScalarValue::Int64(Some(s))));
            (CLOSED_SUMMARY_SQL, CLOSED_DETAIL_SQL)
        }
        None => (SUMMARY_SQL, DETAIL_SQL),
    };
    let query = |sql: &'static str| {
        let ctx: &SessionContext = &ctx;
        let params = ParamValues::from(params.clone());
        async move {
            ctx.sql(sql)
                .await?
                .with_param_values(params)?
                .collect()
                .await
                .map_err(Error::from)
        }
    };
    let summary = query(summary_sql).await?;
    if summary.iter().all(|b| b.num_rows() == 0) {
        return Err(Error::Export {
            path: format!("{table} {month}").into(),
            message: format!("budget_reconciliation has no rows for {month}; run it first"),
            source: None,
        });
    }
    // A closed month without ledger entries froze none: its snapshot table may not exist.
    let detail =
        if snapshot.is_some() && !ctx.table_exist("_closed_budget_reconciliation_entries")? {
            vec![]
        } else {
            query(detail_sql).await?
        };
    Ok(MonthExport {
        month,
        snapshot,
        summary,
        detail,
    })
}

pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::WriteFile {
        path: dir.to_path_buf(),
        source,
    })
}

/// Write `bytes` to `path` atomically: a temporary file in the same directory, persisted over the
/// name in one rename (`tempfile`); on any failure nothing is left under the name.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let fail = |e: std::io::Error| Error::Export {
        path: path.to_path_buf(),
        message: e.to_string(),
        source: Some(Box::new(e)),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    // As a plain file write would: readable by others (0666 less the umask), not tempfile's 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(fail)?;
    tmp.write_all(bytes).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_files_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        write_atomically(&path, b"a\n1\n").unwrap();
        write_atomically(&path, b"a\n2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\n2\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_ne!(mode & 0o044, 0, "others cannot read the export: {mode:o}");
        }
        // A directory that does not exist: an error naming the file, nothing written.
        let missing = dir.path().join("nope/out.csv");
        let e = write_atomically(&missing, b"x").unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: cannot write the export", missing.display())),
            "{e}"
        );
    }
}
