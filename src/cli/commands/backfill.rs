//! `retention backfill JOB --from DAY --to DAY`: an incremental job's intervals, one run each, with
//! progress (indicatif on a terminal, log lines otherwise), resumable, `--parallel N` at once.

use std::io::IsTerminal;
use std::sync::Arc;

use chrono::NaiveDate;
use clap::Args;

use crate::error::{Error, Result};
use crate::execute::backfill::{self, IntervalDone};
use crate::ledger::Status;
use crate::plan::workspace::Workspace;

pub const EXAMPLES: &str = "Examples:\n  retention backfill order_experience --from 2026-01-01 --to 2026-03-31\n  retention backfill order_experience --from 2026-01-01 --to 2026-03-31 --parallel 4\n  retention backfill order_experience --from 2025-01-01 --to 2025-12-31 --only-missing --dry-run\n  retention backfill order_experience --from 2026-01-01 --to 2026-01-31 --with-downstream";

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// The incremental job.
    pub job: String,
    /// First day (its interval is the first one run).
    #[arg(long)]
    pub from: NaiveDate,
    /// Last day (its interval is the last one run).
    #[arg(long)]
    pub to: NaiveDate,
    /// Intervals run at once.
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// List the intervals that would run and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Skip intervals any run has already computed with the current SQL and spec.
    #[arg(long)]
    pub only_missing: bool,
    /// Then run the jobs that read this one: incremental ones backfilled over the same days,
    /// the others once.
    #[arg(long)]
    pub with_downstream: bool,
}

pub async fn run(ws: Workspace, args: BackfillArgs) -> Result<()> {
    let ws = Arc::new(ws);
    let mut jobs = vec![args.job.clone()];
    if args.with_downstream {
        let down = crate::values::Selector::with_downstream(&args.job);
        let down = ws.graph.select(&[down], false)?;
        jobs.extend(down.into_iter().filter(|j| j != &args.job));
    }
    let mut failed: Vec<String> = Vec::new();
    for job in &jobs {
        let full = ws
            .graph
            .node(job)
            .is_some_and(|n| n.spec.incremental.is_none());
        if job != &args.job && full {
            if rebuild(&ws, job, args.dry_run).await? > 0 {
                failed.push(format!("`{job}` was not rebuilt"));
            }
            continue;
        }
        let plan = backfill::plan(&ws, job, (args.from, args.to), args.only_missing).await?;
        let todo = plan.todo();
        let (n, left) = (plan.intervals.len(), todo.len());
        println!("{}: {n} interval(s), {left} to run", plan.name);
        if args.dry_run {
            for r in &todo {
                println!("  {} .. {}", r.start, r.end);
            }
            continue;
        }
        let ends = with_progress(ws.clone(), &plan, args.parallel, left as u64).await?;
        let bad = ends
            .iter()
            .filter(|e| e.status != Status::Succeeded)
            .count();
        if bad > 0 {
            failed.push(format!("backfill: {bad} of {n} interval(s) failed"));
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(Error::Job {
        job: args.job.clone(),
        message: format!(
            "{}; run the same backfill again to resume",
            failed.join("; ")
        ),
    })
}

/// Run the backfill with a progress bar on a terminal, else a log line per interval.
async fn with_progress(
    ws: Arc<Workspace>,
    plan: &backfill::BackfillPlan,
    parallel: usize,
    total: u64,
) -> Result<Vec<IntervalDone>> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} intervals, {msg} rows, ETA {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(plan.job.clone());
        bar
    });
    let rows = std::sync::atomic::AtomicI64::new(0);
    let report = |d: &IntervalDone| {
        let total_rows =
            rows.fetch_add(d.rows_written, std::sync::atomic::Ordering::SeqCst) + d.rows_written;
        match &bar {
            Some(bar) => {
                bar.inc(1);
                bar.set_message(total_rows.to_string());
            }
            None => tracing::info!(
                job = %plan.job,
                start = %d.range.start,
                end = %d.range.end,
                status = %d.status,
                rows = d.rows_written,
                error = d.error.as_deref().unwrap_or(""),
                "backfill interval"
            ),
        }
    };
    let ends = backfill::run(ws, plan, parallel, &report).await;
    if let Some(bar) = bar {
        bar.finish();
    }
    ends
}

/// A downstream job that is not incremental: rebuilt once, after the backfill.
async fn rebuild(ws: &Arc<Workspace>, job: &str, dry_run: bool) -> Result<usize> {
    println!("{job}: rebuilt once");
    if dry_run {
        return Ok(0);
    }
    let plan = ws.plan(&[job.to_string()], crate::values::Trigger::Backfill)?;
    let report = crate::execute::execute(ws.clone(), &plan, 1).await?;
    Ok(report.failed())
}
