//! `retention backfill`: an incremental job's intervals between two days, one run each, in order or
//! `parallel` at once. A backfill is named by its job, days and spec hash; its runs carry that name
//! in `_runs.reason`, so running the same backfill again resumes it, skipping the intervals it
//! already finished. `only_missing` also skips intervals any run has done.

use std::sync::Arc;

use chrono::NaiveDate;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::execute::execute;
use crate::ledger::{self, Status};
use crate::plan::workspace::Workspace;
use crate::project::incremental::{Incremental, Range};
use crate::values::{AsOf, Trigger};

/// What a backfill will do.
#[derive(Debug, Clone)]
pub struct BackfillPlan {
    pub job: String,
    /// `backfill <job> <from>..<to> <hash>`: recorded in `_runs.reason`.
    pub name: String,
    /// Every interval from the one holding `from` through the one holding `to`.
    pub intervals: Vec<Range>,
    /// The intervals this backfill (or, with `only_missing`, any run) already finished.
    pub done: Vec<Range>,
}

impl BackfillPlan {
    /// The intervals left to run, in order.
    pub fn todo(&self) -> Vec<Range> {
        self.intervals
            .iter()
            .filter(|r| {
                !self
                    .done
                    .iter()
                    .any(|d| d.start <= r.start && r.end <= d.end)
            })
            .copied()
            .collect()
    }
}

/// How one interval ended, reported as the backfill goes.
#[derive(Debug, Clone)]
pub struct IntervalDone {
    pub range: Range,
    pub status: Status,
    pub rows_written: i64,
    pub error: Option<String>,
}

/// The incremental settings of `job`, or why it cannot be backfilled.
pub fn incremental_of<'a>(ws: &'a Workspace, job: &str) -> Result<&'a Incremental> {
    let node = ws.graph.node(job).ok_or_else(|| Error::Selector {
        selector: job.to_string(),
    })?;
    node.spec.incremental.as_ref().ok_or_else(|| Error::Argument {
        flag: "backfill",
        key: job.to_string(),
        message: "is not incremental (`kind = \"incremental\"`): rebuild it with `retention run`, or as of a past day with `--as-of`".into(),
    })
}

/// The plan of backfilling `job` from `from` through `to`.
pub async fn plan(
    ws: &Workspace,
    job: &str,
    (from, to): (NaiveDate, NaiveDate),
    only_missing: bool,
) -> Result<BackfillPlan> {
    let inc = incremental_of(ws, job)?;
    if to < from {
        return Err(Error::Argument {
            flag: "--to",
            key: to.to_string(),
            message: format!("is before --from {from}"),
        });
    }
    let hash = &ws.graph.node(job).expect("checked").spec.spec_hash;
    let name = format!(
        "backfill {job} {from}..{to} {}",
        &hash[..12.min(hash.len())]
    );
    let mut intervals = Vec::new();
    let mut day = inc.grain.floor(from);
    while day <= to {
        let next = inc.grain.next(day);
        intervals.push(Range {
            start: day,
            end: next,
        });
        day = next;
    }
    let runs = ledger::done_runs(&ws.engine, &ws.engine.project.curated, job).await?;
    let done = runs
        .into_iter()
        .filter(|r| {
            r.reason.as_deref() == Some(name.as_str())
                || (only_missing && r.spec_hash.as_deref() == Some(hash))
        })
        .map(|r| r.range)
        .collect();
    Ok(BackfillPlan {
        job: job.to_string(),
        name,
        intervals,
        done,
    })
}

/// Run the plan's intervals left, `parallel` at once; `progress` hears of each as it ends.
/// Returns every interval's end, in the order they ended.
pub async fn run(
    ws: Arc<Workspace>,
    plan: &BackfillPlan,
    parallel: usize,
    progress: &(dyn Fn(&IntervalDone) + Sync),
) -> Result<Vec<IntervalDone>> {
    let mut todo = plan.todo();
    let mut ends = Vec::new();
    // Intervals running at once cannot all create the table: the first one does, alone.
    let url = ws.table_url(&ws.graph.node(&plan.job).expect("planned").spec.table)?;
    if !todo.is_empty() && !crate::store::delta::has_log(&ws.engine.stores, &url).await? {
        let end = run_interval(ws.clone(), plan, todo.remove(0)).await?;
        progress(&end);
        ends.push(end);
    }
    let mut runs = futures::stream::iter(todo)
        .map(|range| run_interval(ws.clone(), plan, range))
        .buffer_unordered(parallel.max(1));
    while let Some(end) = runs.next().await {
        let end = end?;
        progress(&end);
        ends.push(end);
    }
    Ok(ends)
}

/// One interval: the job alone, as of the interval's last day, computing exactly its days.
async fn run_interval(
    ws: Arc<Workspace>,
    plan: &BackfillPlan,
    range: Range,
) -> Result<IntervalDone> {
    let last_day = range.end.pred_opt().expect("a day before the end");
    let mut run = ws.plan_as_of(
        std::slice::from_ref(&plan.job),
        Trigger::Backfill,
        Some(AsOf::Day(last_day)),
    )?;
    run.interval = Some(range);
    run.reason = Some(plan.name.clone());
    let report = execute(ws.clone(), &run, 1).await?;
    let o = report.outcomes.into_iter().next().expect("one job");
    Ok(IntervalDone {
        range,
        status: o.status,
        rows_written: o.rows_written,
        error: o.error,
    })
}
