//! The tables the engine keeps itself in the curated store: their names and fixed schemas. The run
//! ledger `_runs`, and month close's log `_month_close`, frozen record ids `_closed_entries`, the
//! `_closed_months` view and the `_closed_<table>` snapshots. Jobs may read them; they are stable
//! for BI tools.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The run ledger: one row per job run.
pub const RUNS_TABLE: &str = "_runs";
/// The close log: one row per close and re-open.
pub const CLOSE_LOG: &str = "_month_close";
/// The record ids (e.g. ledger entry ids) frozen into each snapshot.
pub const CLOSED_RECORDS: &str = "_closed_entries";
/// A view over the close log: the months closed now, one row each.
pub const CLOSED_MONTHS: &str = "_closed_months";
/// Prefix of a frozen table's snapshot table.
const SNAPSHOT_PREFIX: &str = "_closed_";

/// System tables a job may read by name (snapshot tables are system tables too).
pub const SYSTEM_TABLES: [&str; 4] = [RUNS_TABLE, CLOSE_LOG, CLOSED_RECORDS, CLOSED_MONTHS];

/// The snapshot table of a frozen table.
pub fn snapshot_table(table: &str) -> String {
    format!("{SNAPSHOT_PREFIX}{table}")
}

/// Whether `table` names a snapshot table (`_closed_<table>`, not `_closed_entries` or the view).
pub fn is_snapshot_table(table: &str) -> bool {
    table.starts_with(SNAPSHOT_PREFIX) && table != CLOSED_RECORDS && table != CLOSED_MONTHS
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `_runs` schema; stable, BI tools read it.
pub fn runs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("job", DataType::Utf8, false),
        Field::new("trigger", DataType::Utf8, false),
        Field::new("started_at", utc_micros(), false),
        Field::new("finished_at", utc_micros(), false),
        Field::new("status", DataType::Utf8, false),
        Field::new("rows_read", DataType::Int64, false),
        Field::new("rows_written", DataType::Int64, false),
        Field::new("bytes_read", DataType::Int64, false),
        Field::new("input_versions", DataType::Utf8, false),
        Field::new("output_version", DataType::Int64, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("actor", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, true),
        Field::new("as_of", DataType::Date32, true),
        Field::new("slot", utc_micros(), true),
        Field::new("attempt", DataType::Int64, true),
        Field::new("daemon_id", DataType::Utf8, true),
        Field::new("interval_start", DataType::Date32, true),
        Field::new("interval_end", DataType::Date32, true),
        Field::new("spec_hash", DataType::Utf8, true),
        Field::new("peak_memory_bytes", DataType::Int64, true),
        Field::new("spilled_bytes", DataType::Int64, true),
        Field::new("memory_plan", DataType::Utf8, true),
        Field::new("memory_limit_bytes", DataType::Int64, true),
    ]))
}

/// `_month_close` schema.
pub fn close_log_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("month", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("snapshot", DataType::Int64, false),
        Field::new("at", utc_micros(), false),
        Field::new("actor", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, true),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("open_items", DataType::Int64, false),
        Field::new("tables", DataType::Utf8, false),
        Field::new("frozen_tables", DataType::Utf8, false),
    ]))
}

/// `_closed_entries` schema.
pub fn closed_records_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("closed_month", DataType::Utf8, false),
        Field::new("snapshot", DataType::Int64, false),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("record_id", DataType::Int64, false),
    ]))
}

/// Schema of a system table with a fixed schema (`_closed_<table>` has its table's).
pub fn fixed_schema(table: &str) -> Option<SchemaRef> {
    match table {
        RUNS_TABLE => Some(runs_schema()),
        CLOSE_LOG => Some(close_log_schema()),
        CLOSED_RECORDS => Some(closed_records_schema()),
        _ => None,
    }
}

/// System tables that start empty and are read as empty until first written (the snapshot
/// tables are only read once a month is closed, and then they exist).
pub fn empty_until_written(table: &str) -> bool {
    table == CLOSE_LOG || table == CLOSED_RECORDS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names() {
        assert_eq!(
            snapshot_table("budget_reconciliation"),
            "_closed_budget_reconciliation"
        );
        assert!(is_snapshot_table("_closed_budget_reconciliation"));
        assert!(!is_snapshot_table(CLOSED_RECORDS));
        assert!(!is_snapshot_table(CLOSED_MONTHS));
        assert!(!is_snapshot_table(RUNS_TABLE));
        assert!(fixed_schema("_closed_x").is_none());
        assert_eq!(fixed_schema(RUNS_TABLE).unwrap().fields().len(), 25);
    }
}
