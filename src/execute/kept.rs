//! Tables a run published, kept in memory for the later jobs of the same run that read them: a
//! reader gets the batches Delta's writer was given, at the version that writer committed, instead
//! of decoding the table's Parquet files again. Bounded by a share of the memory limit, counted in
//! the memory pool, and dropped once the table's last reader in the run has finished.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::utils::memory::RecordBatchMemoryCounter;
use datafusion::datasource::MemTable;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};

use crate::engine::memory::limit_bytes;
use crate::execute::sealed::{Sealed, Watch};
use crate::plan::graph::Input;
use crate::plan::run_plan::{PlannedJob, RunPlan};
use crate::project::spec::{JobSpec, WriteMode};

/// Whether a job's table will hold exactly the rows its writer is given: a whole overwrite, not
/// an incremental job's intervals (`replacing_some`). A `[close]` table is one too: its closed
/// months' frozen rows are put into the job's result before it is written (`close::overlay`).
pub fn writes_whole_table(spec: &JobSpec, replacing_some: bool) -> bool {
    spec.mode == WriteMode::Overwrite && !replacing_some
}

/// The share of the memory limit that kept tables may hold at once: what is kept is memory the
/// later jobs' operators cannot have (it is reserved in the pool), so most of it stays theirs.
const BUDGET_SHARE: usize = 4;

/// The tables of one run kept for their readers. A run on a cluster, or a daemon's slot run, keeps
/// none (`none()`).
#[derive(Debug)]
pub struct KeptTables {
    pool: Option<Arc<dyn MemoryPool>>,
    /// Bytes kept tables and captures in progress may hold together.
    budget: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Per table published in this run: the jobs of the run that read it and have not finished.
    readers: HashMap<String, usize>,
    kept: HashMap<String, Kept>,
}

impl State {
    /// Bytes held by kept tables.
    fn held(&self) -> usize {
        self.kept.values().map(|k| k.reservation.size()).sum()
    }
}

/// The tables `job` reads that a job before it in the same run publishes.
fn read_from_run(job: &PlannedJob) -> impl Iterator<Item = &String> {
    job.inputs.iter().filter_map(|input| match input {
        Input::Job { job: up, table } if job.upstream_in_run.contains(up) => Some(table),
        _ => None,
    })
}

/// One kept table: its batches, and the Delta version they are the rows of.
#[derive(Debug)]
struct Kept {
    version: i64,
    batches: Vec<RecordBatch>,
    reservation: MemoryReservation,
}

impl KeptTables {
    /// Keeps nothing.
    pub fn none() -> Self {
        KeptTables {
            pool: None,
            budget: 0,
            state: Mutex::default(),
        }
    }

    /// For `plan`'s run, counted in `pool`: the tables its jobs publish and later jobs of the run
    /// read. Nothing is kept without a memory limit to take a share of.
    pub fn for_run(plan: &RunPlan, pool: Arc<dyn MemoryPool>) -> Self {
        let Some(limit) = limit_bytes(pool.as_ref()) else {
            return Self::none();
        };
        let mut readers = HashMap::new();
        for table in plan.jobs.iter().flat_map(read_from_run) {
            *readers.entry(table.clone()).or_insert(0) += 1;
        }
        KeptTables {
            pool: Some(pool),
            budget: limit.max(0) as usize / BUDGET_SHARE,
            state: Mutex::new(State {
                readers,
                ..State::default()
            }),
        }
    }

    /// A capture of what the job publishing `table` writes, when a later job of the run reads the
    /// table and `whole`: the table will hold exactly the rows written (`writes_whole_table`).
    pub fn capture(&self, table: &str, whole: bool) -> Option<Capture> {
        let pool = self.pool.as_ref()?;
        let state = self.state.lock().expect("not poisoned");
        if !whole || state.readers.get(table).is_none_or(|n| *n == 0) {
            return None;
        }
        let room = self.budget.saturating_sub(state.held());
        let reservation = MemoryConsumer::new(format!("kept table {table}")).register(pool);
        Some(Capture(Arc::new(Mutex::new(Some(Captured {
            batches: Vec::new(),
            counter: RecordBatchMemoryCounter::new(),
            room,
            reservation,
        })))))
    }

