//! What `retention status` shows: per job, its last run, its next slot, whether it is late (its
//! newest due slot has no successful run a timeout after it was due) and the freshness of the
//! sources it reads, as one Arrow batch.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMicrosecondType};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ledger;
use crate::plan::graph::Input;
use crate::plan::workspace::Workspace;
use crate::serve::slots::JobCron;

/// Each job's newest run, and its newest slot that succeeded.
const LAST_RUNS: &str = "SELECT job, status, finished_at, slot, last_good_slot FROM ( \
    SELECT job, status, finished_at, slot, \
      row_number() OVER (PARTITION BY job ORDER BY started_at DESC, run_id DESC) AS n, \
      max(CASE WHEN status = 'succeeded' THEN slot END) OVER (PARTITION BY job) AS last_good_slot \
    FROM _runs) WHERE n = 1";

/// A job's newest run as `status` shows it.
#[derive(Debug, Default, Clone)]
struct LastRun {
    status: Option<String>,
    finished_at: Option<DateTime<Utc>>,
    slot: Option<DateTime<Utc>>,
    last_good_slot: Option<DateTime<Utc>>,
}

fn micros(a: &dyn Array, row: usize) -> Option<DateTime<Utc>> {
    let a = a.as_primitive::<TimestampMicrosecondType>();
    (!a.is_null(row))
        .then(|| DateTime::from_timestamp_micros(a.value(row)))
        .flatten()
}

/// Newest run per job from `_runs` (empty before the first run).
async fn last_runs(ws: &Workspace) -> Result<BTreeMap<String, LastRun>> {
    let mut out: BTreeMap<String, LastRun> = BTreeMap::new();
    let Some(ctx) = ledger::session(&ws.engine, &ws.engine.project.curated).await? else {
        return Ok(out);
    };
    for b in ctx.sql(LAST_RUNS).await?.collect().await? {
        let (jobs, status) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_string::<i32>(),
        );
        for row in 0..b.num_rows() {
            let last = LastRun {
                status: Some(status.value(row).to_string()),
                finished_at: micros(b.column(2), row),
                slot: micros(b.column(3), row),
                last_good_slot: micros(b.column(4), row),
            };
            out.insert(jobs.value(row).to_string(), last);
        }
    }
    Ok(out)
}

/// One job's line of `status`.
#[derive(Debug, Serialize)]
struct JobStatus {
    job: String,
    /// The cron and its time zone.
    schedule: Option<String>,
    last_status: Option<String>,
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    last_finished_at: Option<DateTime<Utc>>,
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    last_slot: Option<DateTime<Utc>>,
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    next_slot: Option<DateTime<Utc>>,
    /// NULL for a job without a schedule.
    late: Option<bool>,
    sources: Option<String>,
}

fn status_schema() -> Schema {
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Schema::new(vec![
        Field::new("job", DataType::Utf8, false),
        Field::new("schedule", DataType::Utf8, true),
        Field::new("last_status", DataType::Utf8, true),
        Field::new("last_finished_at", utc.clone(), true),
        Field::new("last_slot", utc.clone(), true),
        Field::new("next_slot", utc, true),
        Field::new("late", DataType::Boolean, true),
        Field::new("sources", DataType::Utf8, true),
    ])
}

/// The status batch at `now`.
pub async fn status(ws: &Workspace, now: DateTime<Utc>) -> Result<RecordBatch> {
    let runs = last_runs(ws).await?;
    let with_rules: Vec<String> = ws
        .sources
        .iter()
        .filter(|s| s.freshness.is_some())
        .map(|s| s.name.clone())
        .collect();
    let providers = ws.source_providers(with_rules).await;
    let findings = ws.freshness(&providers).await;
    let mut rows = Vec::new();
    for node in &ws.graph.nodes {
        let last = runs.get(&node.spec.name).cloned().unwrap_or_default();
        let cron = JobCron::of(&node.spec)?;
        let timeout = chrono::Duration::from_std(node.spec.policy.timeout).unwrap_or_default();
        let late = cron.as_ref().map(|c| match c.latest(now) {
            Some(due) => last.last_good_slot.is_none_or(|s| s < due) && now > due + timeout,
            None => false,
        });
        rows.push(JobStatus {
            job: node.spec.name.clone(),
            schedule: cron.as_ref().map(|c| format!("{} {}", c.expr, c.timezone)),
            last_status: last.status,
            last_finished_at: last.finished_at,
            last_slot: last.slot,
            next_slot: cron.and_then(|c| c.next(now)),
            late,
            sources: sources_text(&node.inputs, &findings, &providers),
        });
    }
    serde_arrow::to_record_batch(status_schema().fields(), &rows).map_err(|e| Error::Schedule {
        message: format!("cannot build the status rows: {e}"),
        source: Some(Box::new(e)),
    })
}

/// `orders: fresh (3h 10m); refunds: error (2days 1h)` for the sources a job reads that have a
/// freshness rule; a source that failed its contract says so.
fn sources_text(
    inputs: &[Input],
    findings: &[crate::engine::freshness::Finding],
    providers: &crate::plan::workspace::SourceProviders,
) -> Option<String> {
    let parts: Vec<String> = inputs
        .iter()
        .filter_map(|i| match i {
            Input::Source(s) => Some(s),
            _ => None,
        })
        .filter_map(|s| {
            if let Some(f) = findings.iter().find(|f| &f.source == s) {
                let age = f
                    .age
                    .map(|a| {
                        humantime::format_duration(std::time::Duration::from_secs(
                            a.as_secs() / 60 * 60,
                        ))
                        .to_string()
                    })
                    .unwrap_or_else(|| "no rows".into());
                return Some(format!("{s}: {} ({age})", f.level.as_str()));
            }
            match providers.get(s) {
                Some(Err(_)) => Some(format!("{s}: contract failed")),
                _ => None,
            }
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}
