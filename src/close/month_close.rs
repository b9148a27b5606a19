//! Closing a month (`retention close-month`): the plan (`--dry-run`), the run that brings the
//! finance jobs up to date, the snapshots of every frozen table, the frozen record ids and the log
//! row that commits the close; and re-opening a month with a reason.
//!
//! Storage: `_closed_<table>` holds the snapshots of `<table>`, partitioned by `closed_month` and
//! `snapshot`, and is only ever appended to, so a closed month's files are never rewritten. The
//! row in `_month_close` is the commit point of a close: snapshot rows without one (a close that
//! died half-way) are never read.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::logical_expr::{cast as cast_expr, ident, lit};
use datafusion::prelude::SessionContext;

use crate::close::log::{
    LogAction, LogRow, int_column, latest_for, log_batch, log_rows, next_log_time, records_batch,
    stamp,
};
use crate::error::{Error, Result};
use crate::execute::{self, RunReport};
use crate::ledger::{self, RunRecord, Status};
use crate::plan::graph::Input;
use crate::plan::workspace::Workspace;
use crate::project::spec::OnClose;
use crate::store::delta;
use crate::store::system::{CLOSE_LOG, CLOSED_RECORDS, snapshot_table};
use crate::values::{Month, Selector, Trigger};

/// What the user asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Close,
    Reopen { reason: String },
}

/// A close or re-open request; the clock is injected so tests can fix it.
#[derive(Debug, Clone)]
pub struct Request {
    pub month: Month,
    pub action: Action,
    pub actor: String,
    pub now: DateTime<Utc>,
    /// Jobs run at once by the run before a close.
    pub concurrency: usize,
}

/// What a close will do (`--dry-run` prints it).
#[derive(Debug, Clone)]
pub struct Plan {
    pub month: Month,
    pub action: Action,
    /// The month's latest log row, if any.
    pub latest: Option<LogRow>,
    /// Jobs run first so the snapshot reflects the sources as they are now.
    pub jobs: Vec<String>,
    /// Jobs that report on the close log (the close-candidate report), run after it changes.
    pub after: Vec<String>,
    /// Jobs whose table is frozen, and jobs whose rows are listed as open items.
    pub frozen: Vec<String>,
    pub warn: Vec<String>,
}

impl Plan {
    pub fn render(&self) -> String {
        let mut out = String::new();
        match (&self.action, &self.latest) {
            (Action::Close, Some(l)) if l.action == LogAction::Close => out.push_str(&format!(
                "{} is already closed (snapshot {}, by {} at {}): nothing to do\n",
                self.month, l.snapshot, l.actor, l.at
            )),
            (Action::Close, _) => {
                out.push_str(&format!("close {}\n", self.month));
                out.push_str(&format!("  run first: {}\n", self.jobs.join(", ")));
                out.push_str(&format!("  freeze:    {}\n", self.frozen.join(", ")));
                out.push_str(&format!("  open items from: {}\n", self.warn.join(", ")));
                out.push_str(&format!("  then run:  {}\n", self.after.join(", ")));
            }
            (Action::Reopen { reason }, Some(l)) if l.action == LogAction::Close => {
                out.push_str(&format!(
                    "reopen {} (snapshot {} stays readable in the _closed_* tables), reason: {reason}\n",
                    self.month, l.snapshot
                ));
                let all: Vec<&str> = self
                    .jobs
                    .iter()
                    .chain(&self.after)
                    .map(String::as_str)
                    .collect();
                out.push_str(&format!("  then run: {}\n", all.join(", ")));
            }
            (Action::Reopen { .. }, _) => out.push_str(&format!(
                "{} is not closed: nothing to reopen\n",
                self.month
            )),
        }
        out
    }
}

/// The result of a close or re-open.
#[derive(Debug)]
pub enum Outcome {
    Closed {
        snapshot: i64,
        /// Frozen table, its version, rows frozen.
        frozen: Vec<(String, i64, usize)>,
        /// Open items per `warn` table (rows of the month).
        open_items: Vec<(String, Vec<RecordBatch>)>,
    },
    AlreadyClosed(LogRow),
    Reopened {
        snapshot: i64,
        report: RunReport,
    },
}