    /// Keep what `capture` saw as `table` at `version`, the version its writer committed, when it
    /// saw everything within the budget.
    pub fn keep(&self, table: &str, version: i64, capture: Capture) {
        let Some(captured) = capture.0.lock().expect("not poisoned").take() else {
            return;
        };
        let mut state = self.state.lock().expect("not poisoned");
        let bytes = captured.reservation.size();
        let unread = state.readers.get(table).is_none_or(|n| *n == 0);
        // A table kept before under this name (a job run twice) is replaced, not added to.
        let others = state.held() - state.kept.get(table).map_or(0, |k| k.reservation.size());
        if unread || others + bytes > self.budget {
            return;
        }
        tracing::debug!(
            table,
            version,
            bytes,
            "table kept in memory for its readers in this run"
        );
        let kept = Kept {
            version,
            batches: captured.batches,
            reservation: captured.reservation,
        };
        state.kept.insert(table.to_string(), kept);
    }

    /// A provider over `table` at `version` as `schema` (the Delta reader's: the kept columns are
    /// taken by name and cast to it once, and what the cast batches hold is counted again);
    /// `None` when that version is not kept, or its columns do not fit `schema`, or the cast
    /// batches do not fit the budget or the pool (the table is let go: its files are read).
    pub fn provider(
        &self,
        table: &str,
        version: i64,
        schema: &SchemaRef,
    ) -> Option<Arc<dyn TableProvider>> {
        let mut state = self.state.lock().expect("not poisoned");
        let kept = state.kept.get(table).filter(|k| k.version == version)?;
        if kept.batches.first().is_some_and(|b| b.schema() != *schema) {
            let others = state.held() - kept.reservation.size();
            let mut kept = state.kept.remove(table).expect("found above");
            match self.cast(&mut kept, schema, others) {
                Ok(()) => state.kept.insert(table.to_string(), kept),
                Err(e) => {
                    tracing::debug!(table, error = %e, "kept table not read: reading its files");
                    return None;
                }
            };
        }
        Some(Arc::new(KeptTable {
            name: format!("{table} v{version}"),
            schema: schema.clone(),
            batches: state.kept[table].batches.clone(),
        }))
    }

    /// `kept`'s batches as `schema`, counted again, within the budget beside `others` bytes.
    fn cast(
        &self,
        kept: &mut Kept,
        schema: &SchemaRef,
        others: usize,
    ) -> datafusion::error::Result<()> {
        let batches = kept
            .batches
            .iter()
            .map(|b| as_schema(b, schema))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let mut counter = RecordBatchMemoryCounter::new();
        let bytes: usize = batches.iter().map(|b| counter.count_batch(b)).sum();
        if others + bytes > self.budget {
            return Err(datafusion::error::DataFusionError::ResourcesExhausted(
                format!("cast to the Delta schema it holds {bytes} bytes, past the budget"),
            ));
        }
        kept.reservation.try_resize(bytes)?;
        kept.batches = batches;
        Ok(())
    }

    /// `job` has finished (or was skipped): a table none of the run's remaining jobs reads is let go.
    pub fn finished(&self, job: &PlannedJob) {
        let mut state = self.state.lock().expect("not poisoned");
        for table in read_from_run(job) {
            let left = state.readers.entry(table.clone()).or_insert(1);
            *left = left.saturating_sub(1);
            if *left == 0 {
                state.kept.remove(table);
            }
        }
    }
}

/// A kept table as a job's input: its batches, scanned as a `KeptTableExec`.
#[derive(Debug)]
struct KeptTable {
    /// The table and version, for `explain`.
    name: String,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

#[async_trait]
impl TableProvider for KeptTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        // The batches dealt over the scanning session's partitions.
        let n = state.config().target_partitions().max(1);
        let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
        for (i, batch) in self.batches.iter().enumerate() {
            parts[i % n].push(batch.clone());
        }
        let rows = MemTable::try_new(self.schema.clone(), parts)?;
        Ok(Arc::new(Sealed {
            inner: rows.scan(state, projection, filters, limit).await?,
            watch: Counted {
                name: self.name.clone(),
                metrics: ExecutionPlanMetricsSet::new(),
            },
        }))
    }
}

/// The scan of a kept table: DataFusion's scan of its batches, counting the rows it passes on (the
/// job's `_runs.rows_read`), which a memory scan does not.
#[derive(Debug)]
struct Counted {
    /// The table and version.
    name: String,
    metrics: ExecutionPlanMetricsSet,
}

impl Watch for Counted {
    const NAME: &'static str = "KeptTableExec";
    const STATISTICS: bool = true;

    fn describe(&self, _inner: &dyn ExecutionPlan) -> String {
        format!("{} in memory", self.name)
    }

