//! Month close: freezing a month of every frozen table (`[close]` in its job spec) as an
//! immutable snapshot, the close log `_month_close`, the frozen record ids `_closed_entries`, and
//! the overlay that makes every later run show a closed month exactly as it was frozen.
//!
//! Storage: `_closed_<table>` holds the snapshots of `<table>`, partitioned by `closed_month` and
//! `snapshot`, and is only ever appended to, so a closed month's files are never rewritten. The
//! row in `_month_close` is the commit point of a close: snapshot rows without one (a close that
//! died half-way) are never read.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, cast as cast_expr, ident, lit};
use datafusion::prelude::{DataFrame, SessionContext};

use crate::curated;
use crate::error::{Error, Result};
use crate::ledger::{self, RunRecord, Status};
use crate::runner::{self, RunReport, Workspace};
use crate::spec::{JobSpec, OnClose};

/// The close log: one row per close and re-open.
pub const CLOSE_LOG: &str = "_month_close";
/// The record ids (e.g. ledger entry ids) frozen into each snapshot.
pub const CLOSED_RECORDS: &str = "_closed_entries";
/// A view over the close log: the months closed now, one row each.
pub const CLOSED_MONTHS: &str = "_closed_months";

/// The snapshot table of a frozen table.
pub fn snapshot_table(table: &str) -> String {
    format!("_closed_{table}")
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `_month_close` schema.
pub fn log_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("month", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("snapshot", DataType::Int64, false),
        Field::new("at", utc_micros(), false),
        Field::new("actor", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, true),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("open_items", DataType::Int64, false),
        Field::new("tables", DataType::Utf8, false),
        Field::new("frozen_tables", DataType::Utf8, false),
    ]))
}

/// `_closed_entries` schema.
pub fn records_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("closed_month", DataType::Utf8, false),
        Field::new("snapshot", DataType::Int64, false),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("record_id", DataType::Int64, false),
    ]))
}

/// Schema of an engine-kept table with a fixed schema (`_closed_<table>` has its table's).
pub fn fixed_system_schema(table: &str) -> Option<SchemaRef> {
    match table {
        ledger::RUNS_TABLE => Some(ledger::schema()),
        CLOSE_LOG => Some(log_schema()),
        CLOSED_RECORDS => Some(records_schema()),
        _ => None,
    }
}

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

fn string_column(b: &RecordBatch, i: usize) -> Result<StringArray> {
    let a = cast(b.column(i), &DataType::Utf8)?;
    Ok(a.as_any()
        .downcast_ref::<StringArray>()
        .expect("cast to Utf8")
        .clone())
}

fn int_column(b: &RecordBatch, i: usize) -> Result<Int64Array> {
    let a = cast(b.column(i), &DataType::Int64)?;
    Ok(a.as_any()
        .downcast_ref::<Int64Array>()
        .expect("cast to Int64")
        .clone())
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

/// One row of `_month_close`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    pub month: String,
    /// `close` or `reopen`.
    pub action: String,
    pub snapshot: i64,
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

fn log_batch(rows: &[LogRow]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&LogRow) -> String| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let columns: Vec<ArrayRef> = vec![
        s(&|r| r.month.clone()),
        s(&|r| r.action.clone()),
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.snapshot).collect::<Vec<_>>(),
        )),
        Arc::new(
            TimestampMicrosecondArray::from(
                rows.iter()
                    .map(|r| r.at.timestamp_micros())
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
        s(&|r| r.actor.clone()),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.reason.clone()).collect::<Vec<_>>(),
        )),
        s(&|r| r.run_id.clone()),
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.open_items).collect::<Vec<_>>(),
        )),
        s(&|r| r.tables.clone()),
        s(&|r| r.frozen_tables.clone()),
    ];
    Ok(RecordBatch::try_new(log_schema(), columns)?)
}

/// A month's latest row in the close log (rows oldest first): its current state.
fn latest_for<'a>(log: &'a [LogRow], month: &str) -> Option<&'a LogRow> {
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
                action: action.value(i).to_string(),
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

/// What the user asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Close,
    Reopen { reason: String },
}

/// A close or re-open request; the clock is injected so tests can fix it.
#[derive(Debug, Clone)]
pub struct Request {
    pub month: String,
    pub action: Action,
    pub actor: String,
    pub now: DateTime<Utc>,
    /// Jobs run at once by the run before a close.
    pub concurrency: usize,
}