pub fn close_jobs(ws: &Workspace, on_close: OnClose) -> Vec<String> {
    ws.graph
        .nodes
        .iter()
        .filter(|n| {
            n.spec
                .close
                .as_ref()
                .is_some_and(|c| c.on_close == on_close)
        })
        .map(|n| n.spec.name.clone())
        .collect()
}

/// A session over the engine-kept close tables, latest versions.
async fn close_session(ws: &Workspace) -> Result<SessionContext> {
    let mut tables: Vec<(String, Arc<dyn TableProvider>)> = Vec::new();
    let mut names = vec![CLOSE_LOG.to_string(), CLOSED_RECORDS.to_string()];
    names.extend(
        close_jobs(ws, OnClose::Freeze)
            .iter()
            .filter_map(|j| ws.graph.node(j))
            .map(|n| snapshot_table(&n.spec.table)),
    );
    for name in names {
        if let Some(t) = delta::open(&ws.engine.stores, &ws.table_url(&name)?).await? {
            tables.push((name, delta::provider(&t).await?));
        }
    }
    ws.engine.session(&tables)
}

/// Plan a close or re-open of `req.month`.
pub async fn plan(ws: &Workspace, req: &Request) -> Result<Plan> {
    let month = req.month.clone();
    let frozen = close_jobs(ws, OnClose::Freeze);
    if frozen.is_empty() {
        return Err(refused(
            &month,
            "no job spec has `[close] on_close = \"freeze\"`: there is nothing to close".into(),
        ));
    }
    let warn = close_jobs(ws, OnClose::Warn);
    // The closable jobs, everything downstream of them, and everything those read.
    let closable: Vec<Selector> = frozen
        .iter()
        .chain(&warn)
        .map(|j| Selector::with_downstream(j))
        .collect();
    let down = ws.graph.select(&closable, false)?;
    let up: Vec<Selector> = down.iter().map(|j| Selector::with_upstream(j)).collect();
    let selected = ws.graph.select(&up, false)?;
    // Jobs that read the close log without being frozen report on it: they run after the close.
    let reads_log: Vec<Selector> = selected
        .iter()
        .filter(|j| {
            let node = ws.graph.node(j).expect("selected job");
            node.spec.close.is_none() && node.inputs.contains(&Input::System(CLOSE_LOG.to_string()))
        })
        .map(|j| Selector::with_downstream(j))
        .collect();
    let after = if reads_log.is_empty() {
        vec![]
    } else {
        ws.graph.select(&reads_log, false)?
    };
    let jobs = selected
        .into_iter()
        .filter(|j| !after.contains(j))
        .collect();
    let ctx = close_session(ws).await?;
    let latest = latest_for(&log_rows(&ctx).await?, month.as_str()).cloned();
    Ok(Plan {
        month,
        action: req.action.clone(),
        latest,
        jobs,
        after,
        frozen,
        warn,
    })
}

/// Carry out a close or re-open plan.
pub async fn execute(ws: Arc<Workspace>, plan: &Plan, req: &Request) -> Result<Outcome> {
    let closed_now = plan
        .latest
        .as_ref()
        .filter(|l| l.action == LogAction::Close);
    match (&plan.action, closed_now) {
        (Action::Close, Some(l)) => Ok(Outcome::AlreadyClosed(l.clone())),
        (Action::Close, None) => close(ws, plan, req).await,
        (Action::Reopen { reason }, Some(l)) => reopen(ws, plan, req, l, reason).await,
        (Action::Reopen { .. }, None) => Err(refused(
            &plan.month,
            format!("{} is not closed: there is nothing to reopen", plan.month),
        )),
    }
}

fn log_time(plan: &Plan, now: DateTime<Utc>) -> DateTime<Utc> {
    next_log_time(plan.latest.as_ref().map(|l| l.at), now)
}