    fn partition(
        &self,
        partition: usize,
    ) -> impl FnMut(datafusion::error::Result<RecordBatch>) -> datafusion::error::Result<RecordBatch>
    + Send
    + 'static {
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        move |batch| {
            if let Ok(b) = &batch {
                baseline.record_output(b.num_rows());
            }
            batch
        }
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// `batch`'s columns taken by the names of `schema` and cast to its types.
fn as_schema(batch: &RecordBatch, schema: &SchemaRef) -> datafusion::error::Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let column = batch.column_by_name(f.name()).ok_or_else(|| {
                datafusion::error::DataFusionError::Plan(format!("no column {}", f.name()))
            })?;
            Ok(match column.data_type() == f.data_type() {
                true => column.clone(),
                false => datafusion::arrow::compute::cast(column, f.data_type())?,
            })
        })
        .collect::<datafusion::error::Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Bytes a batch may hold beyond twice its rows' before it is copied.
const SLACK: usize = 64 << 10;

/// The batches one job's writer is given, as they pass; it gives up (and frees them) once they
/// would pass the kept tables' room or the memory pool refuses them.
#[derive(Debug, Clone)]
pub struct Capture(Arc<Mutex<Option<Captured>>>);

#[derive(Debug)]
struct Captured {
    batches: Vec<RecordBatch>,
    /// Counts a buffer that several batches share once.
    counter: RecordBatchMemoryCounter,
    room: usize,
    reservation: MemoryReservation,
}

impl Capture {
    /// Keep `batch` with those seen before it.
    pub fn push(&self, batch: &RecordBatch) {
        let mut guard = self.0.lock().expect("not poisoned");
        let Some(captured) = guard.as_mut() else {
            return;
        };
        // A small batch sliced out of large buffers (an aggregate's output, a partition's last
        // rows) is copied, so that it holds only its rows.
        let whole = batch.get_array_memory_size();
        let rows = crate::store::delta::rows_bytes(std::slice::from_ref(batch));
        let batch = match whole > 2 * rows.min(whole) + SLACK {
            true => match crate::engine::materialize::owned(batch) {
                Ok(copy) => copy,
                Err(_) => {
                    *guard = None;
                    return;
                }
            },
            false => batch.clone(),
        };
        let bytes = captured.counter.count_batch(&batch);
        let size = captured.reservation.size();
        if size + bytes > captured.room || captured.reservation.try_grow(bytes).is_err() {
            *guard = None;
            return;
        }
        captured.batches.push(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array, StringViewArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use datafusion::prelude::SessionContext;

    use crate::project::spec::{CloseSpec, OnClose};
    use crate::values::Trigger;

    fn job(name: &str, reads: &[&str]) -> PlannedJob {
        PlannedJob {
            name: name.into(),
            table: name.into(),
            url: url::Url::parse(&format!("memory:///curated/{name}/")).unwrap(),
            mode: WriteMode::Overwrite,
            inputs: reads
                .iter()
                .map(|t| Input::Job {
                    job: t.to_string(),
                    table: t.to_string(),
                })
                .collect(),
            upstream_in_run: reads.iter().map(|t| t.to_string()).collect(),
        }
    }

    /// `orders` read by `daily` and `monthly`; `daily` read by nobody.
    fn run(jobs: Vec<PlannedJob>) -> RunPlan {
        RunPlan {
            run_id: "run".into(),
            trigger: Trigger::Manual,
            as_of: None,
            jobs,
            claim: None,
            forward_only: false,
            interval: None,
            reason: None,
        }
    }

    fn orders(ids: &[i64], names: &[&str]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("name", DataType::Utf8View, true),
            Field::new("order_id", DataType::Int64, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringViewArray::from_iter_values(names.iter().copied())),
                Arc::new(Int64Array::from(ids.to_vec())),
            ],
        )
        .unwrap()
    }

    /// The Delta reader's schema: plain strings, the columns in the table's order.
    fn delta_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("order_id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    async fn rows(provider: Arc<dyn TableProvider>) -> Vec<(i64, String)> {
        let ctx = SessionContext::new();
        ctx.register_table("t", provider).unwrap();
        let batches = ctx
            .sql("SELECT order_id, name FROM t ORDER BY order_id")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut out = Vec::new();
        for b in batches {
            let (ids, names) = (
                b.column(0).as_primitive::<Int64Type>(),
                b.column(1).as_string::<i32>(),
            );
            out.extend((0..b.num_rows()).map(|i| (ids.value(i), names.value(i).to_string())));
        }
        out
    }

