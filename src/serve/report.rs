//! The scheduled report: each slot of `[report] schedule` is claimed with a lease like a job's slot
//! (so one daemon of many writes it), and the page is built from the curated tables as they are
//! then and put into the curated store under `reports/`, named after the slot's day. A failed
//! report is logged and counted; it is not retried, the next slot writes the next one.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::serve::daemon::Daemon;
use crate::serve::slots::REPORT_SLOT;
use crate::store::lease::{Claim, Done};

/// How long a report's lease lasts before another daemon may take the slot over.
const REPORT_LEASE: Duration = Duration::from_secs(15 * 60);

/// Start writing the report of `slot` as a task of the daemon (unless it is stopping).
pub fn spawn(daemon: &Arc<Daemon>, slot: DateTime<Utc>) {
    if daemon.stop.is_cancelled() {
        return;
    }
    let d = daemon.clone();
    daemon.tasks.spawn(async move {
        if let Err(e) = ensure(&d, slot).await {
            tracing::warn!(job = REPORT_SLOT, slot = %slot.to_rfc3339(), error = %crate::redact::error_text(&e), "report slot not finished");
        }
    });
}

/// Bring the report's `slot` to an end: write it under a lease, or wait for the daemon that holds
/// it.
pub async fn ensure(daemon: &Daemon, slot: DateTime<Utc>) -> Result<Done> {
    let ttl = chrono::Duration::from_std(REPORT_LEASE + daemon.settings.lease_margin)
        .unwrap_or(chrono::Duration::hours(1));
    loop {
        let now = daemon.ws.engine.clock.now();
        let claim = daemon
            .leases()
            .claim(REPORT_SLOT, slot, &daemon.settings.daemon_id, now, ttl)
            .await?;
        let lease = match claim {
            Claim::Done(done) => return Ok(done),
            Claim::Held(_) => {
                tokio::select! {
                    _ = tokio::time::sleep(daemon.settings.poll) => continue,
                    _ = daemon.stop.cancelled() => return Err(crate::error::Error::Schedule {
                        message: format!("report slot {}: the daemon is stopping", slot.to_rfc3339()),
                        source: None,
                    }),
                }
            }
            Claim::Acquired(lease) => lease,
        };
        let started = std::time::Instant::now();
        let outcome = match write(daemon).await {
            Ok(place) => {
                tracing::info!(job = REPORT_SLOT, slot = %slot.to_rfc3339(), report = %place, "report written");
                "succeeded"
            }
            Err(e) => {
                tracing::error!(job = REPORT_SLOT, slot = %slot.to_rfc3339(), error = %crate::redact::error_text(&e), "report failed");
                "failed"
            }
        };
        let now = daemon.ws.engine.clock.now();
        let seconds = started.elapsed().as_secs_f64();
        daemon.metrics.run(REPORT_SLOT, outcome, seconds, 0, now);
        return daemon.leases().finish(&lease, outcome, now).await;
    }
}

/// Build the page over every month published and put it under `reports/`.
async fn write(daemon: &Daemon) -> Result<String> {
    let report = crate::report::build(&daemon.ws, None).await?;
    Ok(crate::report::publish(&daemon.ws, &report)
        .await?
        .to_string())
}