async fn run_jobs(ws: &Arc<Workspace>, jobs: &[String], req: &Request) -> Result<RunReport> {
    let trigger = match req.action {
        Action::Close => Trigger::CloseMonth,
        Action::Reopen { .. } => Trigger::ReopenMonth,
    };
    if jobs.is_empty() {
        return Ok(RunReport::default());
    }
    let run = ws.plan(jobs, trigger)?;
    execute::execute(ws.clone(), &run, req.concurrency.max(1)).await
}

/// Close `plan.month`: bring the close's jobs up to date, read the month's rows at the versions
/// they published, then write the snapshots, the frozen record ids and the log row (the commit
/// point), and run the reports on the close log.
async fn close(ws: Arc<Workspace>, plan: &Plan, req: &Request) -> Result<Outcome> {
    // 1. Bring the reconciliation up to date, so the snapshot is what the sources say now.
    let report = run_jobs(&ws, &plan.jobs, req).await?;
    if report.failed() > 0 {
        let failed: Vec<String> = report
            .outcomes
            .iter()
            .filter(|o| o.status != Status::Succeeded)
            .map(|o| format!("{} ({})", o.job, o.error.as_deref().unwrap_or("failed")))
            .collect();
        return Err(refused(
            &plan.month,
            format!(
                "{} was not closed: the run before the close failed: {}",
                plan.month,
                failed.join("; ")
            ),
        ));
    }
    let run_id = ws.new_run_id();
    // 2. The month's rows of every closable table at the version this run published.
    let month_rows = read_month_rows(&ws, plan, &report).await?;
    let frozen_rows: usize = plan
        .frozen
        .iter()
        .map(|j| month_rows[j].1.iter().map(|b| b.num_rows()).sum::<usize>())
        .sum();
    if frozen_rows == 0 {
        return Err(refused(
            &plan.month,
            format!(
                "{} has no rows in {}: there is nothing to close (is the month right, and has its data arrived?)",
                plan.month,
                plan.frozen.join(", ")
            ),
        ));
    }
    // 3. Someone else closed the month while this close ran its jobs: theirs stands.
    let ctx = close_session(&ws).await?;
    if let Some(l) = latest_for(&log_rows(&ctx).await?, plan.month.as_str())
        .filter(|r| r.action == LogAction::Close)
    {
        return Ok(Outcome::AlreadyClosed(l.clone()));
    }
    let snapshot = next_snapshot(&ws, &ctx, plan).await?;
    // 4. Write the snapshots, then the frozen record ids, then the log row (the commit point).
    let written = write_snapshots(&ws, plan, &month_rows, snapshot).await?;
    let open_items: Vec<(String, Vec<RecordBatch>)> = plan
        .warn
        .iter()
        .map(|j| {
            (
                ws.graph.node(j).expect("job").spec.table.clone(),
                month_rows[j].1.clone(),
            )
        })
        .collect();
    let open_count: usize = open_items
        .iter()
        .flat_map(|(_, b)| b)
        .map(|b| b.num_rows())
        .sum();
    let row = LogRow {
        month: plan.month.to_string(),
        action: LogAction::Close,
        snapshot,
        at: log_time(plan, req.now),
        actor: req.actor.clone(),
        reason: None,
        run_id,
        open_items: open_count as i64,
        tables: serde_json::Value::Object(written.tables_json.clone()).to_string(),
        frozen_tables: written
            .frozen
            .iter()
            .map(|(t, _, _)| t.as_str())
            .collect::<Vec<_>>()
            .join(","),
    };
    commit(&ws, req, row, frozen_rows as i64, written.tables_json).await?;
    // The reports on the close log see the month closed. The close stands even if they fail.
    let after = run_jobs(&ws, &plan.after, req).await?;
    if after.failed() > 0 {
        tracing::warn!(month = %plan.month, "a report run after the close failed; see `retention runs`");
    }
    Ok(Outcome::Closed {
        snapshot,
        frozen: written.frozen,
        open_items,
    })
}

/// Each closable job's version published by the run before the close, and its rows of the month.
type MonthRows = BTreeMap<String, (i64, Vec<RecordBatch>)>;

