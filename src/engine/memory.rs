//! A job's share of the engine's memory pool: every reservation the job's operators make passes
//! through it to the shared pool (so `memory_limit` still bounds the whole run), and it keeps what
//! the job holds and the most it ever held, its peak memory. A job retried because it ran out of
//! memory passes them through the sharing rules of engine/share_pool.rs first. Also what a job's
//! executed plan spilled.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::engine::share_pool::SharePool;

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{StatisticsArgs, StatisticsContext};

use datafusion::error::Result;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// How a job's query is planned for memory: DataFusion's defaults, or the plan a job that ran out
/// of memory is retried with (sort-merge joins, no partial aggregation, and spilling operators
/// sharing the job's memory: `Engine::spilling_job_session`). `_runs.memory_plan` records which
/// one a job succeeded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryPlan {
    Default,
    Spilling,
}

/// The pool's limit in bytes, as `_runs.memory_limit_bytes` stores it: `None` when unlimited.
pub fn limit_bytes(pool: &dyn MemoryPool) -> Option<i64> {
    match pool.memory_limit() {
        MemoryLimit::Finite(n) => Some(n as i64),
        _ => None,
    }
}

/// One job's view of the shared pool, counting its own reservations.
#[derive(Debug)]
pub struct JobMemory {
    shared: Arc<dyn MemoryPool>,
    /// Set by [`JobMemory::share_spilling`]: the sharing rules in front of `shared`.
    sharing: OnceLock<SharePool>,
    held: AtomicUsize,
    peak: AtomicUsize,
}

impl JobMemory {
    /// A job's view of `shared`, holding nothing yet.
    pub fn over(shared: Arc<dyn MemoryPool>) -> Arc<JobMemory> {
        Arc::new(JobMemory {
            shared,
            sharing: OnceLock::new(),
            held: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    /// From now on, the job's spilling operators share its memory (engine/share_pool.rs). Call it
    /// between attempts, when the job holds nothing.
    pub fn share_spilling(&self) {
        let _ = self.sharing.set(SharePool::over(self.shared.clone()));
    }

    /// Where reservations go: the sharing rules when set, else the shared pool.
    fn pool(&self) -> &dyn MemoryPool {
        match self.sharing.get() {
            Some(sharing) => sharing,
            None => self.shared.as_ref(),
        }
    }

    /// The most the job's operators held at once, in bytes.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn added(&self, bytes: usize) {
        let held = self.held.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(held, Ordering::Relaxed);
    }
}

impl std::fmt::Display for JobMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "a job's share ({} bytes, peak {}) of {}",
            self.held.load(Ordering::Relaxed),
            self.peak(),
            self.shared
        )
    }
}

impl MemoryPool for JobMemory {
    fn name(&self) -> &str {
        "JobMemory"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.pool().register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.pool().unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.pool().grow(reservation, additional);
        self.added(additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.pool().shrink(reservation, shrink);
        self.held.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        if is_repartition_channel(reservation.consumer()) {
            self.grow(reservation, additional);
            return Ok(());
        }
        self.pool().try_grow(reservation, additional)?;
        self.added(additional);
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.shared.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.shared.memory_limit()
    }
}

/// What a planned query would hold in memory, estimated from the planner's statistics (each
/// operator's bytes, else its rows times a row's width from its schema); what has no statistics
/// counts 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanEstimate {
    /// What its scans read; a materialized CTE's query counts once.
    pub input_bytes: usize,
    /// What the build sides of its hash joins, which cannot spill, would hold, plus 24 bytes a
    /// row for the hash table. A materialized CTE's query runs before the rest, so it is its own
    /// stage; this is the largest stage.
    pub hash_join_build_bytes: usize,
    /// What the largest sort would hold: a sort that kept its input in memory must then merge
    /// it, and under DataFusion's greedy pool that merge cannot spill and fails when another
    /// operator took the rest. A sort with a limit (a top-k) keeps only its k rows: it counts 0.
    pub sort_input_bytes: usize,
}

impl PlanEstimate {
    /// The estimate of `plan`, in one walk over it.
    pub fn of(plan: &Arc<dyn ExecutionPlan>) -> PlanEstimate {
        let mut walk = EstimateWalk {
            stats: StatisticsContext::new(),
            seen: std::collections::HashSet::new(),
            input_bytes: 0,
            sort_input_bytes: 0,
            stages: Vec::new(),
        };
        let main = walk.stage(plan);
        PlanEstimate {
            input_bytes: walk.input_bytes,
            hash_join_build_bytes: walk.stages.into_iter().fold(main, usize::max),
            sort_input_bytes: walk.sort_input_bytes,
        }
    }
}

