//! Joins whose build side has one row per key (an aggregate grouped by the join key): each probe
//! row is looked up once, and the probe side's columns go through uncopied.
//!
//! A mart joins its facts with aggregates of their events, each grouped by the fact's key:
//! order_experience joins 10M orders with five such aggregates (`shipment`, `refund`, ...) by
//! `order_id`. DataFusion 55's `HashJoinExec` builds the output of each probe batch by `take` on
//! every column, probe side included, with the identity as indices when the build side is unique:
//! the orders' columns, and those each join before it added, were copied five times over. That
//! `take` was 44% of the joins' own time at 1M orders.
//!
//! The physical optimizer rule [`UniqueKeyJoins`] replaces a `HashJoinExec` by
//! [`LookupJoinExec`] when:
//! - it is an inner or right join (the probe side is the right one, as DataFusion puts it) on one
//!   integer column, with no filter, no fetch, no dynamic filter and NULL keys matching nothing;
//! - its build side is a grouped aggregate (final mode, no grouping sets) whose one group column is
//!   the key, seen through projections of columns, filters, repartitions, coalesces and sorts.
//!
//! The build side becomes an index from key to row: a dense array when the keys are dense enough,
//! else a hash map. A right join's probe columns are passed on as they are, and an inner join's
//! are filtered; only the build side's columns are taken. The rows are the same as DataFusion's,
//! in the probe side's order (which `HashJoinExec` promises too). Any other join is left to
//! DataFusion.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array, new_null_array,
};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use datafusion::arrow::compute::{cast, concat_batches, filter, take};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::utils::memory::{RecordBatchMemoryCounter, get_record_batch_memory_size};
use datafusion::common::{HashMap, JoinType, NullEquality, Statistics};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateOutputMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::ReplaceChildrenOptions;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::statistics::ChildStats;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputDistributionRequirements, PlanProperties,
    StatisticsArgs,
};
use futures::{StreamExt, TryStreamExt};

use crate::engine::stand_in;

/// The physical optimizer rule: each eligible `HashJoinExec` becomes a [`LookupJoinExec`] with
/// the same inputs and output.
#[derive(Debug, Default)]
pub struct UniqueKeyJoins;

