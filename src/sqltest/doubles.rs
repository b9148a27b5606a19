//! In-memory doubles of month close for SQL tests: `CLOSE MONTH` and `REOPEN MONTH` freeze and
//! re-open a month in the test session's tables, as a close does in storage.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{cast as cast_expr, ident, lit};
use datafusion::prelude::SessionContext;

use crate::close::log::{
    LogAction, LogRow, latest_for, log_batch, log_rows, next_log_time, records_batch, stamp,
};
use crate::close::month_close::close_jobs;
use crate::error::{Error, Result};
use crate::plan::workspace::Workspace;
use crate::project::spec::OnClose;
use crate::store::system::{CLOSE_LOG, CLOSED_MONTHS, CLOSED_RECORDS, snapshot_table};
use crate::values::Month;

/// Freeze `month` of the frozen tables registered in `ctx` into in-memory
/// `_closed_*` tables and the close log, as `close` does in storage.
pub async fn close_in_memory(
    ctx: &SessionContext,
    ws: &Workspace,
    month: &str,
    at: DateTime<Utc>,
) -> Result<i64> {
    let month = Month::parse(month)?.to_string();
    let log = log_rows(ctx).await?;
    let month_log: Vec<&LogRow> = log.iter().filter(|r| r.month == month).collect();
    if let Some(closed) = latest_for(&log, &month).filter(|r| r.action == LogAction::Close) {
        return Ok(closed.snapshot);
    }
    let snapshot = month_log.iter().map(|r| r.snapshot).max().unwrap_or(0) + 1;
    let mut tables = serde_json::Map::new();
    for job in close_jobs(ws, OnClose::Freeze) {
        let spec = &ws.graph.node(&job).expect("job").spec;
        let close = spec.close.as_ref().expect("closable");
        let rows = ctx
            .table(spec.table.as_str())
            .await?
            .filter(cast_expr(ident(&close.month_column), DataType::Utf8).eq(lit(month.clone())))?
            .collect()
            .await?;
        let count: usize = rows.iter().map(|b| b.num_rows()).sum();
        tables.insert(spec.table.clone(), serde_json::json!({"rows": count}));
        let stamped = rows
            .iter()
            .map(|b| stamp(b, &month, snapshot))
            .collect::<Result<Vec<_>>>()?;
        let name = snapshot_table(&spec.table);
        append_mem(ctx, &name, stamped).await?;
        if let Some(id_col) = &close.record_id_column {
            let mut batches = Vec::new();
            for b in &rows {
                let ids = cast(b.column(b.schema().index_of(id_col)?), &DataType::Int64)?;
                batches.push(records_batch(&month, snapshot, &spec.table, ids)?);
            }
            append_mem(ctx, CLOSED_RECORDS, batches).await?;
        }
    }
    let row = LogRow {
        month,
        action: LogAction::Close,
        snapshot,
        at: next_log_time(log.iter().map(|r| r.at).max(), at),
        actor: "sqltest".into(),
        reason: None,
        run_id: "sqltest".into(),
        open_items: 0,
        frozen_tables: tables.keys().cloned().collect::<Vec<_>>().join(","),
        tables: serde_json::Value::Object(tables).to_string(),
    };
    append_mem(ctx, CLOSE_LOG, vec![log_batch(&[row])?]).await?;
    Ok(snapshot)
}

/// Re-open `month` in the in-memory close log.
pub async fn reopen_in_memory(
    ctx: &SessionContext,
    month: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    let log = log_rows(ctx).await?;
    let Some(last) = latest_for(&log, month).filter(|r| r.action == LogAction::Close) else {
        return Err(Error::Close {
            month: month.to_string(),
            message: format!("{month} is not closed: there is nothing to reopen"),
            source: None,
        });
    };
    let row = LogRow {
        action: LogAction::Reopen,
        reason: Some(reason.to_string()),
        at: next_log_time(log.iter().map(|r| r.at).max(), at),
        ..last.clone()
    };
    append_mem(ctx, CLOSE_LOG, vec![log_batch(&[row])?]).await
}

/// Append batches to an in-memory table (creating it with the batches' schema).
async fn append_mem(ctx: &SessionContext, name: &str, batches: Vec<RecordBatch>) -> Result<()> {
    let mut all = Vec::new();
    let mut schema = batches.first().map(|b| b.schema());
    if ctx.table_exist(name)? {
        let df = ctx.table(name).await?;
        schema = schema.or_else(|| Some(df.schema().inner().clone()));
        all = df.collect().await?;
    }
    all.extend(batches);
    let Some(schema) = schema else { return Ok(()) };
    ctx.deregister_table(name)?;
    if name == CLOSE_LOG {
        // The view was planned over the old table: plan it again on next use.
        ctx.deregister_table(CLOSED_MONTHS)?;
    }
    ctx.register_table(
        name,
        Arc::new(datafusion::datasource::MemTable::try_new(
            schema,
            vec![all],
        )?),
    )?;
    Ok(())
}
