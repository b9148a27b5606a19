//! The run ledger: the `_runs` Delta table in the curated store, one row per job run (and per
//! month close or re-open), appended in one commit per run.

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Date32Type;
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::engine::memory::MemoryPlan;
use crate::engine::session::Engine;
use crate::error::Result;
use crate::project::incremental::Range;
use crate::store::Stores;
use crate::store::delta;
use crate::store::lease::Lease;
use crate::store::system::{RUNS_TABLE, runs_schema};
use crate::values::Trigger;

/// Who is running retention: `RETENTION_ACTOR` if set, else the OS user, else `unknown`.
pub fn current_actor() -> String {
    ["RETENTION_ACTOR", "USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// Outcome of one job in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Succeeded,
    Failed,
    /// Not run because an upstream job failed.
    Skipped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        })
    }
}

/// One ledger row.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub job: String,
    /// What started the run.
    #[serde(serialize_with = "as_text")]
    pub trigger: Trigger,
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub finished_at: DateTime<Utc>,
    pub status: Status,
    pub rows_read: i64,
    pub rows_written: i64,
    pub bytes_read: i64,
    /// JSON object: input table -> Delta version (curated) or `"source"`.
    pub input_versions: String,
    /// Version of the output table this run published.
    pub output_version: Option<i64>,
    /// Redacted: this text leaves the process.
    pub error: Option<String>,
    /// Who started the run (`RETENTION_ACTOR`, else the OS user).
    pub actor: Option<String>,
    /// Why, for runs that need a reason (re-opening a closed month).
    pub reason: Option<String>,
    /// The run's as-of day (`$as_of`), when it was resolved.
    pub as_of: Option<NaiveDate>,
    /// For a daemon's run: the cron slot it ran (else NULL).
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    pub slot: Option<DateTime<Utc>>,
    /// For a daemon's run: its lease token on the slot, 1 for the first run and one more for
    /// each takeover.
    pub attempt: Option<i64>,
    /// For a daemon's run: the daemon that ran it.
    pub daemon_id: Option<String>,
    /// For an incremental job: the days `[interval_start, interval_end)` the run computed.
    pub interval_start: Option<NaiveDate>,
    pub interval_end: Option<NaiveDate>,
    /// SHA-256 of the job's spec and SQL when it ran.
    pub spec_hash: Option<String>,
    /// The most memory the job's operators held at once, in bytes.
    pub peak_memory_bytes: Option<i64>,
    /// What the job's operators wrote to spill files, in bytes.
    pub spilled_bytes: Option<i64>,
    /// The memory plan the job succeeded with (NULL when it did not succeed).
    pub memory_plan: Option<MemoryPlan>,
    /// The run's memory limit in bytes (NULL when unlimited, and for rows that are not job runs).
    pub memory_limit_bytes: Option<i64>,
}

impl RunRecord {
    /// A row for something that happened at one instant and read nothing (a close, a skipped or
    /// recovered slot, an abandoned run), by the current actor; callers set what else they know.
    pub fn at(
        run_id: String,
        job: String,
        trigger: Trigger,
        at: DateTime<Utc>,
        status: Status,
    ) -> RunRecord {
        RunRecord {
            run_id,
            job,
            trigger,
            started_at: at,
            finished_at: at,
            status,
            rows_read: 0,
            rows_written: 0,
            bytes_read: 0,
            input_versions: "{}".into(),
            output_version: None,
            error: None,
            actor: Some(current_actor()),
            reason: None,
            as_of: None,
            slot: None,
            attempt: None,
            daemon_id: None,
            interval_start: None,
            interval_end: None,
            spec_hash: None,
            peak_memory_bytes: None,
            spilled_bytes: None,
            memory_plan: None,
            memory_limit_bytes: None,
        }
    }

    /// The row of a daemon's run under `lease`: its slot, attempt (the lease token) and daemon.
    pub fn on_slot(self, lease: Option<&Lease>) -> RunRecord {
        RunRecord {
            slot: lease.map(|l| l.slot),
            attempt: lease.map(|l| l.token as i64),
            daemon_id: lease.map(|l| l.daemon_id.clone()),
            ..self
        }
    }
}

fn as_text<S: serde::Serializer>(t: &Trigger, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(t.as_str())
}