/// Read the month's rows of every closable table at the version `report`'s run published.
async fn read_month_rows(ws: &Workspace, plan: &Plan, report: &RunReport) -> Result<MonthRows> {
    let mut month_rows = MonthRows::new();
    for job in plan.frozen.iter().chain(&plan.warn) {
        let node = ws.graph.node(job).expect("close job in graph");
        let close = node.spec.close.as_ref().expect("closable");
        let version = report
            .outcomes
            .iter()
            .find(|o| o.job == *job)
            .and_then(|o| o.output_version)
            .ok_or_else(|| refused(&plan.month, format!("job `{job}` published no version")))?;
        let table =
            delta::open_version(&ws.engine.stores, &ws.table_url(&node.spec.table)?, version)
                .await?;
        let ctx = ws.engine.session(&[])?;
        let rows = ctx
            .read_table(delta::provider(&table).await?)?
            .filter(
                cast_expr(ident(&close.month_column), DataType::Utf8)
                    .eq(lit(plan.month.to_string())),
            )?
            .collect()
            .await?;
        month_rows.insert(job.clone(), (version, rows));
    }
    Ok(month_rows)
}

/// The snapshot number: one past any snapshot of this month, including orphans of a close that
/// died before its log row.
async fn next_snapshot(ws: &Workspace, ctx: &SessionContext, plan: &Plan) -> Result<i64> {
    let mut snapshot = 0i64;
    let tables = [CLOSE_LOG.to_string(), CLOSED_RECORDS.to_string()]
        .into_iter()
        .chain(
            plan.frozen
                .iter()
                .map(|j| snapshot_table(&ws.graph.node(j).expect("job").spec.table)),
        );
    for table in tables {
        if !ctx.table_exist(table.as_str())? {
            continue;
        }
        let month_col = if table == CLOSE_LOG {
            "month"
        } else {
            "closed_month"
        };
        let df = ctx
            .table(table.as_str())
            .await?
            .filter(ident(month_col).eq(lit(plan.month.to_string())))?
            .aggregate(
                vec![],
                vec![datafusion::functions_aggregate::expr_fn::max(ident(
                    "snapshot",
                ))],
            )?;
        for b in df.collect().await? {
            let c = int_column(&b, 0)?;
            if !c.is_empty() && !c.is_null(0) {
                snapshot = snapshot.max(c.value(0));
            }
        }
    }
    Ok(snapshot + 1)
}

/// What `write_snapshots` froze.
struct Written {
    /// Frozen table, its version, rows frozen.
    frozen: Vec<(String, i64, usize)>,
    /// frozen table -> {"version", "rows"}, for the log row.
    tables_json: serde_json::Map<String, serde_json::Value>,
}

/// Append each frozen table's month rows to its snapshot table, then the frozen record ids.
async fn write_snapshots(
    ws: &Workspace,
    plan: &Plan,
    month_rows: &MonthRows,
    snapshot: i64,
) -> Result<Written> {
    let month = plan.month.as_str();
    let mut written = Written {
        frozen: Vec::new(),
        tables_json: serde_json::Map::new(),
    };
    let mut record_ids: Vec<RecordBatch> = Vec::new();
    for job in &plan.frozen {
        let node = ws.graph.node(job).expect("job");
        let close = node.spec.close.as_ref().expect("closable");
        let (version, batches) = &month_rows[job];
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        written.tables_json.insert(
            node.spec.table.clone(),
            serde_json::json!({"version": version, "rows": rows}),
        );
        written
            .frozen
            .push((node.spec.table.clone(), *version, rows));
        if rows == 0 {
            continue;
        }
        let stamped = batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| stamp(b, month, snapshot))
            .collect::<Result<Vec<_>>>()?;
        delta::append(
            &ws.engine.stores,
            &ws.engine.project.curated,
            &snapshot_table(&node.spec.table),
            stamped,
            &["closed_month", "snapshot"],
            &format!("closed-month snapshots of {}", node.spec.table),
        )
        .await
        .map_err(|e| Error::Close {
            month: month.to_string(),
            message: format!(
                "{month} was not closed: its snapshot of `{}` could not be written ({e}). If a column of the job changed type since an earlier close, snapshots keep the old type: give the column a new name",
                node.spec.table
            ),
            source: Some(Box::new(e)),
        })?;
        if let Some(id_col) = &close.record_id_column {
            for b in batches.iter().filter(|b| b.num_rows() > 0) {
                record_ids.push(record_id_batch(
                    plan,
                    &node.spec.table,
                    id_col,
                    b,
                    snapshot,
                )?);
            }
        }
    }
    if !record_ids.is_empty() {
        delta::append(
            &ws.engine.stores,
            &ws.engine.project.curated,
            CLOSED_RECORDS,
            record_ids,
            &["closed_month"],
            "record ids frozen by month close",
        )
        .await?;
    }
    Ok(written)
}

