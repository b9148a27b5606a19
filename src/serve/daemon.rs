//! One daemon's work on one job's slot: its upstream jobs' slots first (waited for, or triggered
//! when nobody runs them), then the slot claimed with a lease and run with a timeout and retries
//! on transient failures, fenced at publish, recorded in `_runs` and finished with a `done` marker.
//! Any number of daemons may call `ensure` for the same slot: one runs it, the others wait for it
//! (and take it over if the holder's lease expires).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::freshness::Level;
use crate::error::{Error, Result};
use crate::execute::{self, Failure};
use crate::ledger::{self, RunRecord, Status};
use crate::plan::run_plan::{RunPlan, SlotClaim};
use crate::plan::workspace::Workspace;
use crate::project::spec::JobSpec;
use crate::serve::metrics::Metrics;
use crate::serve::slots::JobCron;
use crate::store::delta;
use crate::store::lease::{Claim, Done, Lease, Leases};
use crate::values::Trigger;

/// Runtime settings of a daemon (flags, not project files).
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    /// Recorded in leases and `_runs.daemon_id`; unique per process.
    pub daemon_id: String,
    /// Jobs executing at once in this daemon (`--max-concurrent`).
    pub max_concurrent: usize,
    /// How often a daemon waiting on another daemon's slot looks again.
    pub poll: Duration,
    /// The first retry's delay; each next one doubles, with jitter.
    pub retry_delay: Duration,
    /// How long a slot's lease outlives the job's timeout.
    pub lease_margin: Duration,
}

/// A daemon: the workspace, its leases, and the runs it has going.
pub struct Daemon {
    pub ws: Arc<Workspace>,
    pub settings: DaemonSettings,
    leases: Leases,
    permits: Semaphore,
    /// Every slot this daemon works on, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Cancelled on the first signal: no new slot is started.
    pub stop: CancellationToken,
    /// Cancelled when the grace period ends: running jobs are abandoned without publishing.
    pub abandon: CancellationToken,
    /// Slots with a task in this daemon, so a firing and a sweep do not both start one.
    active: Mutex<HashSet<(String, DateTime<Utc>)>>,
    /// What `/metrics` shows.
    pub metrics: Metrics,
}

/// A try that ran to an end: how it ended and the rows it published.
#[derive(Debug, Clone, Copy)]
struct Ran {
    status: Status,
    rows: i64,
}

/// What a try found before running anything.
enum Prepared {
    /// The table already holds this slot or a later one.
    Published(Status),
    /// The fenced plan and the job's timeout.
    Run(Box<RunPlan>, Duration),
}

/// A try that did not succeed, and whether another may.
#[derive(Debug)]
struct TryFailed {
    failure: Failure,
    message: String,
}

impl Daemon {
    pub fn new(ws: Arc<Workspace>, settings: DaemonSettings) -> Result<Arc<Daemon>> {
        let leases = Leases::new(&ws.engine.stores, &ws.engine.project.curated)?;
        Ok(Arc::new(Daemon {
            permits: Semaphore::new(settings.max_concurrent.max(1)),
            ws,
            settings,
            leases,
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            abandon: CancellationToken::new(),
            active: Mutex::new(HashSet::new()),
            metrics: Metrics::default(),
        }))
    }

    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    fn spec(&self, job: &str) -> Result<&JobSpec> {
        self.ws
            .graph
            .node(job)
            .map(|n| &n.spec)
            .ok_or_else(|| Error::Selector {
                selector: job.to_string(),
            })
    }

    /// Start `ensure(job, slot)` as a task of this daemon, unless one is already going or the
    /// daemon is stopping. Errors are logged.
    pub fn spawn(self: &Arc<Self>, job: &str, slot: DateTime<Utc>) {
        self.spawn_in_order(job, vec![slot]);
    }

    /// One task ensuring `job`'s `slots` one after the other (missed slots catch up in order
    /// rather than racing each other to publish), skipping those already going here.
    pub fn spawn_in_order(self: &Arc<Self>, job: &str, slots: Vec<DateTime<Utc>>) {
        if self.stop.is_cancelled() {
            return;
        }
        let fresh: Vec<DateTime<Utc>> = {
            let mut active = self.active.lock().expect("active");
            slots
                .into_iter()
                .filter(|s| active.insert((job.to_string(), *s)))
                .collect()
        };
        if fresh.is_empty() {
            return;
        }
        let (me, job) = (self.clone(), job.to_string());
        self.tasks.spawn(async move {
            for slot in fresh {
                if let Err(e) = me.ensure(job.clone(), slot).await {
                    tracing::warn!(job = %job, slot = %slot.to_rfc3339(), error = %crate::redact::error_text(&e), "slot not finished");
                }
                me.active.lock().expect("active").remove(&(job.clone(), slot));
            }
        });
    }

