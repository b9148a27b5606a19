//! The run ledger: the `_runs` Delta table in the curated store, one row per job run (and per
//! month close or re-open), appended in one commit per run.

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::RecordBatch;
use serde::Serialize;

use crate::error::Result;
use crate::store::Stores;
use crate::store::delta;
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

/// Append records to `_runs` under the curated root (one Delta commit).
pub async fn append(stores: &Stores, curated_root: &url::Url, records: &[RunRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let batch = to_batch(records)?;
    delta::append(
        stores,
        curated_root,
        RUNS_TABLE,
        vec![batch],
        &[],
        "retention run ledger: one row per job run",
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Date32Type, Int64Type, TimestampMicrosecondType};

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
    }
}