/// The state of one [`PlanEstimate::of`] walk.
struct EstimateWalk<'a> {
    stats: StatisticsContext,
    /// Materialized CTEs already walked, by name.
    seen: std::collections::HashSet<&'a str>,
    input_bytes: usize,
    sort_input_bytes: usize,
    /// The build bytes of each materialized CTE's stage.
    stages: Vec<usize>,
}

impl<'a> EstimateWalk<'a> {
    /// The hash join build bytes of `plan`'s stage; scans add to `input_bytes`, and materialized
    /// CTEs' stages go to `stages`.
    fn stage(&mut self, plan: &'a Arc<dyn ExecutionPlan>) -> usize {
        if let Some((name, query)) = crate::engine::materialize::cte_query(plan.as_ref()) {
            if self.seen.insert(name) {
                let bytes = self.stage(query);
                self.stages.push(bytes);
            }
            return 0;
        }
        let children = plan.children();
        if children.is_empty() {
            self.input_bytes += self.estimated(plan).map_or(0, |(bytes, _)| bytes);
        }
        if let Some(sort) = plan
            .downcast_ref::<SortExec>()
            .filter(|s| s.fetch().is_none())
        {
            let bytes = self.estimated(sort.input()).map_or(0, |(bytes, _)| bytes);
            self.sort_input_bytes = self.sort_input_bytes.max(bytes);
        }
        // A join the engine looks up holds the same build side as DataFusion's would.
        let join = plan.downcast_ref::<HashJoinExec>().or_else(|| {
            plan.downcast_ref::<crate::engine::lookup_join::LookupJoinExec>()
                .and_then(|l| l.replaced().downcast_ref::<HashJoinExec>())
        });
        let own = match join {
            Some(join) => self
                .estimated(join.left())
                .map_or(0, |(bytes, rows)| bytes + rows * 24),
            None => 0,
        };
        own + children.into_iter().map(|c| self.stage(c)).sum::<usize>()
    }

    fn estimated(&self, plan: &Arc<dyn ExecutionPlan>) -> Option<(usize, usize)> {
        estimated_bytes(plan, &self.stats)
    }
}

/// The bytes `plan`'s output would hold, and its rows, from its statistics.
fn estimated_bytes(
    plan: &Arc<dyn ExecutionPlan>,
    stats: &StatisticsContext,
) -> Option<(usize, usize)> {
    let stats = stats.compute(plan.as_ref(), &StatisticsArgs::new()).ok()?;
    let rows = *stats.num_rows.get_value()?;
    let bytes = match stats.total_byte_size.get_value() {
        Some(b) => *b,
        None => rows * row_width(&plan.schema()),
    };
    Some((bytes, rows))
}

/// A row's width in bytes: fixed-width columns their width, others 16 (a view, or an offset and
/// a short value).
fn row_width(schema: &datafusion::arrow::datatypes::Schema) -> usize {
    schema
        .fields()
        .iter()
        .map(|f| f.data_type().primitive_width().unwrap_or(16))
        .sum()
}

/// Bytes every operator of an executed `plan` wrote to spill files.
pub fn spilled_bytes(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let own = plan.metrics().and_then(|m| m.spilled_bytes()).unwrap_or(0);
    own + plan
        .children()
        .into_iter()
        .map(spilled_bytes)
        .sum::<usize>()
}

