//! SQL unit tests for jobs (`retention test`): sqllogictest files that insert hand-made rows
//! into empty source tables, run jobs with `RUN JOB name [WITH param = value, ...]`, and query
//! their outputs against expected rows. Files need no recompile and can be regenerated with
//! `--complete`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use sqllogictest::{DBOutput, DefaultColumnType};

use crate::engine::checks::run_checks;
use crate::engine::job::latest_day;
use crate::error::{Error, Result};
use crate::plan::workspace::Workspace;
use crate::project::params::parse_param;
use crate::project::spec::{AS_OF_PARAM, JobSpec};
use crate::store::system::{CLOSE_LOG, CLOSED_RECORDS, fixed_schema};
use crate::values::AsOf;

pub mod doubles;

/// One test database: every source as an empty in-memory table with its contract's schema.
pub struct JobTestDb {
    ws: Arc<Workspace>,
    ctx: SessionContext,
}

impl JobTestDb {
    pub fn new(ws: Arc<Workspace>) -> Result<JobTestDb> {
        let ctx = ws.engine.session(&[])?;
        for s in &ws.sources {
            let table = MemTable::try_new(s.contract_schema(), vec![vec![]])?;
            ctx.register_table(s.name.as_str(), Arc::new(table))?;
        }
        for name in [CLOSE_LOG, CLOSED_RECORDS] {
            let schema = fixed_schema(name).expect("fixed schema");
            ctx.register_table(name, Arc::new(MemTable::try_new(schema, vec![vec![]])?))?;
        }
        Ok(JobTestDb { ws, ctx })
    }

    /// `RUN JOB name [WITH a = 1, b = 'x']`: plan the job's real SQL against the tables as they
    /// are now and register its result under the job's output table name.
    async fn run_job(&mut self, rest: &str) -> Result<u64> {
        let (name, with) = match rest.split_once(|c: char| c.is_whitespace()) {
            Some((n, w)) => (n.trim(), w.trim()),
            None => (rest.trim(), ""),
        };
        let node = self.ws.graph.node(name).ok_or(Error::Selector {
            selector: name.to_string(),
        })?;
        let mut spec = node.spec.clone();
        let as_of = with_assignments(&mut spec, with)?;
        let as_of = if !spec.uses_as_of {
            None
        } else {
            match as_of.unwrap_or(spec.as_of) {
                AsOf::Day(d) => Some(d),
                AsOf::Today => Some(test_clock().date_naive()),
                AsOf::Latest => latest_day(&self.ctx, &self.ws.engine.project.latest_day).await?,
            }
        };
        let df = self
            .ws
            .engine
            .plan_job(&self.ctx, &spec, as_of, None)
            .await?;
        let batches = df.clone().collect().await?;
        // The executed batches' schema can be stricter about nullability than the plan's.
        let schema = batches
            .first()
            .map(|b| b.schema())
            .unwrap_or_else(|| df.schema().inner().clone());
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        self.ctx.deregister_table(spec.table.as_str())?;
        self.ctx.register_table(
            spec.table.as_str(),
            Arc::new(MemTable::try_new(schema, vec![batches])?),
        )?;
        // The job's checks run as in a real run: a failing check fails the statement.
        if let Err(e) = run_checks(&self.ctx, &spec, as_of).await {
            self.ctx.deregister_table(spec.table.as_str())?;
            return Err(e);
        }
        Ok(rows as u64)
    }
}

/// `WITH name = value, ...` of `RUN JOB`: parameters set on `spec` (typed by their defaults), and
/// `as_of`, the run's as-of day (`latest`, `today` or a day), returned.
fn with_assignments(spec: &mut JobSpec, with: &str) -> Result<Option<AsOf>> {
    if with.is_empty() {
        return Ok(None);
    }
    let bad = |message: String| Error::Job {
        job: spec.name.clone(),
        message,
    };
    let assignments = strip_keyword(with, "WITH").ok_or_else(|| {
        bad(format!(
            "expected `WITH name = value, ...` after the job name, found `{with}`"
        ))
    })?;
    let mut as_of = None;
    for a in assignments.split(',') {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| bad(format!("expected name = value, found `{a}`")))?;
        let (k, v) = (k.trim(), v.trim().trim_matches('\''));
        if k == AS_OF_PARAM {
            as_of = Some(v.parse::<AsOf>().map_err(bad)?);
            continue;
        }
        let default = spec
            .params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, d)| d.clone())
            .ok_or_else(|| bad(format!("job has no parameter `{k}`")))?;
        let value = parse_param(&default, v).map_err(bad)?;
        if let Some(slot) = spec.params.iter_mut().find(|(n, _)| n == k) {
            slot.1 = value;
        }
    }
    Ok(as_of)
}

/// The fixed clock of SQL tests' close log.
fn test_clock() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_790_000_000, 0).expect("valid time")
}

fn strip_keyword<'a>(text: &'a str, keyword: &str) -> Option<&'a str> {
    let t = text.trim_start();
    (t.len() >= keyword.len() && t[..keyword.len()].eq_ignore_ascii_case(keyword))
        .then(|| &t[keyword.len()..])
}

