//! Finance exports: a month of the budget reconciliation as CSV files with exact decimal text,
//! written to a temporary name and renamed, so a reader never sees half a file.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::common::{ParamValues, ScalarValue};

use crate::error::{Error, Result};
use crate::runner::Workspace;

/// Every ledger entry of the month with its mapping and converted amount.
const DETAIL_SQL: &str = "
SELECT l.entry_id, l.posted_date, l.service_month, l.program_id, l.cost_center, l.vendor,
       l.invoice_id, l.entry_type, l.currency, l.amount, f.rate_to_reporting,
       CAST(round_half_even(l.amount * f.rate_to_reporting) AS DECIMAL(18,2)) AS amount_reporting,
       coalesce(e.reason, 'mapped') AS mapping
FROM spend_ledger l
LEFT JOIN fx_rates f ON f.month = l.service_month AND f.currency = l.currency
LEFT JOIN (SELECT entry_id, reason FROM reconciliation_exceptions WHERE source = 'ledger') e
  ON e.entry_id = l.entry_id
WHERE l.service_month = $month
ORDER BY l.entry_id";

const SUMMARY_SQL: &str = "
SELECT * FROM budget_reconciliation WHERE month = $month ORDER BY program_id, cost_center";

/// Check a `YYYY-MM` month (01-12).
pub fn parse_month(text: &str) -> Result<String> {
    let ok = text.len() == 7
        && chrono::NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d").is_ok();
    if ok {
        Ok(text.to_string())
    } else {
        Err(Error::Config {
            path: PathBuf::from("--month"),
            key: "month".into(),
            message: format!(
                "`{text}` is not a month: expected YYYY-MM with a month from 01 to 12"
            ),
        })
    }
}

/// Write `<table>_<month>_summary.csv` and `<table>_<month>_detail.csv` into `dir`.
pub async fn export_month_csv(
    ws: &Workspace,
    table: &str,
    month: &str,
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    if table != "budget_reconciliation" {
        return Err(Error::Selector {
            selector: format!("{table} (only budget_reconciliation can be exported)"),
        });
    }
    let month = parse_month(month)?;
    let ctx = ws.query_session().await?;
    let params = || ParamValues::from(vec![("month", ScalarValue::Utf8(Some(month.clone())))]);
    let summary = ctx
        .sql(SUMMARY_SQL)
        .await?
        .with_param_values(params())?
        .collect()
        .await?;
    if summary.iter().all(|b| b.num_rows() == 0) {
        return Err(Error::Job {
            job: "export".into(),
            message: format!("budget_reconciliation has no rows for {month}; run it first"),
        });
    }
    let detail = ctx
        .sql(DETAIL_SQL)
        .await?
        .with_param_values(params())?
        .collect()
        .await?;
    std::fs::create_dir_all(dir).map_err(|source| Error::ReadFile {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for (part, batches) in [("summary", &summary), ("detail", &detail)] {
        let path = dir.join(format!("{table}_{month}_{part}.csv"));
        write_csv_atomically(&path, batches)?;
        written.push(path);
    }
    Ok(written)
}

fn write_csv_atomically(path: &Path, batches: &[RecordBatch]) -> Result<()> {
    let tmp = path.with_extension("csv.partial");
    let io = |source| Error::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    {
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut w = datafusion::arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(file);
        for b in batches {
            w.write(b)?;
        }
    }
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_must_be_real() {
        assert_eq!(parse_month("2026-10").unwrap(), "2026-10");
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-10",
            "2026-10-01",
            "october",
        ] {
            let e = parse_month(bad).unwrap_err().to_string();
            assert!(e.contains("is not a month"), "{bad}: {e}");
        }
    }
}
