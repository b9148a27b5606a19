//! The run ledger: the `_runs` Delta table in the curated store, one row per job run.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::curated;
use crate::error::{Error, Result};
use crate::storage::Stores;

/// Table name of the ledger.
pub const RUNS_TABLE: &str = "_runs";

/// Who is running retention: `RETENTION_ACTOR` if set, else the OS user, else `unknown`.
pub fn current_actor() -> String {
    ["RETENTION_ACTOR", "USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// Outcome of one job in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub run_id: String,
    pub job: String,
    /// `manual`, `schedule`, ...
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub status: Status,
    pub rows_read: i64,
    pub rows_written: i64,
    pub bytes_read: i64,
    /// JSON object: input table -> Delta version (curated) or `"source"`.
    pub input_versions: String,
    /// Version of the output table this run published.
    pub output_version: Option<i64>,
    pub error: Option<String>,
    /// Who started the run (`RETENTION_ACTOR`, else the OS user).
    pub actor: Option<String>,
    /// Why, for runs that need a reason (re-opening a closed month).
    pub reason: Option<String>,
}

/// Ledger schema; stable, BI tools read it.
pub fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("job", DataType::Utf8, false),
        Field::new("trigger", DataType::Utf8, false),
        Field::new("started_at", ts.clone(), false),
        Field::new("finished_at", ts, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("rows_read", DataType::Int64, false),
        Field::new("rows_written", DataType::Int64, false),
        Field::new("bytes_read", DataType::Int64, false),
        Field::new("input_versions", DataType::Utf8, false),
        Field::new("output_version", DataType::Int64, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("actor", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, true),
    ]))
}

/// Records as one Arrow batch.
pub fn to_batch(records: &[RunRecord]) -> Result<RecordBatch> {
    let strings = |f: &dyn Fn(&RunRecord) -> String| -> ArrayRef {
        Arc::new(StringArray::from(records.iter().map(f).collect::<Vec<_>>()))
    };
    let ts = |f: &dyn Fn(&RunRecord) -> DateTime<Utc>| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from(
                records
                    .iter()
                    .map(|r| f(r).timestamp_micros())
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        )
    };
    let ints = |f: &dyn Fn(&RunRecord) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from(records.iter().map(f).collect::<Vec<_>>()))
    };
    let columns: Vec<ArrayRef> = vec![
        strings(&|r| r.run_id.clone()),
        strings(&|r| r.job.clone()),
        strings(&|r| r.trigger.clone()),
        ts(&|r| r.started_at),
        ts(&|r| r.finished_at),
        strings(&|r| r.status.to_string()),
        ints(&|r| r.rows_read),
        ints(&|r| r.rows_written),
        ints(&|r| r.bytes_read),
        strings(&|r| r.input_versions.clone()),
        Arc::new(Int64Array::from(
            records.iter().map(|r| r.output_version).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            records.iter().map(|r| r.error.clone()).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            records.iter().map(|r| r.actor.clone()).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            records.iter().map(|r| r.reason.clone()).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema(), columns).map_err(|e| Error::DataFusion(e.to_string()))
}

/// Append records to `_runs` under the curated root (one Delta commit).
pub async fn append(stores: &Stores, curated_root: &url::Url, records: &[RunRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let batch = to_batch(records)?;
    curated::append(
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

    #[test]
    fn batch_matches_schema() {
        let t = DateTime::parse_from_rfc3339("2026-11-24T06:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let r = RunRecord {
            run_id: "r1".into(),
            job: "j".into(),
            trigger: "manual".into(),
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
        };
        let b = to_batch(&[r]).unwrap();
        assert_eq!(b.num_rows(), 1);
        assert_eq!(b.schema(), schema());
        let status = b.column(5).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(status.value(0), "failed");
    }
}