impl PhysicalOptimizerRule for UniqueKeyJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        stand_in::everywhere(plan, LookupJoinExec::replacing)
    }

    fn name(&self) -> &str {
        "unique_key_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Where an output column comes from.
#[derive(Debug, Clone, Copy)]
enum Side {
    Build(usize),
    Probe(usize),
}

/// An inner or right join on one integer key whose build side has one row per key: the output,
/// requirements and properties of the `HashJoinExec` it replaces, computed by lookup.
#[derive(Debug)]
pub struct LookupJoinExec {
    /// The `HashJoinExec` this operator computes.
    replaced: Arc<dyn ExecutionPlan>,
    build_key: Arc<dyn PhysicalExpr>,
    probe_key: Arc<dyn PhysicalExpr>,
    /// Right join: every probe row once. Inner: the probe rows that match.
    keep_unmatched: bool,
    /// The output's columns, in order.
    columns: Vec<Side>,
    /// The build side of a `CollectLeft` join, shared by every output partition.
    shared: Arc<tokio::sync::OnceCell<Arc<Lookup>>>,
    metrics: ExecutionPlanMetricsSet,
}

impl LookupJoinExec {
    /// The operator that replaces `plan`, when it is a `HashJoinExec` this one computes.
    pub fn replacing(plan: &Arc<dyn ExecutionPlan>) -> Option<LookupJoinExec> {
        LookupJoinExec::try_new(plan.clone())
    }

    /// `None` unless `plan` is a `HashJoinExec` this operator computes (see the module's
    /// documentation).
    pub fn try_new(plan: Arc<dyn ExecutionPlan>) -> Option<LookupJoinExec> {
        let join = plan.downcast_ref::<HashJoinExec>()?;
        let keep_unmatched = match join.join_type() {
            JoinType::Right => true,
            JoinType::Inner => false,
            _ => return None,
        };
        let [(build_key, probe_key)] = join.on() else {
            return None;
        };
        let plain = join.filter().is_none()
            && join.fetch().is_none()
            && join.dynamic_expressions_produced().is_empty()
            && !join.null_aware
            && join.null_equality() == NullEquality::NullEqualsNothing
            && matches!(
                join.partition_mode(),
                PartitionMode::Partitioned | PartitionMode::CollectLeft
            );
        let build_schema = join.left().schema();
        let key_type = build_key.data_type(&build_schema).ok()?;
        if !plain
            || !integer_key(&key_type)
            || probe_key.data_type(&join.right().schema()).ok()? != key_type
        {
            return None;
        }
        let key_column = build_key.downcast_ref::<Column>()?.index();
        if !one_row_per_key(join.left(), key_column) {
            return None;
        }
        let build_width = build_schema.fields().len();
        let side = |i: usize| match i < build_width {
            true => Side::Build(i),
            false => Side::Probe(i - build_width),
        };
        let columns = match &join.projection {
            Some(indices) => indices.iter().map(|&i| side(i)).collect(),
            None => (0..join.join_schema().fields().len()).map(side).collect(),
        };
        Some(LookupJoinExec {
            build_key: build_key.clone(),
            probe_key: probe_key.clone(),
            keep_unmatched,
            columns,
            replaced: plan,
            shared: Arc::new(tokio::sync::OnceCell::new()),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The `HashJoinExec` this operator computes (what a worker is sent to rebuild it).
    pub fn replaced(&self) -> &Arc<dyn ExecutionPlan> {
        &self.replaced
    }

    fn join(&self) -> &HashJoinExec {
        self.replaced
            .downcast_ref::<HashJoinExec>()
            .expect("a LookupJoinExec replaces a HashJoinExec")
    }
}

/// Key types looked up as 64-bit integers with no loss.
fn integer_key(data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32
    )
}

/// Whether `plan`'s rows have distinct values in `column`: it is the one group column of a
/// grouped aggregate's final result, as seen through operators that keep or drop whole rows.
fn one_row_per_key(plan: &Arc<dyn ExecutionPlan>, column: usize) -> bool {
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        let groups = aggregate.group_expr();
        return aggregate.mode().output_mode() == AggregateOutputMode::Final
            && groups.is_single()
            && groups.expr().len() == 1
            && column == 0;
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        return projection.expr().get(column).is_some_and(|p| {
            p.expr
                .downcast_ref::<Column>()
                .is_some_and(|c| one_row_per_key(projection.input(), c.index()))
        });
    }
    if let Some(filtered) = plan.downcast_ref::<FilterExec>() {
        let column = match filtered.projection() {
            Some(indices) => match indices.get(column) {
                Some(&i) => i,
                None => return false,
            },
            None => column,
        };
        return one_row_per_key(filtered.input(), column);
    }
    let same_rows = plan.is::<RepartitionExec>()
        || plan.is::<CoalescePartitionsExec>()
        || plan.is::<SortExec>();
    same_rows && one_row_per_key(plan.children()[0], column)
}

impl DisplayAs for LookupJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "LookupJoinExec: mode={:?}, join_type={}, on=[({}, {})]",
            self.join().partition_mode(),
            self.join().join_type(),
            self.build_key,
            self.probe_key
        )
    }
}