/// Records as one Arrow batch of the ledger's schema.
pub fn to_batch(records: &[RunRecord]) -> Result<RecordBatch> {
    let schema = runs_schema();
    serde_arrow::to_record_batch(schema.fields(), &records).map_err(|e| {
        crate::error::Error::Storage {
            location: RUNS_TABLE.into(),
            message: format!("cannot build ledger rows: {e}"),
            source: Some(Box::new(e)),
        }
    })
}

/// Every this many appends, `_runs` is compacted: each append adds one small file, and readers
/// (incremental jobs, `status`, `/runs`) would otherwise open thousands.
const COMPACT_EVERY: i64 = 50;

/// Append records to `_runs` under the curated root (one Delta commit), compacting the table
/// every `COMPACT_EVERY` versions (a failed compaction is logged; the rows are in).
pub async fn append(stores: &Stores, curated_root: &url::Url, records: &[RunRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let batch = to_batch(records)?;
    let version = delta::append(
        stores,
        curated_root,
        RUNS_TABLE,
        vec![batch],
        &[],
        "retention run ledger: one row per job run",
    )
    .await?;
    if version > 0
        && version % COMPACT_EVERY == 0
        && let Err(e) = delta::compact(stores, curated_root, RUNS_TABLE).await
    {
        tracing::warn!(error = %crate::redact::error_text(&e), "run ledger not compacted");
    }
    Ok(())
}

/// A session with `_runs` registered by that name; `None` before the first run was recorded.
pub async fn session(engine: &Engine, curated_root: &url::Url) -> Result<Option<SessionContext>> {
    let url = delta::table_url(curated_root, RUNS_TABLE)?;
    let Some(table) = delta::open(&engine.stores, &url).await? else {
        return Ok(None);
    };
    let provider = delta::provider(&table).await?;
    Ok(Some(engine.session(&[(RUNS_TABLE.to_string(), provider)])?))
}

/// A nullable string cell.
fn text(a: &dyn Array, row: usize) -> Option<String> {
    let a = a.as_string::<i32>();
    (!a.is_null(row)).then(|| a.value(row).to_string())
}

/// Each job's spec hash at its last successful run (NULL for runs recorded before hashes were).
pub async fn last_spec_hashes(
    engine: &Engine,
    curated_root: &url::Url,
) -> Result<std::collections::BTreeMap<String, Option<String>>> {
    let Some(ctx) = session(engine, curated_root).await? else {
        return Ok(Default::default());
    };
    job_hashes(ctx.sql(LAST_SPEC_HASHES).await?).await
}

/// The `(job, spec_hash)` rows of a ledger query, by job.
async fn job_hashes(
    rows: datafusion::prelude::DataFrame,
) -> Result<std::collections::BTreeMap<String, Option<String>>> {
    let mut out = std::collections::BTreeMap::new();
    for b in rows.collect().await? {
        let jobs = b.column(0).as_string::<i32>();
        for row in 0..b.num_rows() {
            out.insert(jobs.value(row).to_string(), text(b.column(1), row));
        }
    }
    Ok(out)
}

/// The spec hash of each job's newest succeeded run.
const LAST_SPEC_HASHES: &str = "SELECT job, spec_hash FROM ( \
    SELECT job, spec_hash, row_number() OVER (PARTITION BY job ORDER BY started_at DESC) AS n \
    FROM _runs WHERE status = 'succeeded') WHERE n = 1";

/// The jobs whose newest succeeded run needed the spilling plan under a memory limit of `limit`
/// bytes, each with the spec hash it ran: run again unchanged under the same limit, such a job
/// would run out of memory again with the default plan, so it starts with the spilling one. Empty
/// before the ledger exists or records memory plans.
pub async fn spilling_jobs(
    engine: &Engine,
    curated_root: &url::Url,
    limit: Option<i64>,
) -> Result<std::collections::BTreeMap<String, Option<String>>> {
    let Some(ctx) = session(engine, curated_root).await? else {
        return Ok(Default::default());
    };
    let runs = ctx.table(RUNS_TABLE).await?;
    if !runs
        .schema()
        .has_column_with_unqualified_name("memory_plan")
    {
        return Ok(Default::default());
    }
    let rows = ctx
        .sql(SPILLING_JOBS)
        .await?
        .with_param_values(vec![ScalarValue::Int64(limit)])?;
    job_hashes(rows).await
}

/// Each job's newest succeeded run, when it ran the spilling plan under the memory limit `$1`.
const SPILLING_JOBS: &str = "SELECT job, spec_hash FROM ( \
    SELECT job, spec_hash, memory_plan, memory_limit_bytes, \
           row_number() OVER (PARTITION BY job ORDER BY started_at DESC) AS n \
    FROM _runs WHERE status = 'succeeded') \
    WHERE n = 1 AND memory_plan = 'spilling' AND memory_limit_bytes IS NOT DISTINCT FROM $1";

/// A succeeded run of an incremental job: the days it computed, the spec hash it ran with, and
/// its reason (a backfill's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoneRun {
    pub range: Range,
    pub spec_hash: Option<String>,
    pub reason: Option<String>,
}