/// A cell as the test files write it: `NULL`, `(empty)`, or Arrow's display text.
fn cell(batch: &RecordBatch, col: usize, row: usize) -> String {
    let array = batch.column(col);
    if array.is_null(row) {
        return "NULL".into();
    }
    match array_value_to_string(array, row) {
        Ok(s) if s.is_empty() => "(empty)".into(),
        Ok(s) => s,
        Err(e) => format!("<{e}>"),
    }
}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DefaultColumnType::Integer,
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
            DefaultColumnType::FloatingPoint
        }
        _ => DefaultColumnType::Text,
    }
}

#[async_trait]
impl sqllogictest::AsyncDB for JobTestDb {
    type Error = Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>> {
        // `CLOSE MONTH 2026-01`: freeze the month of the frozen tables as they are now.
        if let Some(rest) = strip_keyword(sql, "CLOSE MONTH") {
            let month = rest.trim().trim_matches('\'');
            let snapshot =
                doubles::close_in_memory(&self.ctx, &self.ws, month, test_clock()).await?;
            return Ok(DBOutput::StatementComplete(snapshot as u64));
        }
        // `REOPEN MONTH 2026-01 REASON 'why'`.
        if let Some(rest) = strip_keyword(sql, "REOPEN MONTH") {
            let (month, reason) = rest
                .trim()
                .split_once(char::is_whitespace)
                .unwrap_or((rest.trim(), ""));
            let reason = strip_keyword(reason, "REASON")
                .unwrap_or("")
                .trim()
                .trim_matches('\'');
            doubles::reopen_in_memory(&self.ctx, month.trim_matches('\''), reason, test_clock())
                .await?;
            return Ok(DBOutput::StatementComplete(0));
        }
        if let Some(rest) = strip_keyword(sql, "RUN JOB") {
            return Ok(DBOutput::StatementComplete(
                self.run_job(rest.trim()).await?,
            ));
        }
        let is_query = ["SELECT", "WITH", "VALUES"]
            .iter()
            .any(|k| strip_keyword(sql, k).is_some());
        let df = self.ctx.sql(sql).await?;
        let schema = df.schema().inner().clone();
        let batches = df.collect().await?;
        if !is_query {
            return Ok(DBOutput::StatementComplete(
                batches.iter().map(|b| b.num_rows() as u64).sum(),
            ));
        }
        let mut rows = Vec::new();
        for b in &batches {
            for r in 0..b.num_rows() {
                rows.push((0..b.num_columns()).map(|c| cell(b, c, r)).collect());
            }
        }
        let types = schema
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "retention"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// `.slt` files under each path (a file or a directory), sorted.
pub fn test_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|source| Error::ReadFile {
                path: p.clone(),
                source,
            })?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "slt"))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Run (or, with `complete`, rewrite the expected results of) one test file.
pub async fn run_file(
    ws: Arc<Workspace>,
    file: &Path,
    complete: bool,
) -> std::result::Result<(), String> {
    let make = {
        let ws = ws.clone();
        move || {
            let ws = ws.clone();
            async move { JobTestDb::new(ws) }
        }
    };
    let mut runner = sqllogictest::Runner::new(make);
    if complete {
        runner
            .update_test_file(
                file,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            )
            .await
            .map_err(|e| e.to_string())
    } else {
        runner
            .run_file_async(file)
            .await
            .map_err(|e| e.display(true).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    #[test]
    fn keywords_match_case_insensitively_at_the_start() {
        assert_eq!(strip_keyword("  run job x", "RUN JOB"), Some(" x"));
        assert_eq!(
            strip_keyword("CLOSE MONTH 2026-01", "CLOSE MONTH"),
            Some(" 2026-01")
        );
        assert_eq!(strip_keyword("SELECT 1", "RUN JOB"), None);
        assert_eq!(strip_keyword("RUN", "RUN JOB"), None);
    }

    #[test]
    fn cells_are_written_as_the_test_files_expect() {
        let b = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("s", DataType::Utf8, true),
                Field::new("n", DataType::Int64, true),
            ])),
            vec![
                Arc::new(StringArray::from(vec![Some(""), None, Some("x")])),
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
            ],
        )
        .unwrap();
        assert_eq!(cell(&b, 0, 0), "(empty)");
        assert_eq!(cell(&b, 0, 1), "NULL");
        assert_eq!(cell(&b, 0, 2), "x");
        assert_eq!(cell(&b, 1, 2), "3");
        assert_eq!(column_type(&DataType::Int64), DefaultColumnType::Integer);
        assert_eq!(
            column_type(&DataType::Decimal128(18, 2)),
            DefaultColumnType::FloatingPoint
        );
        assert_eq!(column_type(&DataType::Utf8), DefaultColumnType::Text);
    }

    #[test]
    fn test_files_are_the_slt_files_of_a_directory_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b.slt", "a.slt", "notes.md"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let files = test_files(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["a.slt", "b.slt"]);
        let e = test_files(&[dir.path().join("missing")]).unwrap();
        assert_eq!(e, vec![dir.path().join("missing")]);
    }
}