/// What a close will do (`--dry-run` prints it).
#[derive(Debug, Clone)]
pub struct Plan {
    pub month: String,
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
            (Action::Close, Some(l)) if l.action == "close" => out.push_str(&format!(
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
            (Action::Reopen { reason }, Some(l)) if l.action == "close" => {
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

fn close_jobs(ws: &Workspace, on_close: OnClose) -> Vec<String> {
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
        if let Some(t) = curated::open(&ws.engine.stores, &ws.table_url(&name)?).await? {
            tables.push((name, curated::provider(&t).await?));
        }
    }
    ws.engine.session(&tables)
}

/// Plan a close or re-open of `req.month`.
pub async fn plan(ws: &Workspace, req: &Request) -> Result<Plan> {
    let month = crate::export::parse_month(&req.month)?;
    let frozen = close_jobs(ws, OnClose::Freeze);
    if frozen.is_empty() {
        return Err(Error::Job {
            job: "close-month".into(),
            message: "no job spec has `[close] on_close = \"freeze\"`: there is nothing to close"
                .into(),
        });
    }
    let warn = close_jobs(ws, OnClose::Warn);
    // The closable jobs, everything downstream of them, and everything those read.
    let closable: Vec<String> = frozen
        .iter()
        .chain(&warn)
        .map(|j| format!("{j}+"))
        .collect();
    let down = ws.graph.select(&closable, false)?;
    let up: Vec<String> = down.iter().map(|j| format!("+{j}")).collect();
    let selected = ws.graph.select(&up, false)?;
    // Jobs that read the close log without being frozen report on it: they run after the close.
    let reads_log: Vec<String> = selected
        .iter()
        .filter(|j| {
            let node = ws.graph.node(j).expect("selected job");
            node.spec.close.is_none()
                && node
                    .inputs
                    .contains(&crate::dag::Input::System(CLOSE_LOG.to_string()))
        })
        .map(|j| format!("{j}+"))
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
    let latest = latest_for(&log_rows(&ctx).await?, &month).cloned();
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
    let closed_now = plan.latest.as_ref().filter(|l| l.action == "close");
    match (&plan.action, closed_now) {
        (Action::Close, Some(l)) => Ok(Outcome::AlreadyClosed(l.clone())),
        (Action::Close, None) => close(ws, plan, req).await,
        (Action::Reopen { reason }, Some(l)) => reopen(ws, plan, req, l, reason).await,
        (Action::Reopen { .. }, None) => Err(Error::Job {
            job: "close-month".into(),
            message: format!("{} is not closed: there is nothing to reopen", plan.month),
        }),
    }
}

/// A log time strictly after `latest`, so the order of a month's actions never ties.
fn next_log_time(latest: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    match latest {
        Some(l) if l >= now => l + chrono::Duration::microseconds(1),
        _ => now,
    }
}

fn log_time(plan: &Plan, now: DateTime<Utc>) -> DateTime<Utc> {
    next_log_time(plan.latest.as_ref().map(|l| l.at), now)
}

async fn run_jobs(ws: &Arc<Workspace>, jobs: &[String], req: &Request) -> Result<RunReport> {
    let trigger = match req.action {
        Action::Close => "close-month",
        Action::Reopen { .. } => "reopen-month",
    };
    if jobs.is_empty() {
        return Ok(RunReport::default());
    }
    let run = ws.plan(jobs, trigger)?;
    runner::execute(ws.clone(), &run, req.concurrency.max(1)).await
}

async fn close(ws: Arc<Workspace>, plan: &Plan, req: &Request) -> Result<Outcome> {
    let fail = |message: String| Error::Job {
        job: "close-month".into(),
        message,
    };
    // 1. Bring the reconciliation up to date, so the snapshot is what the sources say now.
    let report = run_jobs(&ws, &plan.jobs, req).await?;
    if report.failed() > 0 {
        let failed: Vec<String> = report
            .outcomes
            .iter()
            .filter(|o| o.status != Status::Succeeded)
            .map(|o| format!("{} ({})", o.job, o.error.as_deref().unwrap_or("failed")))
            .collect();
        return Err(fail(format!(
            "{} was not closed: the run before the close failed: {}",
            plan.month,
            failed.join("; ")
        )));
    }
    let run_id = runner::new_run_id();
    let version_of = |job: &str| {
        report
            .outcomes
            .iter()
            .find(|o| o.job == job)
            .and_then(|o| o.output_version)
    };

    // 2. Read the month's rows of every closable table at the version this run published.
    let mut month_rows: BTreeMap<String, (i64, Vec<RecordBatch>)> = BTreeMap::new();
    for job in plan.frozen.iter().chain(&plan.warn) {
        let node = ws.graph.node(job).expect("close job in graph");
        let close = node.spec.close.as_ref().expect("closable");
        let version =
            version_of(job).ok_or_else(|| fail(format!("job `{job}` published no version")))?;
        let table =
            curated::open_version(&ws.engine.stores, &ws.table_url(&node.spec.table)?, version)
                .await?;
        let ctx = ws.engine.session(&[])?;
        let rows = ctx
            .read_table(curated::provider(&table).await?)?
            .filter(
                cast_expr(ident(&close.month_column), DataType::Utf8).eq(lit(plan.month.clone())),
            )?
            .collect()
            .await?;
        month_rows.insert(job.clone(), (version, rows));
    }
    let frozen_rows: usize = plan
        .frozen
        .iter()
        .map(|j| month_rows[j].1.iter().map(|b| b.num_rows()).sum::<usize>())
        .sum();
    if frozen_rows == 0 {
        return Err(fail(format!(
            "{} has no rows in {}: there is nothing to close (is the month right, and has its data arrived?)",
            plan.month,
            plan.frozen.join(", ")
        )));
    }

    // 3. The snapshot number: one past any snapshot of this month, including orphans of a close
    //    that died before its log row.
    let ctx = close_session(&ws).await?;
    // Someone else closed the month while this close ran its jobs: theirs stands.
    if let Some(l) = latest_for(&log_rows(&ctx).await?, &plan.month).filter(|r| r.action == "close")
    {
        return Ok(Outcome::AlreadyClosed(l.clone()));
    }
    let mut snapshot = 0i64;
    for table in std::iter::once(CLOSE_LOG.to_string())
        .chain(std::iter::once(CLOSED_RECORDS.to_string()))
        .chain(
            plan.frozen
                .iter()
                .map(|j| snapshot_table(&ws.graph.node(j).expect("job").spec.table)),
        )
    {
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
            .filter(ident(month_col).eq(lit(plan.month.clone())))?
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
    let snapshot = snapshot + 1;

    // 4. Write the snapshots, then the frozen record ids, then the log row (the commit point).
    let stores = &ws.engine.stores;
    let root = &ws.engine.project.curated;
    let mut frozen = Vec::new();
    let mut record_ids: Vec<(String, Int64Array)> = Vec::new();
    let mut tables_json = serde_json::Map::new();
    for job in &plan.frozen {
        let node = ws.graph.node(job).expect("job");
        let close = node.spec.close.as_ref().expect("closable");
        let (version, batches) = &month_rows[job];
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        tables_json.insert(
            node.spec.table.clone(),
            serde_json::json!({"version": version, "rows": rows}),
        );
        frozen.push((node.spec.table.clone(), *version, rows));
        if rows == 0 {
            continue;
        }
        let stamped = batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| stamp(b, &plan.month, snapshot))
            .collect::<Result<Vec<_>>>()?;
        curated::append(
            stores,
            root,
            &snapshot_table(&node.spec.table),
            stamped,
            &["closed_month", "snapshot"],
            &format!("closed-month snapshots of {}", node.spec.table),
        )
        .await
        .map_err(|e| {
            fail(format!(
                "{} was not closed: its snapshot of `{}` could not be written ({e}). If a column of the job changed type since an earlier close, snapshots keep the old type: give the column a new name",
                plan.month, node.spec.table
            ))
        })?;
        if let Some(id_col) = &close.record_id_column {
            for b in batches.iter().filter(|b| b.num_rows() > 0) {
                let idx = b.schema().index_of(id_col).map_err(|_| {
                    fail(format!(
                        "`{}` has no column `{id_col}` (close.record_id_column)",
                        node.spec.table
                    ))
                })?;
                let ids = cast(b.column(idx), &DataType::Int64)?;
                let ids = ids
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("Int64")
                    .clone();
                if ids.null_count() > 0 {
                    return Err(fail(format!(
                        "`{}`.{id_col} has NULL ids for {}: every frozen row must name its record",
                        node.spec.table, plan.month
                    )));
                }
                record_ids.push((node.spec.table.clone(), ids));
            }
        }
    }
    if !record_ids.is_empty() {
        let batches = record_ids
            .into_iter()
            .map(|(table, ids)| records_batch(&plan.month, snapshot, &table, Arc::new(ids)))
            .collect::<Result<Vec<_>>>()?;
        curated::append(
            stores,
            root,
            CLOSED_RECORDS,
            batches,
            &["closed_month"],
            "record ids frozen by month close",
        )
        .await?;
    }
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
    let at = log_time(plan, req.now);
    let row = LogRow {
        month: plan.month.clone(),
        action: "close".into(),
        snapshot,
        at,
        actor: req.actor.clone(),
        reason: None,
        run_id: run_id.clone(),
        open_items: open_count as i64,
        tables: serde_json::Value::Object(tables_json.clone()).to_string(),
        frozen_tables: frozen
            .iter()
            .map(|(t, _, _)| t.as_str())
            .collect::<Vec<_>>()
            .join(","),
    };
    commit(&ws, req, row, frozen_rows as i64, tables_json).await?;
    // The reports on the close log see the month closed. The close stands even if they fail.
    let after = run_jobs(&ws, &plan.after, req).await?;
    if after.failed() > 0 {
        tracing::warn!(month = %plan.month, "a report run after the close failed; see `retention runs`");
    }
    Ok(Outcome::Closed {
        snapshot,
        frozen,
        open_items,
    })
}

/// `_closed_entries` rows: the ids (Int64) frozen from `table` into a snapshot of `month`.
fn records_batch(month: &str, snapshot: i64, table: &str, ids: ArrayRef) -> Result<RecordBatch> {
    let n = ids.len();
    Ok(RecordBatch::try_new(
        records_schema(),
        vec![
            Arc::new(StringArray::from(vec![month.to_string(); n])),
            Arc::new(Int64Array::from(vec![snapshot; n])),
            Arc::new(StringArray::from(vec![table.to_string(); n])),
            ids,
        ],
    )?)
}

/// Prefix a batch with `closed_month` and `snapshot`.
fn stamp(b: &RecordBatch, month: &str, snapshot: i64) -> Result<RecordBatch> {
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

async fn reopen(
    ws: Arc<Workspace>,
    plan: &Plan,
    req: &Request,
    closed: &LogRow,
    reason: &str,
) -> Result<Outcome> {
    if reason.trim().is_empty() {
        return Err(Error::Job {
            job: "close-month".into(),
            message: "re-opening a month needs a reason: --reopen --reason \"...\"".into(),
        });
    }
    let run_id = runner::new_run_id();
    let at = log_time(plan, req.now);
    let row = LogRow {
        month: plan.month.clone(),
        action: "reopen".into(),
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
    let log_version = curated::append(
        &ws.engine.stores,
        &ws.engine.project.curated,
        CLOSE_LOG,
        vec![log_batch(std::slice::from_ref(&row))?],
        &[],
        "month close log",
    )
    .await?;
    let rec = RunRecord {
        run_id: row.run_id,
        job: format!("close-month {}", row.month),
        trigger: row.action,
        started_at: row.at,
        finished_at: row.at,
        status: Status::Succeeded,
        rows_read: 0,
        rows_written,
        bytes_read: 0,
        input_versions: serde_json::Value::Object(frozen).to_string(),
        output_version: Some(log_version),
        error: None,
        actor: Some(req.actor.clone()),
        reason: row.reason,
    };
    if let Err(e) = ledger::append(&ws.engine.stores, &ws.engine.project.curated, &[rec]).await {
        tracing::error!(error = %e, "run ledger not written for the month close");
    }
    Ok(())
}

/// For SQL tests: freeze `month` of the frozen tables registered in `ctx` into in-memory
/// `_closed_*` tables and the close log, as `close` does in storage.
pub async fn close_in_memory(
    ctx: &SessionContext,
    ws: &Workspace,
    month: &str,
    at: DateTime<Utc>,
) -> Result<i64> {
    let month = crate::export::parse_month(month)?;
    let log = log_rows(ctx).await?;
    let month_log: Vec<&LogRow> = log.iter().filter(|r| r.month == month).collect();
    if let Some(closed) = latest_for(&log, &month).filter(|r| r.action == "close") {
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
        action: "close".into(),
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

/// For SQL tests: re-open `month` in the in-memory close log.
pub async fn reopen_in_memory(
    ctx: &SessionContext,
    month: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    let log = log_rows(ctx).await?;
    let Some(last) = latest_for(&log, month).filter(|r| r.action == "close") else {
        return Err(Error::Job {
            job: "close-month".into(),
            message: format!("{month} is not closed: there is nothing to reopen"),
        });
    };
    let row = LogRow {
        action: "reopen".into(),
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