/// Every succeeded run of `job` that computed an interval, oldest first (empty before the ledger
/// exists).
pub async fn done_runs(
    engine: &Engine,
    curated_root: &url::Url,
    job: &str,
) -> Result<Vec<DoneRun>> {
    let Some(ctx) = session(engine, curated_root).await? else {
        return Ok(vec![]);
    };
    let batches = ctx
        .sql(DONE_RUNS)
        .await?
        .with_param_values(vec![ScalarValue::from(job)])?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in &batches {
        let (start, end) = (
            b.column(0).as_primitive::<Date32Type>(),
            b.column(1).as_primitive::<Date32Type>(),
        );
        for row in 0..b.num_rows() {
            let (Some(s), Some(e)) = (start.value_as_date(row), end.value_as_date(row)) else {
                continue;
            };
            out.push(DoneRun {
                range: Range { start: s, end: e },
                spec_hash: text(b.column(2), row),
                reason: text(b.column(3), row),
            });
        }
    }
    Ok(out)
}

/// Succeeded runs of one job (`$1`) that computed an interval, oldest first.
const DONE_RUNS: &str = "SELECT interval_start, interval_end, spec_hash, reason FROM _runs \
    WHERE job = $1 AND status = 'succeeded' AND interval_start IS NOT NULL \
    ORDER BY started_at";

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};

    #[test]
    fn batch_matches_schema() {
        let t = DateTime::parse_from_rfc3339("2026-11-24T06:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let r = RunRecord {
            run_id: "r1".into(),
            job: "j".into(),
            trigger: Trigger::CloseMonth,
            started_at: t,
            finished_at: t,
            status: Status::Failed,
            rows_read: 3,
            rows_written: 0,
            bytes_read: 10,
            input_versions: "{}".into(),
            output_version: None,
            error: Some("boom".into()),
            actor: Some("ana".into()),
            reason: None,
            as_of: NaiveDate::from_ymd_opt(2026, 10, 31),
            slot: Some(t),
            attempt: Some(2),
            daemon_id: Some("host-1".into()),
            interval_start: NaiveDate::from_ymd_opt(2026, 10, 1),
            interval_end: NaiveDate::from_ymd_opt(2026, 11, 1),
            spec_hash: Some("ab12".into()),
            peak_memory_bytes: Some(4096),
            spilled_bytes: Some(0),
            memory_plan: Some(MemoryPlan::Spilling),
            memory_limit_bytes: Some(1 << 30),
        };
        let b = to_batch(&[r]).unwrap();
        assert_eq!(b.num_rows(), 1);
        assert_eq!(b.schema(), runs_schema());
        assert_eq!(b.column(2).as_string::<i32>().value(0), "close-month");
        assert_eq!(b.column(5).as_string::<i32>().value(0), "failed");
        assert_eq!(
            b.column(3)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            t.timestamp_micros()
        );
        assert!(b.column(10).is_null(0));
        let days = b.column(14).as_primitive::<Date32Type>().value(0);
        assert_eq!(
            Date32Type::to_naive_date_opt(days),
            NaiveDate::from_ymd_opt(2026, 10, 31)
        );
        let slot = b.column(15).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(slot.value(0), t.timestamp_micros());
        assert_eq!(b.column(16).as_primitive::<Int64Type>().value(0), 2);
        assert_eq!(b.column(17).as_string::<i32>().value(0), "host-1");
        let end = b.column(19).as_primitive::<Date32Type>().value(0);
        assert_eq!(
            Date32Type::to_naive_date_opt(end),
            NaiveDate::from_ymd_opt(2026, 11, 1)
        );
        assert_eq!(b.column(20).as_string::<i32>().value(0), "ab12");
        assert_eq!(b.column(23).as_string::<i32>().value(0), "spilling");
        assert_eq!(b.column(24).as_primitive::<Int64Type>().value(0), 1 << 30);
    }
}
