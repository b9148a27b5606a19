//! The read side of month close, installed in the engine as a session hook: every session gets
//! the `_closed_months` view, and every run of a frozen job shows its closed months exactly as
//! they were frozen (the month's live rows replaced by its current snapshot).

use async_trait::async_trait;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, cast as cast_expr, ident, lit};
use datafusion::prelude::{DataFrame, SessionContext};

use crate::close::log::{ClosedMonth, current_closes, register_closed_months};
use crate::engine::hook::SessionHook;
use crate::error::{Error, Result};
use crate::project::spec::{JobSpec, OnClose};
use crate::store::system::snapshot_table;

/// The month-close hook.
#[derive(Debug, Default)]
pub struct CloseOverlay;

#[async_trait]
impl SessionHook for CloseOverlay {
    async fn prepare(&self, ctx: &SessionContext) -> Result<()> {
        register_closed_months(ctx).await
    }

    async fn job_output(
        &self,
        ctx: &SessionContext,
        spec: &JobSpec,
        df: DataFrame,
    ) -> Result<DataFrame> {
        overlay(ctx, spec, df).await
    }
}

/// For a frozen job: replace the rows of every closed month in `df` by that month's current
/// snapshot. Columns the snapshot lacks (added to the job after the close) read as NULL.
pub async fn overlay(ctx: &SessionContext, spec: &JobSpec, df: DataFrame) -> Result<DataFrame> {
    let Some(close) = spec
        .close
        .as_ref()
        .filter(|c| c.on_close == OnClose::Freeze)
    else {
        return Ok(df);
    };
    // Months whose close froze this table; a table that got `[close]` after a month was closed
    // has nothing frozen for it and shows that month live.
    let closes: Vec<ClosedMonth> = current_closes(ctx)
        .await?
        .into_iter()
        .filter(|c| c.frozen(&spec.table).is_some())
        .collect();
    if closes.is_empty() {
        return Ok(df);
    }
    let month = ident(&close.month_column);
    let closed_months: Vec<Expr> = closes.iter().map(|c| lit(c.month.clone())).collect();
    let live = df.filter(
        month
            .clone()
            .is_null()
            .or(month.in_list(closed_months, true)),
    )?;
    let snap_name = snapshot_table(&spec.table);
    if !ctx.table_exist(snap_name.as_str())? {
        // Fine only when every close froze no rows of this table.
        if let Some(c) = closes.iter().find(|c| c.frozen(&spec.table) > Some(0)) {
            return Err(Error::Job {
                job: spec.name.clone(),
                message: format!(
                    "{} was closed with {} frozen row(s) of `{}`, but the snapshot table `{snap_name}` is missing; restore it (a closed month is never recomputed)",
                    c.month,
                    c.frozen(&spec.table).unwrap_or(0),
                    spec.table
                ),
            });
        }
        return Ok(live);
    }
    let current = closes
        .iter()
        .map(|c| {
            ident("closed_month")
                .eq(lit(c.month.clone()))
                .and(ident("snapshot").eq(lit(c.snapshot)))
        })
        .reduce(Expr::or)
        .expect("at least one close");
    let frozen = ctx.table(snap_name.as_str()).await?.filter(current)?;
    let columns: Vec<Expr> = live
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let value = if frozen.schema().has_column_with_unqualified_name(f.name()) {
                ident(f.name())
            } else {
                lit(ScalarValue::Null)
            };
            cast_expr(value, f.data_type().clone()).alias(f.name())
        })
        .collect();
    Ok(live.union(frozen.select(columns)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;

    use crate::close::log::{LogAction, LogRow, log_batch, stamp};
    use crate::project::spec::CloseSpec;
    use crate::store::system::{CLOSE_LOG, close_log_schema};

    fn spec() -> JobSpec {
        JobSpec {
            sql: String::new(),
            close: Some(CloseSpec {
                month_column: "month".into(),
                on_close: OnClose::Freeze,
                record_id_column: None,
            }),
            ..JobSpec::test_spec("recon")
        }
    }

    fn batch(months: &[&str], amounts: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("month", DataType::Utf8, true),
                Field::new("amount", DataType::Int64, false),
            ])),
            vec![
                Arc::new(StringArray::from(months.to_vec())),
                Arc::new(Int64Array::from(amounts.to_vec())),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_closed_month_shows_its_snapshot_and_open_months_stay_live() {
        let ctx = SessionContext::new();
        // Frozen January: 100. The live table says January is 999 now, February 20.
        let frozen = stamp(&batch(&["2026-01"], &[100]), "2026-01", 1).unwrap();
        ctx.register_table(
            "_closed_recon",
            Arc::new(MemTable::try_new(frozen.schema(), vec![vec![frozen]]).unwrap()),
        )
        .unwrap();
        let log = log_batch(&[LogRow {
            month: "2026-01".into(),
            action: LogAction::Close,
            snapshot: 1,
            at: chrono::DateTime::from_timestamp(100, 0).unwrap(),
            actor: "ana".into(),
            reason: None,
            run_id: "r".into(),
            open_items: 0,
            tables: r#"{"recon":{"rows":1}}"#.into(),
            frozen_tables: "recon".into(),
        }])
        .unwrap();
        ctx.register_table(
            CLOSE_LOG,
            Arc::new(MemTable::try_new(close_log_schema(), vec![vec![log]]).unwrap()),
        )
        .unwrap();
        let live = batch(&["2026-01", "2026-02"], &[999, 20]);
        let df = ctx.read_batch(live).unwrap();
        let out = CloseOverlay
            .job_output(&ctx, &spec(), df)
            .await
            .unwrap()
            .sort(vec![ident("month").sort(true, true)])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&out)
            .unwrap()
            .to_string();
        assert!(text.contains("| 2026-01 | 100    |"), "{text}");
        assert!(text.contains("| 2026-02 | 20     |"), "{text}");
        assert!(!text.contains("999"), "{text}");
    }

    #[tokio::test]
    async fn without_a_close_log_nothing_changes() {
        let ctx = SessionContext::new();
        let df = ctx.read_batch(batch(&["2026-01"], &[5])).unwrap();
        let out = overlay(&ctx, &spec(), df)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(out[0].num_rows(), 1);
    }
}
