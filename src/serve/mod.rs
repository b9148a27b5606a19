//! The unattended daemon (`retention serve`): tokio-cron-scheduler fires each scheduled job's cron
//! in its time zone, and each firing ensures the job's slot (`daemon`); a sweep at start-up and
//! every `sweep` interval runs the slots missed while no daemon ran (per the job's `catchup`) and
//! takes over slots whose holder stopped. On the first signal no new slot starts and running ones
//! get `grace` to finish; then they are abandoned without publishing. A second signal stops at
//! once. `slots` computes the cron instants; `status` is what `retention status` shows.

pub mod daemon;
pub mod http;
pub mod metrics;
pub mod report;
pub mod slots;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::error::{Error, Result};
use crate::project::run_policy::Catchup;
use crate::serve::daemon::Daemon;
use crate::serve::slots::JobCron;

/// How many recently claimed slots per job a sweep checks for a holder that stopped.
const RECENT_CLAIMS: usize = 3;
/// At most this many missed slots per job are run with `catchup = "all"`.
const MAX_CATCHUP: usize = 1000;

/// How the serve loop behaves (flags).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// After the first signal, how long running jobs may take before they are abandoned.
    pub grace: Duration,
    /// How often missed and orphaned slots are looked for.
    pub sweep: Duration,
}

