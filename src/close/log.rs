//! The close log `_month_close` and what is read from it: its rows, the `_closed_months` view of
//! the months closed now, and the batches a close writes (log rows, frozen record ids, snapshot
//! rows stamped with their month and snapshot number).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::system::{CLOSE_LOG, CLOSED_MONTHS, close_log_schema, closed_records_schema};

/// `_closed_months`: the months closed now (their latest log row is a close), with the current
/// snapshot, who closed them and when, and the tables frozen (comma-separated).
const CLOSED_MONTHS_SQL: &str = "
SELECT month, snapshot, at AS closed_at, actor AS closed_by, frozen_tables, tables FROM (
  SELECT month, action, snapshot, at, actor, frozen_tables, tables,
         row_number() OVER (PARTITION BY month ORDER BY at DESC, snapshot DESC) AS n
  FROM _month_close
) latest
WHERE n = 1 AND action = 'close'";

/// Register the `_closed_months` view in `ctx` when `_month_close` is registered and the view
/// is not (yet).
pub async fn register_closed_months(ctx: &SessionContext) -> Result<()> {
    if ctx.table_exist(CLOSE_LOG)? && !ctx.table_exist(CLOSED_MONTHS)? {
        let view = ctx.sql(CLOSED_MONTHS_SQL).await?.into_view();
        ctx.register_table(CLOSED_MONTHS, view)?;
    }
    Ok(())
}

/// A closed month: its current snapshot and the tables frozen in it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedMonth {
    pub month: String,
    pub snapshot: i64,
    /// Tables frozen by the close, with the rows frozen (a table that got `[close]` later is not
    /// among them).
    pub tables: Vec<(String, i64)>,
}

impl ClosedMonth {
    /// Rows frozen of `table`, if the close froze it.
    pub fn frozen(&self, table: &str) -> Option<i64> {
        self.tables
            .iter()
            .find(|(t, _)| t == table)
            .map(|(_, n)| *n)
    }
}

/// Closed months and their current snapshot, read from `_month_close` as registered in `ctx`
/// (none when it is not registered).
pub async fn current_closes(ctx: &SessionContext) -> Result<Vec<ClosedMonth>> {
    register_closed_months(ctx).await?;
    if !ctx.table_exist(CLOSED_MONTHS)? {
        return Ok(vec![]);
    }
    let batches = ctx
        .sql("SELECT month, snapshot, frozen_tables, tables FROM _closed_months ORDER BY month")
        .await?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in &batches {
        let months = string_column(b, 0)?;
        let snaps = int_column(b, 1)?;
        let names = string_column(b, 2)?;
        let tables = string_column(b, 3)?;
        for i in 0..b.num_rows() {
            let counts: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(tables.value(i)).unwrap_or_default();
            out.push(ClosedMonth {
                month: months.value(i).to_string(),
                snapshot: snaps.value(i),
                tables: names
                    .value(i)
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(|t| {
                        let rows = counts
                            .get(t)
                            .and_then(|v| v.get("rows"))
                            .and_then(|v| v.as_i64())
                            .unwrap_or(0);
                        (t.to_string(), rows)
                    })
                    .collect(),
            });
        }
    }
    Ok(out)
}

pub fn string_column(b: &RecordBatch, i: usize) -> Result<StringArray> {
    let a = cast(b.column(i), &DataType::Utf8)?;
    Ok(a.as_any()
        .downcast_ref::<StringArray>()
        .expect("cast to Utf8")
        .clone())
}

pub fn int_column(b: &RecordBatch, i: usize) -> Result<Int64Array> {
    let a = cast(b.column(i), &DataType::Int64)?;
    Ok(a.as_any()
        .downcast_ref::<Int64Array>()
        .expect("cast to Int64")
        .clone())
}

/// What a close-log row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogAction {
    Close,
    Reopen,
}

impl LogAction {
    pub fn as_str(self) -> &'static str {
        match self {
            LogAction::Close => "close",
            LogAction::Reopen => "reopen",
        }
    }

    fn parse(text: &str) -> Result<LogAction> {
        match text {
            "close" => Ok(LogAction::Close),
            "reopen" => Ok(LogAction::Reopen),
            other => Err(Error::Storage {
                location: CLOSE_LOG.into(),
                message: format!(
                    "unknown action `{other}` in the close log (expected close or reopen)"
                ),
                source: None,
            }),
        }
    }
}

impl std::fmt::Display for LogAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `_month_close`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogRow {
    pub month: String,
    pub action: LogAction,
    pub snapshot: i64,
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub at: DateTime<Utc>,
    pub actor: String,
    pub reason: Option<String>,
    pub run_id: String,
    /// Rows the `warn` tables had for the month when it was closed.
    pub open_items: i64,
    /// JSON: frozen table -> {"version": source version, "rows": rows frozen}.
    pub tables: String,
    /// The frozen tables, comma-separated (for SQL: `string_to_array(frozen_tables, ',')`).
    pub frozen_tables: String,
}

/// Close-log rows as one batch of its schema.
pub fn log_batch(rows: &[LogRow]) -> Result<RecordBatch> {
    serde_arrow::to_record_batch(close_log_schema().fields(), &rows).map_err(|e| Error::Storage {
        location: CLOSE_LOG.into(),
        message: format!("cannot build close-log rows: {e}"),
        source: Some(Box::new(e)),
    })
}

/// A month's latest row in the close log (rows oldest first): its current state.
pub fn latest_for<'a>(log: &'a [LogRow], month: &str) -> Option<&'a LogRow> {
    log.iter().rfind(|r| r.month == month)
}

