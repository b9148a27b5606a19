//! `retention schedule`: every job on its cron schedule until stopped, or the firings of a window
//! with `--dry-run`.

use std::sync::Arc;

use clap::Args;

use crate::error::Result;
use crate::plan::workspace::Workspace;

pub const EXAMPLES: &str = "Examples:\n  retention schedule\n  retention schedule --dry-run                        # the next 7 days of firings\n  retention schedule --dry-run --from 2026-11-30 --days 3";

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// List the firings of a window and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Start of the --dry-run window (YYYY-MM-DD, UTC; default now).
    #[arg(long, requires = "dry_run")]
    pub from: Option<chrono::NaiveDate>,
    /// Length of the --dry-run window in days.
    #[arg(long, default_value_t = 7, requires = "dry_run")]
    pub days: u32,
    /// Jobs run at once per firing (overrides engine.jobs).
    #[arg(long, short = 'j', env = "RETENTION_JOBS")]
    pub jobs: Option<usize>,
}

pub async fn run(ws: Workspace, args: ScheduleArgs) -> Result<()> {
    let now = ws.engine.clock.now();
    if args.dry_run {
        let from = args
            .from
            .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
            .unwrap_or(now);
        let to = from + chrono::Duration::days(i64::from(args.days));
        for (at, jobs) in crate::schedule::firings(&ws, from, to)? {
            println!(
                "{}  {}",
                at.format("%Y-%m-%d %H:%M:%S UTC"),
                jobs.join(", ")
            );
        }
        return Ok(());
    }
    for p in crate::schedule::order_problems(&ws, now)? {
        tracing::warn!("{p}");
    }
    let concurrency = ws.engine.project.jobs;
    crate::schedule::serve(Arc::new(ws), concurrency, shutdown_signal()).await
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