/// The `_closed_entries` rows of one frozen batch: every row must name its record.
fn record_id_batch(
    plan: &Plan,
    table: &str,
    id_col: &str,
    b: &RecordBatch,
    snapshot: i64,
) -> Result<RecordBatch> {
    let idx = b.schema().index_of(id_col).map_err(|_| {
        refused(
            &plan.month,
            format!("`{table}` has no column `{id_col}` (close.record_id_column)"),
        )
    })?;
    let ids = cast(b.column(idx), &DataType::Int64)?;
    if ids.null_count() > 0 {
        return Err(refused(
            &plan.month,
            format!(
                "`{table}`.{id_col} has NULL ids for {}: every frozen row must name its record",
                plan.month
            ),
        ));
    }
    records_batch(plan.month.as_str(), snapshot, table, ids)
}

/// A close or re-open refused or failed, with why.
fn refused(month: &Month, message: String) -> Error {
    Error::Close {
        month: month.to_string(),
        message,
        source: None,
    }
}

async fn reopen(
    ws: Arc<Workspace>,
    plan: &Plan,
    req: &Request,
    closed: &LogRow,
    reason: &str,
) -> Result<Outcome> {
    if reason.trim().is_empty() {
        return Err(refused(
            &plan.month,
            "re-opening a month needs a reason: --reopen --reason \"...\"".into(),
        ));
    }
    let run_id = ws.new_run_id();
    let at = log_time(plan, req.now);
    let row = LogRow {
        month: plan.month.to_string(),
        action: LogAction::Reopen,
        snapshot: closed.snapshot,
        at,
        actor: req.actor.clone(),
        reason: Some(reason.to_string()),
        run_id: run_id.clone(),
        open_items: 0,
        tables: closed.tables.clone(),
        frozen_tables: closed.frozen_tables.clone(),
    };
    commit(&ws, req, row, 0, serde_json::Map::new()).await?;
    // The live tables show the month recomputed from the sources again.
    let all: Vec<String> = plan.jobs.iter().chain(&plan.after).cloned().collect();
    let report = run_jobs(&ws, &all, req).await?;
    Ok(Outcome::Reopened {
        snapshot: closed.snapshot,
        report,
    })
}

/// Append `row` to the close log, the commit point of a close or re-open, and record it as a
/// `_runs` row (who, when, why; `input_versions` = `frozen`). A ledger failure is logged: the
/// close stands.
async fn commit(
    ws: &Workspace,
    req: &Request,
    row: LogRow,
    rows_written: i64,
    frozen: serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let log_version = delta::append(
        &ws.engine.stores,
        &ws.engine.project.curated,
        CLOSE_LOG,
        vec![log_batch(std::slice::from_ref(&row))?],
        &[],
        "month close log",
    )
    .await?;
    let trigger = match row.action {
        LogAction::Close => Trigger::Close,
        LogAction::Reopen => Trigger::Reopen,
    };
    let job = format!("close-month {}", row.month);
    let rec = RunRecord {
        rows_written,
        input_versions: serde_json::Value::Object(frozen).to_string(),
        output_version: Some(log_version),
        actor: Some(req.actor.clone()),
        reason: row.reason,
        ..RunRecord::at(row.run_id, job, trigger, row.at, Status::Succeeded)
    };
    if let Err(e) = ledger::append(&ws.engine.stores, &ws.engine.project.curated, &[rec]).await {
        tracing::error!(error = %e, "run ledger not written for the month close");
    }
    Ok(())
}