/// Whether `consumer` holds the batches waiting in one of a `RepartitionExec`'s output channels.
/// Such a reservation is never refused, only counted: refused, DataFusion 55.2 writes the batch to
/// the channel's spill pool, whose reader can wait forever on one file while the batch it needs
/// is in another (apache/datafusion#24883: every thread parks, the query neither returns nor
/// fails; fixed after 55.2 by apache/datafusion#24891). What the channels hold still counts
/// against the pool, so the operators that can spill do so sooner. (Not counting it was tried: at
/// 51.6M orders under 2 GiB the peak RSS rose from 5.0 to 5.7 GB; docs/BENCHMARKS.md.)
fn is_repartition_channel(consumer: &MemoryConsumer) -> bool {
    consumer
        .name()
        .strip_prefix("RepartitionExec[")
        .is_some_and(|partition| !partition.starts_with("Merge"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    #[test]
    fn the_peak_is_the_most_held_at_once_and_the_shared_limit_still_holds() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let memory = JobMemory::over(shared.clone());
        let job: Arc<dyn MemoryPool> = memory.clone();
        let a = MemoryConsumer::new("a").register(&job);
        let b = MemoryConsumer::new("b").register(&job);
        a.try_grow(300).unwrap();
        b.try_grow(500).unwrap();
        a.shrink(200);
        b.grow(100);
        // Held: 300, 800, 600, 700. Another job's 250 bytes make this one's next 100 too many.
        let other = MemoryConsumer::new("other").register(&shared);
        other.try_grow(250).unwrap();
        let err = a.try_grow(100).unwrap_err();
        assert!(err.to_string().contains("Resources exhausted"), "{err}");
        assert_eq!(shared.reserved(), 950);
        drop((a, b));
        assert_eq!(shared.reserved(), 250);
        assert_eq!(memory.peak(), 800);
    }

    #[test]
    fn a_repartition_channel_is_counted_but_never_refused() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let job: Arc<dyn MemoryPool> = JobMemory::over(shared.clone());
        let channel = MemoryConsumer::new("RepartitionExec[1]")
            .with_can_spill(true)
            .register(&job);
        channel.try_grow(1500).unwrap();
        assert_eq!(shared.reserved(), 1500);
        let merge = MemoryConsumer::new("RepartitionExec[Merge 1]").register(&job);
        assert!(merge.try_grow(1).is_err());
        let sort = MemoryConsumer::new("ExternalSorter[1]").register(&job);
        assert!(sort.try_grow(1).is_err());
        channel.shrink(1000);
        sort.try_grow(400).unwrap();
    }

    /// apache/datafusion#24883: under a memory limit, a grouped aggregate on two partitions can
    /// park every thread once two of a RepartitionExec's input tasks spill at once. The issue's
    /// query, twelve times, each given 20 seconds (it takes a fraction of one); without
    /// `is_repartition_channel` the first attempt never returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_repartition_under_a_memory_limit_does_not_deadlock() {
        use datafusion::execution::disk_manager::DiskManagerBuilder;
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        use datafusion::prelude::{SessionConfig, SessionContext};
        let setup = SessionContext::new_with_config(
            SessionConfig::new()
                .with_target_partitions(2)
                .with_batch_size(64),
        );
        let table = setup
            .sql(
                "SELECT v % 13 AS g, md5(CAST(v % 337 AS VARCHAR)) AS trace_id \
                 FROM generate_series(1, 40000) AS s(v)",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(2 << 20));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(JobMemory::over(shared))
            .with_disk_manager_builder(DiskManagerBuilder::default())
            .build_arc()
            .unwrap();
        let config = SessionConfig::new()
            .with_target_partitions(2)
            .with_batch_size(64);
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let t = datafusion::datasource::MemTable::try_new(table[0].schema(), vec![table]).unwrap();
        ctx.register_table("t", Arc::new(t)).unwrap();
        for attempt in 0..12 {
            let query = async {
                ctx.sql("SELECT g, count(DISTINCT trace_id) AS n FROM t GROUP BY g")
                    .await?
                    .collect()
                    .await
            };
            let result = tokio::time::timeout(std::time::Duration::from_secs(20), query)
                .await
                .unwrap_or_else(|_| panic!("attempt {attempt} never returned"));
            let batches = match result {
                Ok(batches) => batches,
                // The channels' batches count against the 2 MB: on a loaded machine they can
                // leave the aggregate nothing, an answer, not a hang.
                Err(e) if e.to_string().contains("Resources exhausted") => continue,
                Err(e) => panic!("attempt {attempt}: {e}"),
            };
            let groups: usize = batches.iter().map(|b| b.num_rows()).sum();
            assert_eq!(groups, 13, "attempt {attempt}");
            // 13 and 337 are coprime and 40,000 > 13 x 337: every group sees all 337 trace ids.
            for batch in &batches {
                let n = batch.column(1).as_any();
                let n = n.downcast_ref::<datafusion::arrow::array::Int64Array>();
                assert!(
                    n.unwrap().values().iter().all(|&n| n == 337),
                    "attempt {attempt}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_full_sort_counts_its_input_and_a_top_k_does_not() {
        use datafusion::arrow::array::{Int64Array, RecordBatch};
        let ctx = datafusion::prelude::SessionContext::new();
        let keys = Int64Array::from_iter_values(0..10_000);
        let batch = RecordBatch::try_from_iter([("k", Arc::new(keys) as _)]).unwrap();
        // 10,000 BIGINTs: 80,000 bytes of values in a buffer the table reports with its padding.
        let bytes = batch.get_array_memory_size();
        assert!((80_000..81_000).contains(&bytes), "{bytes}");
        ctx.register_batch("t", batch).unwrap();
        let estimate = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let df = ctx.sql(sql).await.unwrap();
                PlanEstimate::of(&df.create_physical_plan().await.unwrap())
            }
        };
        // All of the input is sorted; a top-10 keeps 10 rows, not its input.
        let full = estimate("SELECT k FROM t ORDER BY k DESC").await;
        assert_eq!((full.input_bytes, full.sort_input_bytes), (bytes, bytes));
        let top = estimate("SELECT k FROM t ORDER BY k DESC LIMIT 10").await;
        assert_eq!((top.input_bytes, top.sort_input_bytes), (bytes, 0));
    }
}
