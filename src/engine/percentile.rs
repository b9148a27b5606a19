//! `percentile_cont`, DataFusion's own, made safe for a partial aggregate that stops aggregating.
//!
//! When a partial aggregate sees almost as many groups as rows it stops, and turns each row into
//! a state (`convert_to_state`); the spilling plan makes every partial aggregate do so
//! (engine/session.rs). DataFusion 55.2's `percentile_cont` asserts that it gets one argument
//! there, but an ordered-set aggregate gets its percentile and its `WITHIN GROUP` ordering too,
//! and the job panicked (fulfillment_sla at 51.6M orders). This wrapper passes the value column
//! alone, the one DataFusion's `update_batch` reads; everything else is DataFusion's.

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::common::Result;
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator};

use crate::engine::udaf_override::{GroupsOverride, Overridden};

/// `percentile_cont` (and `quantile_cont`) as [`AggregateUDF`], to register over DataFusion's.
pub fn udaf() -> AggregateUDF {
    AggregateUDF::new_from_impl(Overridden::new(
        datafusion::functions_aggregate::percentile_cont::percentile_cont_udaf(),
        ValueOnly,
    ))
}

/// DataFusion's groups accumulator, wrapped in [`ValueOnlyStates`].
#[derive(Debug, PartialEq, Eq, Hash)]
struct ValueOnly;

impl GroupsOverride for ValueOnly {
    fn supported(&self, inner: &dyn AggregateUDFImpl, args: AccumulatorArgs) -> bool {
        inner.groups_accumulator_supported(args)
    }
    fn create(
        &self,
        inner: &dyn AggregateUDFImpl,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let inner = inner.create_groups_accumulator(args)?;
        Ok(Box::new(ValueOnlyStates { inner }))
    }
}

/// DataFusion's groups accumulator, given only the value column when it converts rows to states.
struct ValueOnlyStates {
    inner: Box<dyn GroupsAccumulator>,
}

impl GroupsAccumulator for ValueOnlyStates {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .update_batch(values, group_indices, opt_filter, total_num_groups)
    }
    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        self.inner.evaluate(emit_to)
    }
    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.inner.state(emit_to)
    }
    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .merge_batch(values, group_indices, total_num_groups)
    }
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        self.inner.convert_to_state(&values[..1], opt_filter)
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Float64Array, Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::Float64Type;
    use datafusion::logical_expr::expr::AggregateFunction;
    use datafusion::physical_plan::ExecutionPlan;
    use datafusion::prelude::SessionContext;
    use std::sync::Arc;

    /// Whether a planned aggregate is this `percentile_cont`.
    fn is_ours(f: &AggregateFunction) -> bool {
        f.func.inner().is::<Overridden<ValueOnly>>()
    }

    /// A session whose partial aggregates stop at once, as the spilling plan's do, over
    /// v = 0..999 with g = v % 2.
    fn skipping_session() -> SessionContext {
        let config = crate::engine::udaf_override::tests::skipping_config(100, 10);
        let ctx = SessionContext::new_with_config(config);
        let v: Vec<i64> = (0..1000).collect();
        let batch = RecordBatch::try_from_iter([
            (
                "g",
                Arc::new(Int64Array::from_iter_values(v.iter().map(|v| v % 2))) as _,
            ),
            (
                "v",
                Arc::new(Float64Array::from_iter_values(v.iter().map(|&v| v as f64))) as _,
            ),
        ])
        .unwrap();
        // Two partitions: a partial aggregate on each, then the final one.
        let (a, b) = (batch.slice(0, 500), batch.slice(500, 500));
        let table =
            datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![a], vec![b]])
                .unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    fn skipped_rows(plan: &Arc<dyn ExecutionPlan>) -> usize {
        let own = plan
            .metrics()
            .and_then(|m| m.sum_by_name("skipped_aggregation_rows"))
            .map_or(0, |v| v.as_usize());
        own + plan.children().into_iter().map(skipped_rows).sum::<usize>()
    }

    #[tokio::test]
    async fn a_partial_aggregate_that_stops_aggregating_gives_the_exact_percentiles() {
        let ctx = skipping_session();
        ctx.register_udaf(udaf());
        let sql = "SELECT g, percentile_cont(0.5) WITHIN GROUP (ORDER BY v) AS p50, \
                          percentile_cont(0.9) WITHIN GROUP (ORDER BY v) AS p90, count(*) AS n \
                   FROM t GROUP BY g ORDER BY g";
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        let batches = datafusion::physical_plan::collect(plan.clone(), ctx.task_ctx())
            .await
            .unwrap();
        assert!(skipped_rows(&plan) > 0, "no partial aggregate stopped");
        let rows =
            datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        let p50 = rows
            .column(1)
            .as_primitive::<Float64Type>()
            .values()
            .to_vec();
        let p90 = rows
            .column(2)
            .as_primitive::<Float64Type>()
            .values()
            .to_vec();
        // Even v: 0, 2, ..., 998 (500 values). p50 at 0.5 x 499 = 249.5, between 498 and 500;
        // p90 at 0.9 x 499 = 449.1, between 898 and 900: 898 + 0.1 x 2. Odd v: each plus 1.
        assert_eq!(p50, vec![499.0, 500.0]);
        assert_eq!(p90, vec![898.2, 899.2]);
    }

    #[tokio::test]
    async fn it_is_the_percentile_cont_and_quantile_cont_that_sql_plans() {
        let ctx = SessionContext::new();
        ctx.register_udaf(udaf());
        for name in [
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY x)",
            "quantile_cont(x, 0.5)",
        ] {
            let sql = format!("SELECT {name} FROM (VALUES (1.0), (2.0)) AS v(x)");
            let plan = ctx.state().create_logical_plan(&sql).await.unwrap();
            let mut found = false;
            use datafusion::common::tree_node::TreeNode;
            plan.apply(|node| {
                for e in node.expressions() {
                    e.apply(|e| {
                        if let datafusion::prelude::Expr::AggregateFunction(f) = e {
                            found |= is_ours(f);
                        }
                        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
                    })?;
                }
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            })
            .unwrap();
            assert!(found, "{name}: {plan}");
        }
    }
}