    /// Bring `job`'s `slot` to an end and say how it ended: after its upstream jobs' slots, run
    /// by this daemon or by whichever daemon holds it.
    pub fn ensure(
        self: &Arc<Self>,
        job: String,
        slot: DateTime<Utc>,
    ) -> BoxFuture<'static, Result<Done>> {
        let me = self.clone();
        async move {
            let blocked = me.upstream_block(&job, slot).await?;
            let done = me.claim_and_run(&job, slot, blocked).await?;
            if done.outcome == Status::Succeeded.to_string()
                && done.daemon_id == me.settings.daemon_id
                && me.spec(&job)?.policy.trigger_downstream
            {
                for down in me.ws.graph.downstream_of(&job) {
                    me.spawn(down, slot);
                }
            }
            Ok(done)
        }
        .boxed()
    }

    /// Each upstream job's slot of the same moment (its newest slot at or before `slot`, or
    /// `slot` itself for a job without a schedule), ensured first; the reason to skip `job` when
    /// one did not succeed.
    async fn upstream_block(
        self: &Arc<Self>,
        job: &str,
        slot: DateTime<Utc>,
    ) -> Result<Option<String>> {
        let ups: Vec<String> = self
            .ws
            .graph
            .upstream_of(job)
            .iter()
            .map(|u| u.to_string())
            .collect();
        for up in ups {
            let up_slot = JobCron::of(self.spec(&up)?)?
                .and_then(|c| c.latest(slot))
                .unwrap_or(slot);
            let done = self.ensure(up.clone(), up_slot).await?;
            if done.outcome != Status::Succeeded.to_string() {
                return Ok(Some(format!(
                    "skipped: upstream `{up}` slot {} ended {}",
                    up_slot.to_rfc3339(),
                    done.outcome
                )));
            }
        }
        Ok(None)
    }

    /// Claim the slot and run it, or wait for the daemon that holds it, until it is done.
    async fn claim_and_run(
        &self,
        job: &str,
        slot: DateTime<Utc>,
        blocked: Option<String>,
    ) -> Result<Done> {
        let ttl = self.spec(job)?.policy.lease_ttl(self.settings.lease_margin);
        loop {
            if self.stop.is_cancelled() {
                return Err(stopping(job, slot));
            }
            let now = self.ws.engine.clock.now();
            match self
                .leases
                .claim(job, slot, &self.settings.daemon_id, now, ttl)
                .await?
            {
                Claim::Done(done) => return Ok(done),
                Claim::Held(_) => {
                    tokio::select! {
                        _ = tokio::time::sleep(self.settings.poll) => {}
                        _ = self.stop.cancelled() => return Err(stopping(job, slot)),
                    }
                }
                Claim::Acquired(lease) => {
                    if lease.token > 1 {
                        self.metrics.takeover(job);
                        tracing::warn!(job, slot = %slot.to_rfc3339(), token = lease.token, "lease taken over: the previous holder did not finish the slot");
                    }
                    let status = match blocked {
                        Some(reason) => {
                            self.record(&lease, Status::Skipped, reason, None).await;
                            self.metrics
                                .run(job, "skipped", 0.0, 0, self.ws.engine.clock.now());
                            Status::Skipped
                        }
                        None => match self.run_claimed(&lease).await {
                            Ok(ran) => ran.status,
                            // Not ours any more: the holder of the newer lease finishes it.
                            Err(e)
                                if matches!(e.failure, Failure::LeaseLost | Failure::Abandoned) =>
                            {
                                return Err(Error::Schedule {
                                    message: e.message,
                                    source: None,
                                });
                            }
                            Err(_) => Status::Failed,
                        },
                    };
                    let now = self.ws.engine.clock.now();
                    return self.leases.finish(&lease, &status.to_string(), now).await;
                }
            }
        }
    }

    /// Run the claimed slot, retrying transient failures with exponential backoff and jitter.
    async fn run_claimed(&self, lease: &Lease) -> std::result::Result<Ran, TryFailed> {
        let retries = self.spec(&lease.job).map(|s| s.policy.retries).unwrap_or(0);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_delay)
            .with_max_times(retries as usize)
            .with_jitter();
        (|| self.counted_try(lease))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &TryFailed| e.failure == Failure::Transient && !self.stop.is_cancelled())
            .notify(|e: &TryFailed, delay: Duration| {
                self.metrics.retry(&lease.job);
                tracing::warn!(job = %lease.job, slot = %lease.slot.to_rfc3339(), error = %e.message, ?delay, "transient failure: retrying");
            })
            .await
    }

    /// One try, counted in the metrics by how it ended.
    async fn counted_try(&self, lease: &Lease) -> std::result::Result<Ran, TryFailed> {
        let started = std::time::Instant::now();
        let result = self.try_once(lease).await;
        let (status, rows) = match &result {
            Ok(ran) => (ran.status, ran.rows),
            Err(_) => (Status::Failed, 0),
        };
        let now = self.ws.engine.clock.now();
        let seconds = started.elapsed().as_secs_f64();
        self.metrics
            .run(&lease.job, &status.to_string(), seconds, rows, now);
        result
    }

    /// One try: unless the table already holds this slot (or a later one), run the job once,
    /// fenced onto the table's version as it is now, within the job's timeout.
    async fn try_once(&self, lease: &Lease) -> std::result::Result<Ran, TryFailed> {
        let (plan, timeout) = match self.prepare(lease).await {
            Ok(Prepared::Published(status)) => return Ok(Ran { status, rows: 0 }),
            Ok(Prepared::Run(plan, timeout)) => (plan, timeout),
            Err(e) => {
                let failed = TryFailed::from(e);
                self.record(lease, Status::Failed, failed.message.clone(), None)
                    .await;
                return Err(failed);
            }
        };
        let _permit = self.permits.acquire().await.expect("never closed");
        let run = tokio::time::timeout(timeout, execute::execute(self.ws.clone(), &plan, 1));
        let report = tokio::select! {
            r = run => r,
            _ = self.abandon.cancelled() => {
                let message = "abandoned: the daemon stopped and its grace period ended".to_string();
                self.record(lease, Status::Failed, message.clone(), None).await;
                return Err(TryFailed { failure: Failure::Abandoned, message });
            }
        };
        match report {
            Err(_) => {
                let message = format!("timed out after {}", humantime::format_duration(timeout));
                self.record(lease, Status::Failed, message.clone(), None)
                    .await;
                Err(TryFailed {
                    failure: Failure::Transient,
                    message,
                })
            }
            Ok(Err(e)) => Err(TryFailed::from(e)),
            Ok(Ok(report)) => self.ran(report),
        }
    }

    /// How a run that ended went, its stale sources counted.
    fn ran(&self, report: execute::RunReport) -> std::result::Result<Ran, TryFailed> {
        for f in report.freshness.iter().filter(|f| f.level != Level::Fresh) {
            self.metrics.stale(&f.source, f.level.as_str());
        }
        match report.outcomes.into_iter().next() {
            Some(o) if o.status != Status::Failed => Ok(Ran {
                status: o.status,
                rows: o.rows_written,
            }),
            Some(o) => Err(TryFailed {
                failure: o.failure.unwrap_or(Failure::Deterministic),
                message: o.error.unwrap_or_default(),
            }),
            None => Err(TryFailed {
                failure: Failure::Deterministic,
                message: "nothing ran".into(),
            }),
        }
    }

    /// The output table as it is now: already holding this slot or a later one, or the plan of
    /// a run fenced onto its current version.
    async fn prepare(&self, lease: &Lease) -> Result<Prepared> {
        let ws = &self.ws;
        let spec = self.spec(&lease.job)?;
        let table = delta::open(&ws.engine.stores, &ws.table_url(&spec.table)?).await?;
        let base_version = table.as_ref().and_then(|t| t.version()).map(|v| v as i64);
        if let Some(t) = &table
            && let Some((published, token)) = delta::last_slot(t).await
            && published >= lease.slot
        {
            let status = self
                .already_published(lease, published, token, base_version)
                .await;
            return Ok(Prepared::Published(status));
        }
        let mut plan = ws.plan(std::slice::from_ref(&lease.job), Trigger::Schedule)?;
        plan.claim = Some(SlotClaim {
            lease: lease.clone(),
            base_version,
        });
        Ok(Prepared::Run(Box::new(plan), spec.policy.timeout))
    }

    /// The table's latest commit is this slot (an earlier holder published, then stopped before
    /// finishing the slot) or a later one: record which, and run nothing.
    async fn already_published(
        &self,
        lease: &Lease,
        published: DateTime<Utc>,
        token: u64,
        version: Option<i64>,
    ) -> Status {
        if published == lease.slot {
            let why =
                format!("recovered: published by attempt {token}, which did not finish the slot");
            tracing::info!(job = %lease.job, slot = %lease.slot.to_rfc3339(), "{why}");
            self.record(lease, Status::Succeeded, why, version).await;
            Status::Succeeded
        } else {
            let why = format!(
                "skipped: the table already holds the later slot {}",
                published.to_rfc3339()
            );
            self.record(lease, Status::Skipped, why, version).await;
            Status::Skipped
        }
    }

    /// A `_runs` row for a slot outcome that no job run recorded itself (best effort: logged).
    async fn record(&self, lease: &Lease, status: Status, message: String, version: Option<i64>) {
        let now = self.ws.engine.clock.now();
        let (error, reason) = match status {
            Status::Succeeded => (None, Some(message)),
            _ => (Some(message), None),
        };
        let rec = RunRecord {
            output_version: version,
            error,
            reason,
            ..RunRecord::at(
                self.ws.new_run_id(),
                lease.job.clone(),
                Trigger::Schedule,
                now,
                status,
            )
        }
        .on_slot(Some(lease));
        let project = &self.ws.engine.project;
        if let Err(e) = ledger::append(&self.ws.engine.stores, &project.curated, &[rec]).await {
            tracing::error!(job = %lease.job, error = %crate::redact::error_text(&e), "run ledger not written");
        }
    }
}

fn stopping(job: &str, slot: DateTime<Utc>) -> Error {
    Error::Schedule {
        message: format!(
            "job `{job}` slot {}: not started, the daemon is stopping",
            slot.to_rfc3339()
        ),
        source: None,
    }
}

impl From<Error> for TryFailed {
    fn from(e: Error) -> Self {
        TryFailed {
            failure: execute::failure_of(&e),
            message: crate::redact::error_text(&e),
        }
    }
}