impl ExecutionPlan for LookupJoinExec {
    fn name(&self) -> &'static str {
        "LookupJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.replaced.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.join().left(), self.join().right()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.replaced.apply_expressions(f)
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.replaced.input_distribution_requirements()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false, true]
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        self.replaced.child_stats_requests(partition)
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        self.replaced.statistics_from_inputs(input_stats, args)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        stand_in::over_children(
            self.replaced.clone(),
            children,
            options,
            LookupJoinExec::replacing,
        )
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, stand_in::recompute())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let join = self.join();
        let probe = join.right().execute(partition, context.clone())?;
        let build_partition = match join.partition_mode() {
            PartitionMode::CollectLeft => 0,
            _ => partition,
        };
        let builder = Builder {
            input: join.left().clone(),
            partition: build_partition,
            key: self.build_key.clone(),
            rows: MetricBuilder::new(&self.metrics).counter("build_input_rows", partition),
            time: MetricBuilder::new(&self.metrics).subset_time("build_time", partition),
        };
        let lookup = match join.partition_mode() {
            PartitionMode::CollectLeft => {
                let shared = self.shared.clone();
                futures::future::Either::Left(async move {
                    shared
                        .get_or_try_init(|| builder.build(context))
                        .await
                        .cloned()
                })
            }
            _ => futures::future::Either::Right(builder.build(context)),
        };
        let prober = Prober {
            key: self.probe_key.clone(),
            keep_unmatched: self.keep_unmatched,
            columns: self.columns.clone(),
            schema: self.schema(),
            baseline: BaselineMetrics::new(&self.metrics, partition),
        };
        let stream = futures::stream::once(async move {
            let lookup = lookup.await?;
            Ok::<_, DataFusionError>(probe.and_then(move |batch| {
                let joined = prober.join(&lookup, &batch);
                async move { joined }
            }))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The build side's rows in one batch, and the row of each key.
#[derive(Debug)]
struct Lookup {
    rows: RecordBatch,
    index: RowIndex,
    _reservation: MemoryReservation,
}

/// A row that no key has.
const NO_ROW: u32 = u32::MAX;

/// The build row of each key.
#[derive(Debug)]
enum RowIndex {
    /// Keys from `min` on, each at its offset (`NO_ROW` where none): chosen when it takes at most
    /// twice the hash map's memory, as a partition of order ids does (an eighth of them, spread
    /// over the whole range): one memory access per lookup instead of two.
    Dense {
        min: i64,
        rows: Vec<u32>,
    },
    Hashed(HashMap<i64, u32>),
}

impl RowIndex {
    /// hashbrown's table for `n` keys: a power of two of buckets, at most 7/8 full, each holding
    /// the key and the row (16 bytes, aligned) and a control byte.
    fn hashed_bytes(n: usize) -> usize {
        (n * 8 / 7 + 1).next_power_of_two() * 17
    }

    /// The index of `keys` (nulls left out), its bytes grown in `reservation`; an error when a
    /// key comes twice (the build side is not what the rule saw).
    fn build(
        keys: &datafusion::arrow::array::Int64Array,
        reservation: &MemoryReservation,
    ) -> Result<RowIndex> {
        let present = keys
            .iter()
            .enumerate()
            .filter_map(|(row, k)| Some((k?, row as u32)));
        let (min, max) = match (
            datafusion::arrow::compute::min(keys),
            datafusion::arrow::compute::max(keys),
        ) {
            (Some(min), Some(max)) => (min, max),
            _ => (0, -1),
        };
        let count = keys.len() - keys.null_count();
        let hashed = RowIndex::hashed_bytes(count);
        let twice = |key: i64| {
            DataFusionError::Internal(format!(
                "LookupJoinExec: the build side has key {key} twice"
            ))
        };
        let slots = max
            .checked_sub(min)
            .and_then(|span| usize::try_from(span).ok()?.checked_add(1));
        if let Some(slots) = slots.filter(|&n| n.saturating_mul(4) <= 2 * hashed) {
            reservation.try_grow(slots * 4)?;
            let mut rows = vec![NO_ROW; slots];
            for (key, row) in present {
                let slot = &mut rows[(key - min) as usize];
                if *slot != NO_ROW {
                    return Err(twice(key));
                }
                *slot = row;
            }
            return Ok(RowIndex::Dense { min, rows });
        }
        reservation.try_grow(hashed)?;
        let mut map = HashMap::with_capacity(count);
        for (key, row) in present {
            if map.insert(key, row).is_some() {
                return Err(twice(key));
            }
        }
        Ok(RowIndex::Hashed(map))
    }

    /// The build row of each key (`NO_ROW` for none, and for a null key).
    fn rows(&self, keys: &datafusion::arrow::array::Int64Array) -> Vec<u32> {
        let values = keys.values().iter();
        let mut rows: Vec<u32> = match self {
            RowIndex::Dense { min, rows } => values
                .map(|&k| match k.checked_sub(*min) {
                    Some(offset) if (0..rows.len() as i64).contains(&offset) => {
                        rows[offset as usize]
                    }
                    _ => NO_ROW,
                })
                .collect(),
            RowIndex::Hashed(map) => values
                .map(|k| map.get(k).copied().unwrap_or(NO_ROW))
                .collect(),
        };
        if let Some(nulls) = keys.nulls() {
            for i in nulls
                .iter()
                .enumerate()
                .filter(|(_, valid)| !valid)
                .map(|(i, _)| i)
            {
                rows[i] = NO_ROW;
            }
        }
        rows
    }
}

/// What builds one [`Lookup`].
struct Builder {
    input: Arc<dyn ExecutionPlan>,
    partition: usize,
    key: Arc<dyn PhysicalExpr>,
    rows: Count,
    time: Time,
}

impl Builder {
    /// Collect the build side's partition, within the memory pool, and index it by key.
    async fn build(self, context: Arc<TaskContext>) -> Result<Arc<Lookup>> {
        let reservation = MemoryConsumer::new(format!("LookupJoinExec[{}]", self.partition))
            .register(context.memory_pool());
        let schema = self.input.schema();
        let mut stream = self.input.execute(self.partition, context)?;
        let mut batches = Vec::new();
        // Batches may be slices of one larger batch: each buffer is counted once.
        let mut counter = RecordBatchMemoryCounter::new();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            reservation.try_grow(counter.count_batch(&batch))?;
            batches.push(batch);
        }
        let _timer = self.time.timer();
        let rows = concat_batches(&schema, &batches)?;
        if rows.num_rows() >= NO_ROW as usize {
            return Err(DataFusionError::NotImplemented(format!(
                "LookupJoinExec: a build side of {} rows (it takes fewer than {NO_ROW})",
                rows.num_rows()
            )));
        }
        let kept = get_record_batch_memory_size(&rows);
        reservation.try_grow(kept)?;
        drop(batches);
        reservation.try_resize(kept)?;
        let keys = int64_keys(&self.key, &rows)?;
        let index = RowIndex::build(&keys, &reservation)?;
        self.rows.add(rows.num_rows());
        Ok(Arc::new(Lookup {
            rows,
            index,
            _reservation: reservation,
        }))
    }
}

/// `key` over `batch`, as 64-bit integers.
fn int64_keys(
    key: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
) -> Result<datafusion::arrow::array::Int64Array> {
    let values = key.evaluate(batch)?.into_array(batch.num_rows())?;
    Ok(cast(&values, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

/// What joins each probe batch with the lookup.
struct Prober {
    key: Arc<dyn PhysicalExpr>,
    keep_unmatched: bool,
    columns: Vec<Side>,
    schema: datafusion::arrow::datatypes::SchemaRef,
    baseline: BaselineMetrics,
}

impl Prober {
    fn join(&self, lookup: &Lookup, batch: &RecordBatch) -> Result<RecordBatch> {
        let _timer = self.baseline.elapsed_compute().timer();
        let keys = int64_keys(&self.key, batch)?;
        let mut rows = lookup.index.rows(&keys);
        let found = BooleanBuffer::collect_bool(rows.len(), |i| rows[i] != NO_ROW);
        let (rows, kept) = if self.keep_unmatched {
            // Rows with no match are null; their index is any row in bounds.
            rows.iter_mut()
                .for_each(|r| *r = if *r == NO_ROW { 0 } else { *r });
            let rows = UInt32Array::new(ScalarBuffer::from(rows), Some(NullBuffer::new(found)));
            (rows, None)
        } else {
            rows.retain(|&r| r != NO_ROW);
            (
                UInt32Array::from(rows),
                Some(BooleanArray::new(found, None)),
            )
        };
        let columns = self
            .columns
            .iter()
            .map(|side| match side {
                Side::Probe(i) => match &kept {
                    None => Ok(batch.column(*i).clone()),
                    Some(kept) => Ok(filter(batch.column(*i), kept)?),
                },
                Side::Build(i) => build_column(lookup.rows.column(*i), &rows),
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let out = RecordBatch::try_new(self.schema.clone(), columns)?;
        self.baseline.record_output(out.num_rows());
        Ok(out)
    }
}

/// A build column's values at `rows` (null where a row is null).
fn build_column(values: &ArrayRef, rows: &UInt32Array) -> Result<ArrayRef> {
    if values.is_empty() || rows.null_count() == rows.len() {
        return Ok(new_null_array(values.data_type(), rows.len()));
    }
    Ok(take(values, rows, None)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// 40 orders (id i: gmv 10·i, region eu for odd ids) and one with no id, and their
    /// shipments: order 1 has two, 2 one, 4 one with no status, 9 one; one shipment has no order
    /// id, one is for an order that does not exist (77). The orders outnumber the shipments'
    /// aggregate, so DataFusion hashes the aggregate.
    const TABLES: [&str; 2] = [
        "CREATE TABLE orders AS SELECT * FROM (SELECT value AS order_id, CAST(value * 10 AS INT) AS gmv, \
         CASE WHEN value % 2 = 1 THEN 'eu' ELSE 'us' END AS region FROM generate_series(1, 40) \
         UNION ALL SELECT CAST(NULL AS BIGINT), 50, 'eu')",
        "CREATE TABLE shipments (order_id BIGINT, status VARCHAR, days INT) AS VALUES \
         (1, 'late', 3), (1, 'ok', 1), (2, 'ok', 2), (4, NULL, 5), (NULL, 'ok', 7), (9, 'lost', 4), \
         (77, 'ok', 1)",
    ];

    /// Each order with its shipments' aggregate: a right join in DataFusion's plan.
    const LEFT_JOINED: &str = "WITH s AS (SELECT order_id, count(*) AS n, max(days) AS days, \
        min(status) AS status FROM shipments GROUP BY order_id) \
        SELECT o.order_id, o.gmv, o.region, s.n, s.days, s.status \
        FROM orders o LEFT JOIN s ON s.order_id = o.order_id";

    /// `partitions` partitions; `partitioned`: hash joins on both sides partitioned by the key
    /// (else the build side is collected once).
    async fn session(with_rule: bool, partitions: usize, partitioned: bool) -> SessionContext {
        let mut config = SessionConfig::new()
            .with_target_partitions(partitions)
            .with_batch_size(2);
        // An inner join's hash table would filter the probe side's scan: none here, so that
        // inner joins are looked up too (a scan of Parquet takes the filter, and such a join
        // stays DataFusion's).
        config
            .options_mut()
            .optimizer
            .enable_join_dynamic_filter_pushdown = false;
        if partitioned {
            let options = config.options_mut();
            options.optimizer.hash_join_single_partition_threshold = 0;
            options.optimizer.hash_join_single_partition_threshold_rows = 0;
        }
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        if with_rule {
            state = state.with_physical_optimizer_rule(Arc::new(UniqueKeyJoins));
        }
        let ctx = SessionContext::new_with_state(state.build());
        for table in TABLES {
            ctx.sql(table).await.unwrap().collect().await.unwrap();
        }
        ctx
    }

    /// The plan's text and its rows, sorted.
    async fn run(ctx: &SessionContext, sql: &str) -> (String, Vec<String>) {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let text = displayable(plan.as_ref()).indent(true).to_string();
        let batches = df.collect().await.unwrap();
        let shown = pretty_format_batches(&batches).unwrap().to_string();
        let mut rows: Vec<String> = shown.lines().map(str::to_string).collect();
        rows.sort();
        (text, rows)
    }

    #[tokio::test]
    async fn a_join_with_an_aggregate_by_its_key_is_looked_up_with_the_same_rows() {
        for (partitions, partitioned, mode) in [
            (1, false, "mode=CollectLeft"),
            (4, false, "mode=CollectLeft"),
            (4, true, "mode=Partitioned"),
        ] {
            let (plain, expected) =
                run(&session(false, partitions, partitioned).await, LEFT_JOINED).await;
            let (looked_up, got) =
                run(&session(true, partitions, partitioned).await, LEFT_JOINED).await;
            assert!(plain.contains("join_type=Right"), "{plain}");
            assert!(
                looked_up.contains(&format!("LookupJoinExec: {mode}, join_type=Right")),
                "{looked_up}"
            );
            assert!(!looked_up.contains("HashJoinExec"), "{looked_up}");
            assert_eq!(got, expected, "{partitions} partitions");
            for row in [
                "| 1        | 10  | eu     | 2 | 3    | late   |",
                "| 2        | 20  | us     | 1 | 2    | ok     |",
                "| 3        | 30  | eu     |   |      |        |",
                "| 4        | 40  | us     | 1 | 5    |        |",
                "| 9        | 90  | eu     | 1 | 4    | lost   |",
                "|          | 50  | eu     |   |      |        |",
            ] {
                assert!(got.iter().any(|l| l == row), "{row} not in {got:#?}");
            }
            assert_eq!(got.len(), 41 + 4, "41 orders and the table's borders");
        }
    }

    #[tokio::test]
    async fn a_looked_up_join_is_estimated_as_the_hash_join_it_replaces() {
        use crate::engine::memory::PlanEstimate;
        let plan = |ctx: SessionContext| async move {
            let df = ctx.sql(LEFT_JOINED).await.unwrap();
            df.create_physical_plan().await.unwrap()
        };
        let plain = PlanEstimate::of(&plan(session(false, 4, true).await).await);
        let looked_up = plan(session(true, 4, true).await).await;
        assert!(
            displayable(looked_up.as_ref())
                .indent(true)
                .to_string()
                .contains("LookupJoinExec")
        );
        assert!(plain.hash_join_build_bytes > 0, "{plain:?}");
        assert_eq!(PlanEstimate::of(&looked_up), plain);
    }

    #[tokio::test]
    async fn an_inner_join_keeps_only_the_probe_rows_that_match() {
        // The orders that have shipments, with their count.
        let sql = "WITH s AS (SELECT order_id, count(*) AS n FROM shipments GROUP BY order_id) \
                   SELECT o.order_id, o.gmv, s.n FROM orders o JOIN s ON s.order_id = o.order_id";
        for partitioned in [false, true] {
            let (plain, expected) = run(&session(false, 4, partitioned).await, sql).await;
            let (looked_up, got) = run(&session(true, 4, partitioned).await, sql).await;
            assert!(plain.contains("join_type=Inner"), "{plain}");
            assert!(looked_up.contains("LookupJoinExec"), "{looked_up}");
            assert_eq!(got, expected);
            // No order 77, and the shipment with no id matches nothing.
            let rows = [
                "| 1        | 10  | 2 |",
                "| 2        | 20  | 1 |",
                "| 4        | 40  | 1 |",
                "| 9        | 90  | 1 |",
            ];
            assert_eq!(got.len(), rows.len() + 4, "{got:#?}");
            for row in rows {
                assert!(got.iter().any(|l| l == row), "{row} not in {got:#?}");
            }
        }
    }

    #[tokio::test]
    async fn a_join_whose_build_keys_may_repeat_is_left_to_datafusion() {
        for sql in [
            // The build side is the raw shipments, two rows for order 1.
            "SELECT o.order_id, s.status FROM orders o LEFT JOIN shipments s ON s.order_id = o.order_id",
            // Grouped by two columns: an order id can come back once per status.
            "WITH s AS (SELECT order_id, status, count(*) AS n FROM shipments GROUP BY order_id, status) \
             SELECT o.order_id, s.n FROM orders o LEFT JOIN s ON s.order_id = o.order_id",
            // A join filter beside the key.
            "WITH s AS (SELECT order_id, max(days) AS days FROM shipments GROUP BY order_id) \
             SELECT o.order_id, s.days FROM orders o LEFT JOIN s ON s.order_id = o.order_id AND s.days > o.gmv / 10",
        ] {
            for partitioned in [false, true] {
                let (plain, expected) = run(&session(false, 4, partitioned).await, sql).await;
                let (text, got) = run(&session(true, 4, partitioned).await, sql).await;
                assert!(!text.contains("LookupJoinExec"), "{sql}:\n{text}");
                assert_eq!(text, plain);
                assert_eq!(got, expected);
            }
        }
    }

    #[test]
    fn each_key_finds_its_row_in_a_dense_or_a_hashed_index() {
        use datafusion::arrow::array::Int64Array;
        use datafusion::execution::memory_pool::{MemoryPool, UnboundedMemoryPool};
        let pool: Arc<dyn MemoryPool> = Arc::new(UnboundedMemoryPool::default());
        let reservation = MemoryConsumer::new("test").register(&pool);
        let probe = Int64Array::from(vec![
            Some(12),
            None,
            Some(10),
            Some(11),
            Some(-5),
            Some(1 << 40),
        ]);
        // Keys 10..=13 (one null): dense, 4 slots.
        let dense = Int64Array::from(vec![Some(13), Some(10), None, Some(12)]);
        let index = RowIndex::build(&dense, &reservation).unwrap();
        assert!(matches!(&index, RowIndex::Dense { min: 10, rows } if rows.len() == 4));
        assert_eq!(index.rows(&probe), [3, NO_ROW, 1, NO_ROW, NO_ROW, NO_ROW]);
        assert_eq!(reservation.size(), 4 * 4);
        // Two keys far apart: hashed.
        let sparse = Int64Array::from(vec![Some(1 << 40), Some(10)]);
        let index = RowIndex::build(&sparse, &reservation).unwrap();
        assert!(matches!(&index, RowIndex::Hashed(map) if map.len() == 2));
        assert_eq!(index.rows(&probe), [NO_ROW, NO_ROW, 1, NO_ROW, NO_ROW, 0]);
        // A key twice is an error in either index, not a wrong row.
        for twice in [
            vec![Some(3), Some(4), Some(3)],
            vec![Some(3), Some(1 << 40), Some(3)],
        ] {
            let err = RowIndex::build(&Int64Array::from(twice), &reservation).unwrap_err();
            assert!(err.to_string().contains("key 3 twice"), "{err}");
        }
    }

    #[test]
    fn keys_are_looked_up_as_64_bit_integers_only_when_no_value_is_lost() {
        let int = |t: DataType| integer_key(&t);
        assert!(int(DataType::Int64) && int(DataType::Int32) && int(DataType::UInt32));
        assert!(!int(DataType::UInt64) && !int(DataType::Utf8) && !int(DataType::Float64));
    }
}
