//! Executing a run plan: jobs in dependency order with bounded concurrency, a failed job skipping
//! its downstream, each result published to its curated table, and every job recorded in the run
//! ledger in one commit at the end.

pub mod as_of;
pub mod backfill;
pub mod job;
pub mod kept;
pub mod publish;
pub mod sealed;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::engine::freshness::{Finding, Level};
use crate::engine::memory::{JobMemory, MemoryPlan, limit_bytes};
use crate::error::{Error, Result};
use crate::execute::as_of::RunDays;
use crate::execute::job::{JobDone, run_job};
use crate::execute::kept::KeptTables;
use crate::ledger::{self, RunRecord, Status};
use crate::plan::graph::Input;
use crate::plan::run_plan::{PlannedJob, RunPlan};
use crate::plan::workspace::{SourceProviders, Workspace};
use crate::project::incremental::Range;
use crate::store::system::RUNS_TABLE;

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// One outcome per planned job, in plan order.
    pub outcomes: Vec<JobOutcome>,
    /// Set when the run ledger could not be written (the jobs' outcomes stand).
    pub ledger_error: Option<String>,
    /// The freshness of the sources the run read that have a rule.
    pub freshness: Vec<Finding>,
}

impl RunReport {
    /// Jobs that did not succeed.
    pub fn failed(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.status != Status::Succeeded)
            .count()
    }

    /// `Ok` when every job succeeded and the ledger was written.
    pub fn into_result(self) -> Result<RunReport> {
        let failed = self.failed();
        if failed > 0 {
            return Err(Error::RunFailed {
                failed,
                total: self.outcomes.len(),
            });
        }
        if let Some(e) = &self.ledger_error {
            return Err(Error::Publish {
                table: RUNS_TABLE.into(),
                location: String::new(),
                message: e.clone(),
                source: None,
            });
        }
        Ok(self)
    }
}

/// Result of one job in a run.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub job: String,
    pub status: Status,
    pub rows_read: i64,
    pub rows_written: i64,
    pub bytes_read: i64,
    pub seconds: f64,
    /// The most memory the job's operators held at once (bytes), when it ran.
    pub peak_memory_bytes: Option<i64>,
    /// What its operators wrote to spill files (bytes), when it succeeded.
    pub spilled_bytes: Option<i64>,
    pub output_version: Option<i64>,
    pub error: Option<String>,
    /// Why the job did not succeed, for whoever decides on a retry.
    pub failure: Option<Failure>,
}

/// Why a job did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Retrying cannot help: SQL, contract, check, an upstream that did not succeed.
    Deterministic,
    /// An object store 5xx, a timeout, a lost commit race: a retry may pass.
    Transient,
    /// The daemon's lease on the slot was lost: stop, without publishing or finishing the slot.
    LeaseLost,
    /// The daemon stopped and its grace period ended before the job did.
    Abandoned,
}

/// How `e` failed a job.
pub fn failure_of(e: &Error) -> Failure {
    match e {
        Error::LeaseLost { .. } => Failure::LeaseLost,
        e if e.is_transient() => Failure::Transient,
        _ => Failure::Deterministic,
    }
}

