//! Sorts of a single stream spread over the cores: the physical optimizer rule
//! [`ParallelSorts`].
//!
//! A window with no `PARTITION BY` (a global `row_number() OVER (ORDER BY ...)`, as in
//! customer_summary's RFM quintiles) needs all its rows in one sorted stream. DataFusion 55 sorts
//! them with one `SortExec` on one partition, so one core sorts every row while the others wait;
//! its own `repartition_sorts` only splits a sort whose input is several partitions coalesced,
//! not one whose input is a single stream (the window before it, a cross join). At 10M orders
//! customer_summary's three such sorts of 4.7M customers took 2.9 s on one core.
//!
//! The rule puts the rows of such a sort round robin onto one partition per core (at most the
//! session's partitions), sorts each partition on its own, and merges the sorted partitions into
//! one stream again:
//! `SortPreservingMergeExec <- SortExec (per partition) <- RepartitionExec (round robin)`. The
//! result is one stream in the same order of the sort keys (rows with equal keys may come in
//! another order, which no sort promised; the jobs break ties with an id). The final merge runs
//! on one core, so it merges as few streams as there are cores to sort them. A sort with a
//! `fetch` (top-k) keeps only k rows and is left alone, and so is one whose input is known to fit
//! in one batch.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, StatisticsArgs, StatisticsContext,
};

/// The physical optimizer rule: each `SortExec` of one input partition into one output partition
/// becomes a merge of per-partition sorts (module docs).
#[derive(Debug)]
pub struct ParallelSorts {
    cores: usize,
}

impl ParallelSorts {
    /// Sorts spread over `cores` partitions, or the session's partitions when fewer.
    pub fn over(cores: usize) -> ParallelSorts {
        ParallelSorts { cores }
    }
}