    fn three_jobs(pool: &Arc<dyn MemoryPool>) -> (KeptTables, RunPlan) {
        let plan = run(vec![
            job("orders", &[]),
            job("daily", &["orders"]),
            job("monthly", &["orders"]),
        ]);
        (KeptTables::for_run(&plan, pool.clone()), plan)
    }

    #[tokio::test]
    async fn a_table_is_kept_for_its_later_readers_as_their_schema_and_let_go_after_the_last() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 20));
        let (kept, plan) = three_jobs(&pool);
        assert!(
            kept.capture("daily", true).is_none(),
            "no later job reads it"
        );
        assert!(
            kept.capture("orders", false).is_none(),
            "not the whole table"
        );
        let capture = kept.capture("orders", true).unwrap();
        capture.push(&orders(&[3, 1], &["c", "a"]));
        capture.push(&orders(&[2], &["b"]));
        kept.keep("orders", 4, capture);
        assert!(pool.reserved() > 0, "counted in the pool");
        let schema = delta_schema();
        assert!(
            kept.provider("orders", 3, &schema).is_none(),
            "another version"
        );
        let provider = kept.provider("orders", 4, &schema).unwrap();
        assert_eq!(provider.schema(), schema);
        // The pool holds what the cast batches hold, not what the captured ones did.
        let cast_bytes = {
            let state = kept.state.lock().unwrap();
            let mut counter = RecordBatchMemoryCounter::new();
            let batches = &state.kept["orders"].batches;
            assert_eq!(batches[0].schema(), schema);
            batches
                .iter()
                .map(|b| counter.count_batch(b))
                .sum::<usize>()
        };
        assert_eq!(pool.reserved(), cast_bytes);
        let expected = vec![(1, "a".to_string()), (2, "b".into()), (3, "c".into())];
        assert_eq!(rows(provider).await, expected);
        kept.finished(&plan.jobs[1]);
        assert!(
            kept.provider("orders", 4, &schema).is_some(),
            "monthly still reads it"
        );
        kept.finished(&plan.jobs[2]);
        assert!(kept.provider("orders", 4, &schema).is_none());
        assert_eq!(pool.reserved(), 0);
    }

    #[tokio::test]
    async fn a_table_past_the_budget_is_not_kept() {
        // Budget: a quarter of 64 KiB; the batch holds 10,000 ids, 80,000 bytes.
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(64 << 10));
        let (kept, _) = three_jobs(&pool);
        let capture = kept.capture("orders", true).unwrap();
        let ids: Vec<i64> = (0..10_000).collect();
        capture.push(&orders(&ids, &vec!["x"; ids.len()]));
        kept.keep("orders", 0, capture);
        assert!(kept.provider("orders", 0, &delta_schema()).is_none());
        assert_eq!(pool.reserved(), 0);
    }

    #[test]
    fn a_few_rows_sliced_from_large_buffers_are_copied_and_count_as_just_their_rows() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(64 << 20));
        let (kept, _) = three_jobs(&pool);
        let capture = kept.capture("orders", true).unwrap();
        let ids: Vec<i64> = (0..100_000).collect();
        let large = orders(&ids, &vec!["x"; ids.len()]);
        capture.push(&large.slice(10, 5));
        let held = pool.reserved();
        assert!(held > 0 && held < 4096, "held {held} bytes for 5 rows");
        kept.keep("orders", 0, capture);
        assert_eq!(pool.reserved(), held);
    }

    #[test]
    fn no_run_keeps_without_a_memory_limit_and_none_keeps_nothing() {
        let unbounded: Arc<dyn MemoryPool> =
            Arc::new(datafusion::execution::memory_pool::UnboundedMemoryPool::default());
        assert!(three_jobs(&unbounded).0.capture("orders", true).is_none());
        assert!(KeptTables::none().capture("orders", true).is_none());
    }

    #[test]
    fn only_a_whole_overwrite_writes_the_whole_table() {
        let spec = JobSpec::test_spec("orders");
        assert!(writes_whole_table(&spec, false));
        assert!(
            !writes_whole_table(&spec, true),
            "an incremental job's intervals"
        );
        let partitions = JobSpec {
            mode: WriteMode::OverwritePartitions,
            ..JobSpec::test_spec("orders")
        };
        assert!(!writes_whole_table(&partitions, false));
        let frozen = JobSpec {
            close: Some(CloseSpec {
                month_column: "month".into(),
                on_close: OnClose::Freeze,
                record_id_column: None,
            }),
            ..JobSpec::test_spec("orders")
        };
        assert!(
            writes_whole_table(&frozen, false),
            "frozen months are in the written result"
        );
    }
}