/// The close log as rows (oldest first), read from `ctx`.
pub async fn log_rows(ctx: &SessionContext) -> Result<Vec<LogRow>> {
    if !ctx.table_exist(CLOSE_LOG)? {
        return Ok(vec![]);
    }
    let batches = ctx
        .sql("SELECT month, action, snapshot, CAST(at AS BIGINT) AS at_micros, actor, reason, run_id, open_items, tables, frozen_tables FROM _month_close ORDER BY at, snapshot")
        .await?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in &batches {
        let (month, action, snap) = (
            string_column(b, 0)?,
            string_column(b, 1)?,
            int_column(b, 2)?,
        );
        let (at, actor, reason) = (
            int_column(b, 3)?,
            string_column(b, 4)?,
            string_column(b, 5)?,
        );
        let (run_id, open_items, tables) = (
            string_column(b, 6)?,
            int_column(b, 7)?,
            string_column(b, 8)?,
        );
        let frozen_tables = string_column(b, 9)?;
        for i in 0..b.num_rows() {
            out.push(LogRow {
                month: month.value(i).to_string(),
                action: LogAction::parse(action.value(i))?,
                snapshot: snap.value(i),
                at: DateTime::from_timestamp_micros(at.value(i)).unwrap_or_default(),
                actor: actor.value(i).to_string(),
                reason: (!reason.is_null(i)).then(|| reason.value(i).to_string()),
                run_id: run_id.value(i).to_string(),
                open_items: open_items.value(i),
                tables: tables.value(i).to_string(),
                frozen_tables: frozen_tables.value(i).to_string(),
            });
        }
    }
    Ok(out)
}

/// A log time strictly after `latest`, so the order of a month's actions never ties.
pub fn next_log_time(latest: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    match latest {
        Some(l) if l >= now => l + chrono::Duration::microseconds(1),
        _ => now,
    }
}

/// `_closed_entries` rows: the ids (Int64) frozen from `table` into a snapshot of `month`.
pub fn records_batch(
    month: &str,
    snapshot: i64,
    table: &str,
    ids: ArrayRef,
) -> Result<RecordBatch> {
    let n = ids.len();
    Ok(RecordBatch::try_new(
        closed_records_schema(),
        vec![
            Arc::new(StringArray::from(vec![month.to_string(); n])),
            Arc::new(Int64Array::from(vec![snapshot; n])),
            Arc::new(StringArray::from(vec![table.to_string(); n])),
            ids,
        ],
    )?)
}

/// Prefix a batch with `closed_month` and `snapshot`.
pub fn stamp(b: &RecordBatch, month: &str, snapshot: i64) -> Result<RecordBatch> {
    let n = b.num_rows();
    let mut fields = vec![
        Field::new("closed_month", DataType::Utf8, false),
        Field::new("snapshot", DataType::Int64, false),
    ];
    fields.extend(b.schema().fields().iter().map(|f| f.as_ref().clone()));
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![month.to_string(); n])),
        Arc::new(Int64Array::from(vec![snapshot; n])),
    ];
    columns.extend(b.columns().iter().cloned());
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(month: &str, action: LogAction, snapshot: i64, at: i64) -> LogRow {
        LogRow {
            month: month.into(),
            action,
            snapshot,
            at: DateTime::from_timestamp(at, 0).unwrap(),
            actor: "ana".into(),
            reason: (action == LogAction::Reopen).then(|| "why".into()),
            run_id: "r".into(),
            open_items: 0,
            tables: "{}".into(),
            frozen_tables: "budget_reconciliation".into(),
        }
    }

    #[tokio::test]
    async fn log_rows_round_trip_and_the_latest_row_decides() {
        let rows = vec![
            row("2026-01", LogAction::Close, 1, 100),
            row("2026-02", LogAction::Close, 1, 200),
            row("2026-01", LogAction::Reopen, 1, 300),
        ];
        let ctx = SessionContext::new();
        let table = datafusion::datasource::MemTable::try_new(
            close_log_schema(),
            vec![vec![log_batch(&rows).unwrap()]],
        )
        .unwrap();
        ctx.register_table(CLOSE_LOG, Arc::new(table)).unwrap();
        let read = log_rows(&ctx).await.unwrap();
        assert_eq!(read, rows);
        assert_eq!(
            latest_for(&read, "2026-01").unwrap().action,
            LogAction::Reopen
        );
        assert!(latest_for(&read, "2026-03").is_none());
        // Only February is closed now.
        let closed = current_closes(&ctx).await.unwrap();
        assert_eq!(
            closed,
            vec![ClosedMonth {
                month: "2026-02".into(),
                snapshot: 1,
                tables: vec![("budget_reconciliation".into(), 0)],
            }]
        );
    }

    #[test]
    fn log_times_never_tie() {
        let t = DateTime::from_timestamp(100, 0).unwrap();
        assert_eq!(next_log_time(None, t), t);
        assert_eq!(
            next_log_time(Some(t), t),
            t + chrono::Duration::microseconds(1)
        );
        let later = DateTime::from_timestamp(200, 0).unwrap();
        assert_eq!(next_log_time(Some(t), later), later);
    }

    #[test]
    fn stamped_rows_lead_with_month_and_snapshot() {
        let b = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![7, 8]))],
        )
        .unwrap();
        let s = stamp(&b, "2026-01", 3).unwrap();
        assert_eq!(s.schema().field(0).name(), "closed_month");
        assert_eq!(s.schema().field(1).name(), "snapshot");
        assert_eq!(int_column(&s, 1).unwrap().values().to_vec(), vec![3, 3]);
        assert_eq!(int_column(&s, 2).unwrap().values().to_vec(), vec![7, 8]);
    }
}