/// Execute a plan: jobs in dependency order, at most `concurrency` at once; a failed job skips
/// its downstream. Every job gets a ledger row. Returns the outcomes in plan order.
pub async fn execute(ws: Arc<Workspace>, plan: &RunPlan, concurrency: usize) -> Result<RunReport> {
    let span = tracing::info_span!("run", run_id = %plan.run_id, trigger = %plan.trigger);
    async move {
        let ws = Arc::new(ws.for_run()?);
        let sources = Arc::new(ws.source_providers(needed_sources(plan)).await);
        let freshness = ws.freshness(&sources).await;
        // A slot run is as of its slot's day (`today`), whenever it runs.
        let today = match &plan.claim {
            Some(c) => c.lease.slot.date_naive(),
            None => ws.engine.today(),
        };
        let days = Arc::new(RunDays::new(plan.as_of, today));
        // A daemon's slot run publishes under a lease, and a cluster's workers read files.
        let kept = Arc::new(match plan.claim.is_none() && !ws.engine.is_distributed() {
            true => KeptTables::for_run(plan, ws.engine.runtime.memory_pool.clone()),
            false => KeptTables::none(),
        });
        let spilling = spilling_starts(&ws).await;
        let mut outcomes: BTreeMap<String, JobOutcome> = BTreeMap::new();
        let mut records: Vec<RunRecord> = Vec::new();
        let mut pending: Vec<&PlannedJob> = plan.jobs.iter().collect();
        let mut running: JoinSet<(JobOutcome, RunRecord)> = JoinSet::new();
        loop {
            // Skip jobs whose upstream failed; start jobs whose upstream succeeded.
            let mut i = 0;
            while i < pending.len() {
                let job = pending[i];
                let ups: Vec<Option<Status>> = job
                    .upstream_in_run
                    .iter()
                    .map(|u| outcomes.get(u).map(|o| o.status))
                    .collect();
                let stale = stale_input(job, &freshness);
                if stale.is_some()
                    || ups
                        .iter()
                        .any(|s| matches!(s, Some(Status::Failed | Status::Skipped)))
                {
                    let reason = stale.unwrap_or_else(|| upstream_reason(job, &outcomes));
                    let outcome = skipped(job, reason);
                    let now = ws.engine.clock.now();
                    let facts = RunFacts {
                        inputs: "{}".into(),
                        ..RunFacts::default()
                    };
                    records.push(record(plan, &outcome, (now, now), facts));
                    kept.finished(job);
                    outcomes.insert(job.name.clone(), outcome);
                    pending.remove(i);
                    continue;
                }
                if running.len() < concurrency && ups.iter().all(|s| *s == Some(Status::Succeeded))
                {
                    let job = pending.remove(i).clone();
                    let run = (sources.clone(), days.clone(), kept.clone());
                    let start = match spilling.contains(&job.name) {
                        true => MemoryPlan::Spilling,
                        false => MemoryPlan::Default,
                    };
                    spawn_job(&mut running, ws.clone(), run, plan, (job, start));
                    continue;
                }
                i += 1;
            }
            match running.join_next().await {
                Some(Ok((outcome, rec))) => {
                    records.push(rec);
                    outcomes.insert(outcome.job.clone(), outcome);
                }
                Some(Err(join)) => return Err(Error::TaskPanicked { source: join }),
                None => break,
            }
        }
        let ledger_error =
            match ledger::append(&ws.engine.stores, &ws.engine.project.curated, &records).await {
                Ok(()) => None,
                Err(e) => {
                    tracing::error!(error = %e, "run ledger not written");
                    Some(crate::redact::error_text(&e))
                }
            };
        Ok(RunReport {
            outcomes: plan
                .jobs
                .iter()
                .filter_map(|j| outcomes.remove(&j.name))
                .collect(),
            ledger_error,
            freshness,
        })
    }
    .instrument(span)
    .await
}

/// The jobs that start with the spilling memory plan: those whose newest succeeded run needed it,
/// under this run's memory limit and with their spec and SQL unchanged (`ledger::spilling_jobs`).
/// A ledger that cannot be read only loses the hint.
async fn spilling_starts(ws: &Workspace) -> BTreeSet<String> {
    let limit = limit_bytes(ws.engine.runtime.memory_pool.as_ref());
    let curated = &ws.engine.project.curated;
    match ledger::spilling_jobs(&ws.engine, curated, limit).await {
        Ok(jobs) => jobs
            .into_iter()
            .filter(|(job, hash)| {
                let spec = ws.graph.node(job).map(|n| &n.spec.spec_hash);
                hash.is_some() && spec == hash.as_ref()
            })
            .map(|(job, _)| job)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %crate::redact::error_text(&e), "run ledger not read for memory plans");
            BTreeSet::new()
        }
    }
}