impl PhysicalOptimizerRule for ParallelSorts {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let partitions = config.execution.target_partitions.min(self.cores);
        if partitions < 2 {
            return Ok(plan);
        }
        let batch_size = config.execution.batch_size.get();
        plan.transform_up(|node| match spread(&node, partitions, batch_size)? {
            Some(merged) => Ok(Transformed::yes(merged)),
            None => Ok(Transformed::no(node)),
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "parallel_sorts"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `node` as a merge of `partitions` sorts, when it is a sort of a single stream worth spreading.
fn spread(
    node: &Arc<dyn ExecutionPlan>,
    partitions: usize,
    batch_size: usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(sort) = node.downcast_ref::<SortExec>() else {
        return Ok(None);
    };
    let input = sort.input();
    let single = input.output_partitioning().partition_count() == 1;
    if sort.preserve_partitioning() || sort.fetch().is_some() || !single {
        return Ok(None);
    }
    let rows = StatisticsContext::new()
        .compute(input.as_ref(), &StatisticsArgs::new())?
        .num_rows;
    if rows.get_value().is_some_and(|&n| n <= batch_size) {
        return Ok(None);
    }
    let spread =
        RepartitionExec::try_new(Arc::clone(input), Partitioning::RoundRobinBatch(partitions))?;
    let sorted =
        SortExec::new(sort.expr().clone(), Arc::new(spread)).with_preserve_partitioning(true);
    let merged = SortPreservingMergeExec::new(sort.expr().clone(), Arc::new(sorted));
    Ok(Some(Arc::new(merged)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch, UInt64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// `n` customers as (customer_id, orders) in one partition of batches of 100 rows, in an
    /// order that is not sorted: customer i has (i * 37) % 11 orders, so orders repeat and the
    /// id breaks the ties.
    fn customers(n: i64) -> MemTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Int64, false),
            Field::new("orders", DataType::Int64, false),
        ]));
        let ids: Vec<i64> = (0..n).map(|i| (i * 7919) % n).collect();
        let batches = ids
            .chunks(100)
            .map(|chunk| {
                let orders = chunk.iter().map(|i| (i * 37) % 11);
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from(chunk.to_vec())),
                        Arc::new(Int64Array::from_iter_values(orders)),
                    ],
                )
                .unwrap()
            })
            .collect();
        MemTable::try_new(schema, vec![batches]).unwrap()
    }

    /// 4 partitions, and a rule for 3 cores: sorts are spread over 3.
    fn session(with_rule: bool, n: i64) -> SessionContext {
        let config = SessionConfig::new()
            .with_batch_size(100)
            .with_target_partitions(4);
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        if with_rule {
            state = state.with_physical_optimizer_rule(Arc::new(ParallelSorts::over(3)));
        }
        let ctx = SessionContext::new_with_state(state.build());
        ctx.register_table("customers", Arc::new(customers(n)))
            .unwrap();
        ctx
    }

    /// Two global windows: the second one's sort reads the first one's single sorted stream,
    /// which DataFusion sorts on one partition.
    const RANKED: &str = "SELECT customer_id, \
        row_number() OVER (ORDER BY customer_id) AS by_id, \
        row_number() OVER (ORDER BY orders DESC, customer_id) AS r FROM customers";

    /// (customer_id, by_id, r) of every row, ordered by customer_id, and the physical plan.
    async fn ranks(ctx: &SessionContext) -> (String, Vec<(i64, u64, u64)>) {
        let df = ctx.sql(RANKED).await.unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let text = displayable(plan.as_ref()).indent(true).to_string();
        let mut rows = Vec::new();
        for b in df.collect().await.unwrap() {
            let id = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let by_id = b.column(1).as_any().downcast_ref::<UInt64Array>().unwrap();
            let r = b.column(2).as_any().downcast_ref::<UInt64Array>().unwrap();
            rows.extend((0..b.num_rows()).map(|i| (id.value(i), by_id.value(i), r.value(i))));
        }
        rows.sort();
        (text, rows)
    }

    #[tokio::test]
    async fn a_sort_of_one_stream_is_spread_and_gives_the_same_row_numbers() {
        let (plain, expected) = ranks(&session(false, 1000)).await;
        let (spread, got) = ranks(&session(true, 1000)).await;
        assert!(plain.contains("preserve_partitioning=[false]"), "{plain}");
        assert!(
            !spread.contains("preserve_partitioning=[false]"),
            "{spread}"
        );
        let lines: Vec<&str> = spread.lines().map(str::trim).collect();
        let round_robin = lines
            .iter()
            .position(|l| {
                l.starts_with(
                    "RepartitionExec: partitioning=RoundRobinBatch(3), input_partitions=1",
                )
            })
            .unwrap_or_else(|| panic!("{spread}"));
        assert!(lines[round_robin - 1].starts_with("SortExec"), "{spread}");
        assert!(
            lines[round_robin - 1].contains("preserve_partitioning=[true]"),
            "{spread}"
        );
        assert!(
            lines[round_robin - 2].starts_with("SortPreservingMergeExec"),
            "{spread}"
        );
        assert!(
            lines[round_robin + 1].starts_with("BoundedWindowAggExec"),
            "{spread}"
        );
        assert_eq!(got, expected);
        // By hand: 1000 customers, orders = (id * 37) % 11 = 4 id mod 11. The most orders is 10,
        // which 91 customers have (4 id = 10 mod 11, i.e. id = 8 mod 11: 8, 19, ..., 998); the
        // first of them by id is 8 and the last 998, ranked 1 and 91. Customer 0 has 0 orders, as
        // have the other 90 multiples of 11 below 1000, and is the first of the last 91: rank 910.
        let row = |id: i64| *got.iter().find(|r| r.0 == id).unwrap();
        assert_eq!((row(8).2, row(19).2, row(998).2), (1, 2, 91));
        assert_eq!((row(0).2, row(11).2, row(990).2), (910, 911, 1000));
        assert!(got.iter().all(|&(id, by_id, _)| by_id == id as u64 + 1));
        let mut all: Vec<u64> = got.iter().map(|r| r.2).collect();
        all.sort();
        assert_eq!(all, (1..=1000).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn a_sort_that_fits_in_one_batch_or_keeps_the_top_rows_is_left_alone() {
        let (small, _) = ranks(&session(true, 50)).await;
        assert!(small.contains("preserve_partitioning=[false]"), "{small}");
        const TOP: &str =
            "SELECT customer_id FROM customers ORDER BY orders DESC, customer_id LIMIT 3";
        let mut plans = Vec::new();
        for with_rule in [false, true] {
            let top = session(with_rule, 1000).sql(TOP).await.unwrap();
            let plan = top.clone().create_physical_plan().await.unwrap();
            plans.push(displayable(plan.as_ref()).indent(true).to_string());
            let batches = top.collect().await.unwrap();
            let ids = batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            assert_eq!(ids.values().to_vec(), vec![8, 19, 30]);
        }
        assert!(plans[0].contains("fetch=3"), "{}", plans[0]);
        assert_eq!(plans[0], plans[1]);
    }
}
