//! A cross join with a one-row side keeps that row, not the other side, in memory.
//!
//! DataFusion's `CrossJoinExec` collects its left input in memory and streams its right one. A
//! job's `FROM calibration c CROSS JOIN unit u` (a table of one row per customer, then one row of
//! parameters) collects the whole table: 1.3 GB at 27M customers, which cannot spill. DataFusion's
//! join selection swaps the sides only when it knows both sizes; here the one-row side is known
//! (an aggregate without groups, or `VALUES`) and the other is not, so this rule swaps them.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::CrossJoinExec;
use datafusion::physical_plan::{ExecutionPlan, StatisticsArgs, StatisticsContext};

/// The physical optimizer rule: a `CrossJoinExec` whose right input has at most one row, and
/// whose left input may have more, gets its inputs swapped (column order kept by a projection).
#[derive(Debug, Default)]
pub struct CollectTheSingleRow;

/// Whether `plan` is known to produce at most one row.
fn at_most_one_row(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    let stats = StatisticsContext::new().compute(plan.as_ref(), &StatisticsArgs::new())?;
    Ok(matches!(stats.num_rows, Precision::Exact(n) if n <= 1))
}

impl PhysicalOptimizerRule for CollectTheSingleRow {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<CrossJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if at_most_one_row(join.right())? && !at_most_one_row(join.left())? {
                Ok(Transformed::yes(join.swap_inputs()?))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "collect_the_single_row"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn the_one_row_side_is_collected_and_the_rows_are_the_same() {
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(CollectTheSingleRow))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let many = Int64Array::from_iter_values(0..1000);
        let batch = RecordBatch::try_from_iter([("x", Arc::new(many) as _)]).unwrap();
        ctx.register_batch("t", batch).unwrap();
        let sql =
            "SELECT t.x, u.days FROM t CROSS JOIN (SELECT 7 AS days) u ORDER BY t.x DESC LIMIT 2";
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let text = displayable(plan.as_ref()).indent(true).to_string();
        // The join's first (collected) input is the one-row projection, the second the table.
        let join = text.find("CrossJoinExec").expect(&text);
        let (one_row, table) = (
            text[join..].find("days"),
            text[join..].find("DataSourceExec"),
        );
        assert!(one_row < table, "{text}");
        let batches = df.collect().await.unwrap();
        let rows = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert_eq!(
            rows,
            "+-----+------+\n| x   | days |\n+-----+------+\n| 999 | 7    |\n| 998 | 7    |\n+-----+------+"
        );
    }
}