/// The sources the plan's jobs read, each once.
fn needed_sources(plan: &RunPlan) -> Vec<String> {
    let mut v: Vec<String> = plan
        .jobs
        .iter()
        .flat_map(|j| j.inputs.iter())
        .filter_map(|i| match i {
            Input::Source(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Why `job` is skipped when it reads a source whose freshness is an error.
fn stale_input(job: &PlannedJob, freshness: &[Finding]) -> Option<String> {
    freshness
        .iter()
        .filter(|f| f.level == Level::Error)
        .find(|f| job.inputs.contains(&Input::Source(f.source.clone())))
        .map(|f| format!("skipped: {}", f.message()))
}

/// Why `job` is skipped when an upstream job did not succeed.
fn upstream_reason(job: &PlannedJob, outcomes: &BTreeMap<String, JobOutcome>) -> String {
    let failed_up: Vec<&str> = job
        .upstream_in_run
        .iter()
        .filter(|u| {
            outcomes
                .get(*u)
                .is_some_and(|o| o.status != Status::Succeeded)
        })
        .map(String::as_str)
        .collect();
    format!("skipped: upstream {} did not succeed", failed_up.join(", "))
}

/// The outcome of a job not run, and why.
fn skipped(job: &PlannedJob, msg: String) -> JobOutcome {
    tracing::warn!(job = %job.name, "{msg}");
    JobOutcome {
        job: job.name.clone(),
        status: Status::Skipped,
        rows_read: 0,
        rows_written: 0,
        bytes_read: 0,
        seconds: 0.0,
        peak_memory_bytes: None,
        spilled_bytes: None,
        output_version: None,
        error: Some(msg),
        failure: Some(Failure::Deterministic),
    }
}

/// Start `job` on the run's task set; its outcome and ledger row come back when it ends.
fn spawn_job(
    running: &mut JoinSet<(JobOutcome, RunRecord)>,
    ws: Arc<Workspace>,
    (sources, days, kept): (Arc<SourceProviders>, Arc<RunDays>, Arc<KeptTables>),
    plan: &RunPlan,
    (job, start): (PlannedJob, MemoryPlan),
) {
    let span = tracing::info_span!("job", job = %job.name, run_id = %plan.run_id);
    let plan = RunPlan {
        jobs: vec![],
        ..plan.clone()
    };
    running.spawn(
        async move {
            let started = ws.engine.clock.now();
            let clock = Instant::now();
            tracing::info!("job started");
            let memory = JobMemory::over(ws.engine.runtime.memory_pool.clone());
            let result = run_job(&ws, &job, &sources, &plan, &days, (&memory, start), &kept).await;
            kept.finished(&job);
            let seconds = clock.elapsed().as_secs_f64();
            let finished = ws.engine.clock.now();
            let (outcome, mut facts) = outcome_of(&job, result, seconds, memory.peak());
            facts.spec_hash = ws.graph.node(&job.name).map(|n| n.spec.spec_hash.clone());
            facts.memory_limit_bytes = limit_bytes(ws.engine.runtime.memory_pool.as_ref());
            let rec = record(&plan, &outcome, (started, finished), facts);
            (outcome, rec)
        }
        .instrument(span),
    );
}

/// What a job's ledger row says beyond its outcome.
#[derive(Debug, Clone, Default)]
struct RunFacts {
    /// JSON object: input table -> Delta version (curated) or `"source"`; `{}` when not run.
    inputs: String,
    as_of: Option<chrono::NaiveDate>,
    /// The days an incremental job computed.
    interval: Option<Range>,
    spec_hash: Option<String>,
    /// The memory plan the job succeeded with.
    memory_plan: Option<MemoryPlan>,
    /// The run's memory limit in bytes, when it has one.
    memory_limit_bytes: Option<i64>,
}

/// A finished job's outcome (errors redacted: they leave the process), its peak memory, and what it
/// read.
fn outcome_of(
    job: &PlannedJob,
    result: Result<JobDone>,
    seconds: f64,
    peak_memory: usize,
) -> (JobOutcome, RunFacts) {
    match result {
        Ok(done) => {
            tracing::info!(
                rows = done.rows_written,
                version = done.version,
                seconds,
                "job published"
            );
            (
                JobOutcome {
                    job: job.name.clone(),
                    status: Status::Succeeded,
                    rows_read: done.rows_read,
                    rows_written: done.rows_written,
                    bytes_read: done.bytes_read,
                    seconds,
                    peak_memory_bytes: Some(peak_memory as i64),
                    spilled_bytes: Some(done.spilled_bytes),
                    output_version: Some(done.version),
                    error: None,
                    failure: None,
                },
                RunFacts {
                    inputs: done.input_versions,
                    as_of: done.as_of,
                    interval: done.interval,
                    memory_plan: Some(done.memory_plan),
                    ..RunFacts::default()
                },
            )
        }
        Err(e) => {
            let msg = crate::redact::error_text(&e);
            let failure = failure_of(&e);
            tracing::error!(error = %msg, "job failed");
            (
                JobOutcome {
                    job: job.name.clone(),
                    status: Status::Failed,
                    rows_read: 0,
                    rows_written: 0,
                    bytes_read: 0,
                    seconds,
                    peak_memory_bytes: Some(peak_memory as i64),
                    spilled_bytes: None,
                    output_version: None,
                    error: Some(msg),
                    failure: Some(failure),
                },
                RunFacts {
                    inputs: "{}".into(),
                    ..RunFacts::default()
                },
            )
        }
    }
}

/// The ledger row of one job's outcome in `plan`'s run.
fn record(
    plan: &RunPlan,
    o: &JobOutcome,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    facts: RunFacts,
) -> RunRecord {
    let lease = plan.claim.as_ref().map(|c| &c.lease);
    RunRecord {
        finished_at: end,
        rows_read: o.rows_read,
        rows_written: o.rows_written,
        bytes_read: o.bytes_read,
        peak_memory_bytes: o.peak_memory_bytes,
        spilled_bytes: o.spilled_bytes,
        input_versions: facts.inputs,
        output_version: o.output_version,
        error: o.error.clone(),
        reason: plan.reason.clone(),
        as_of: facts.as_of,
        interval_start: facts.interval.map(|r| r.start),
        interval_end: facts.interval.map(|r| r.end),
        spec_hash: facts.spec_hash,
        memory_plan: facts.memory_plan,
        memory_limit_bytes: facts.memory_limit_bytes,
        ..RunRecord::at(
            plan.run_id.clone(),
            o.job.clone(),
            plan.trigger,
            start,
            o.status,
        )
    }
    .on_slot(lease)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::spec::WriteMode;
    use crate::values::Trigger;

    fn job(name: &str, ups: &[&str], inputs: Vec<Input>) -> PlannedJob {
        PlannedJob {
            name: name.into(),
            table: name.into(),
            url: url::Url::parse(&format!("memory:///curated/{name}/")).unwrap(),
            mode: WriteMode::Overwrite,
            inputs,
            upstream_in_run: ups.iter().map(|u| u.to_string()).collect(),
        }
    }

    fn outcome(job: &str, status: Status) -> JobOutcome {
        JobOutcome {
            job: job.into(),
            status,
            rows_read: 0,
            rows_written: 0,
            bytes_read: 0,
            seconds: 0.0,
            peak_memory_bytes: None,
            spilled_bytes: None,
            output_version: None,
            error: None,
            failure: None,
        }
    }

    #[test]
    fn a_job_is_skipped_naming_the_upstream_that_did_not_succeed() {
        let mut outcomes = BTreeMap::new();
        outcomes.insert("a".to_string(), outcome("a", Status::Succeeded));
        outcomes.insert("b".to_string(), outcome("b", Status::Failed));
        let c = job("c", &["a", "b"], vec![]);
        let s = skipped(&c, upstream_reason(&c, &outcomes));
        assert_eq!(s.status, Status::Skipped);
        assert_eq!(
            s.error.as_deref(),
            Some("skipped: upstream b did not succeed")
        );
    }

    #[test]
    fn sources_are_opened_once_per_run() {
        let plan = RunPlan {
            run_id: "r".into(),
            trigger: Trigger::Manual,
            as_of: None,
            claim: None,
            forward_only: false,
            interval: None,
            reason: None,
            jobs: vec![
                job("a", &[], vec![Input::Source("orders".into())]),
                job(
                    "b",
                    &[],
                    vec![
                        Input::Source("refunds".into()),
                        Input::Source("orders".into()),
                        Input::System("_runs".into()),
                    ],
                ),
            ],
        };
        assert_eq!(needed_sources(&plan), vec!["orders", "refunds"]);
    }

    #[test]
    fn outcomes_record_the_run_and_a_redacted_error() {
        let j = job("a", &[], vec![]);
        // URL user-info is a secret the redaction must strip.
        let secret = "s3cr3t-value-for-execute-test";
        let err = Error::Job {
            job: "a".into(),
            message: format!("GET http://user:{secret}@host/x failed"),
        };
        let (o, facts) = outcome_of(&j, Err(err), 1.5, 0);
        assert_eq!(o.status, Status::Failed);
        assert_eq!(facts.inputs, "{}");
        let text = o.error.clone().unwrap();
        assert!(!text.contains(secret), "{text}");
        assert!(text.contains("http://***@host/x"), "{text}");
        let plan = RunPlan {
            run_id: "r1".into(),
            trigger: Trigger::Schedule,
            as_of: None,
            claim: None,
            forward_only: false,
            interval: None,
            reason: None,
            jobs: vec![],
        };
        let t = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        let rec = record(&plan, &o, (t, t), facts);
        assert_eq!(
            (rec.run_id.as_str(), rec.trigger, rec.status),
            ("r1", Trigger::Schedule, Status::Failed)
        );
    }
}