/// The slots of `cron`'s job to ensure now: missed slots per its `catchup`, and recent claimed
/// slots not yet finished (their holder may have stopped; `ensure` waits for it or takes over).
pub async fn due_slots(
    daemon: &Daemon,
    cron: &JobCron,
    catchup: Catchup,
    now: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>> {
    let claimed = daemon.leases().claimed_slots(&cron.job).await?;
    let mut due = Vec::new();
    for slot in claimed.iter().rev().take(RECENT_CLAIMS).rev() {
        if !daemon.leases().is_done(&cron.job, *slot).await? {
            due.push(*slot);
        }
    }
    let missed: Vec<DateTime<Utc>> = match claimed.last() {
        Some(last) => cron
            .slots(
                *last + chrono::Duration::seconds(1),
                now + chrono::Duration::seconds(1),
            )
            .into_iter()
            .filter(|s| s > last)
            .collect(),
        // Never run by a daemon: only its newest slot is owed.
        None => cron.latest(now).into_iter().collect(),
    };
    match catchup {
        Catchup::None => {}
        Catchup::Latest => due.extend(missed.last()),
        Catchup::All => {
            if missed.len() > MAX_CATCHUP {
                tracing::warn!(job = %cron.job, missed = missed.len(), "more missed slots than catchup runs: only the newest {MAX_CATCHUP} run");
            }
            due.extend(missed.iter().rev().take(MAX_CATCHUP).rev());
        }
    }
    Ok(due)
}

/// One sweep: every scheduled job's due slots, one task per job running them in slot order.
pub async fn sweep(daemon: &Arc<Daemon>) -> Result<()> {
    let now = daemon.ws.engine.clock.now();
    for cron in slots::crons(&daemon.ws)? {
        let catchup = daemon
            .ws
            .graph
            .node(&cron.job)
            .map(|n| n.spec.policy.catchup)
            .unwrap_or_default();
        let due = due_slots(daemon, &cron, catchup, now).await?;
        daemon.spawn_in_order(&cron.job, due);
    }
    // A report missed while no daemon ran: only the newest is written.
    if let Some(cron) = slots::report_cron(&daemon.ws)? {
        for slot in due_slots(daemon, &cron, Catchup::Latest, now).await? {
            report::spawn(daemon, slot);
        }
    }
    Ok(())
}

fn scheduler_error(e: tokio_cron_scheduler::JobSchedulerError) -> Error {
    Error::Schedule {
        message: e.to_string(),
        source: Some(Box::new(e)),
    }
}

/// The scheduler job firing `cron`: at each firing, `start` the newest slot at or before now.
fn firing(
    daemon: &Arc<Daemon>,
    cron: JobCron,
    start: fn(&Arc<Daemon>, &str, DateTime<Utc>),
) -> Result<Job> {
    let d = daemon.clone();
    let expr = cron.expr.clone();
    Job::new_async_tz(expr.as_str(), cron.timezone, move |_, _| {
        let (daemon, cron) = (d.clone(), cron.clone());
        Box::pin(async move {
            if let Some(slot) = cron.latest(daemon.ws.engine.clock.now()) {
                start(&daemon, &cron.job, slot);
            }
        })
    })
    .map_err(scheduler_error)
}

/// Run the daemon until signalled: each message on `signals` is one SIGTERM or SIGINT. `http`,
/// when given, serves `/healthz`, `/metrics` and `/runs` until the daemon stops.
pub async fn serve(
    daemon: Arc<Daemon>,
    options: ServeOptions,
    http: Option<tokio::net::TcpListener>,
    signals: mpsc::Receiver<()>,
) -> Result<()> {
    let crons = slots::crons(&daemon.ws)?;
    let report_cron = slots::report_cron(&daemon.ws)?;
    if crons.is_empty() && report_cron.is_none() {
        return Err(Error::Schedule {
            message: "no job has a `schedule` and [report] has none: nothing to run".into(),
            source: None,
        });
    }
    let http_stop = tokio_util::sync::CancellationToken::new();
    if let Some(listener) = http {
        let (d, stop) = (daemon.clone(), http_stop.clone());
        tokio::spawn(async move {
            if let Err(e) = http::serve(listener, d, stop).await {
                tracing::error!(error = %e, "http stopped");
            }
        });
    }
    let scheduler = JobScheduler::new().await.map_err(scheduler_error)?;
    for cron in crons {
        tracing::info!(job = %cron.job, schedule = %cron.expr, timezone = %cron.timezone, "scheduled");
        let job = firing(&daemon, cron, |daemon, job, slot| daemon.spawn(job, slot))?;
        scheduler.add(job).await.map_err(scheduler_error)?;
    }
    if let Some(cron) = report_cron {
        tracing::info!(job = %cron.job, schedule = %cron.expr, timezone = %cron.timezone, "report scheduled");
        let job = firing(&daemon, cron, |daemon, _, slot| report::spawn(daemon, slot))?;
        scheduler.add(job).await.map_err(scheduler_error)?;
    }
    let d = daemon.clone();
    let sweeper = Job::new_repeated_async(options.sweep, move |_, _| {
        let daemon = d.clone();
        Box::pin(async move {
            if let Err(e) = sweep(&daemon).await {
                tracing::warn!(error = %crate::redact::error_text(&e), "sweep failed");
            }
        })
    })
    .map_err(scheduler_error)?;
    scheduler.add(sweeper).await.map_err(scheduler_error)?;
    scheduler.start().await.map_err(scheduler_error)?;
    tracing::info!(daemon_id = %daemon.settings.daemon_id, "daemon started");
    if let Err(e) = sweep(&daemon).await {
        tracing::warn!(error = %crate::redact::error_text(&e), "start-up sweep failed");
    }
    let mut signals = signals;
    signals.recv().await;
    let stopped = stop(daemon, scheduler, options.grace, signals).await;
    http_stop.cancel();
    stopped
}

/// The first signal came: start nothing new, give running slots `grace`, then abandon them.
async fn stop(
    daemon: Arc<Daemon>,
    mut scheduler: JobScheduler,
    grace: Duration,
    mut signals: mpsc::Receiver<()>,
) -> Result<()> {
    tracing::info!(grace = %humantime::format_duration(grace), "stopping: no new runs; running ones may finish");
    daemon.stop.cancel();
    scheduler.shutdown().await.map_err(scheduler_error)?;
    daemon.tasks.close();
    tokio::select! {
        _ = daemon.tasks.wait() => {
            tracing::info!("stopped: every run finished");
            Ok(())
        }
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(running = daemon.tasks.len(), "grace period over: abandoning running jobs without publishing");
            daemon.abandon.cancel();
            tokio::select! {
                _ = daemon.tasks.wait() => Ok(()),
                _ = signals.recv() => Ok(()),
            }
        }
        _ = signals.recv() => {
            daemon.abandon.cancel();
            Err(Error::Schedule {
                message: format!("aborted by a second signal: {} run(s) abandoned without publishing", daemon.tasks.len()),
                source: None,
            })
        }
    }
}
