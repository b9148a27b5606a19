//! Joins with a one-row side: a row of constants becomes columns, and any other one-row side is
//! the one kept in memory.
//!
//! A job binds its parameters into a one-row CTE and joins it (`WITH params AS (SELECT
//! CAST($as_of AS DATE) AS as_of_date) ... FROM params p CROSS JOIN order_experience oe WHERE
//! oe.order_date <= p.as_of_date`). DataFusion plans that as a nested loop join, which has no row
//! estimate for the planner's later choices (`recovery_cases` hashed its 2.38M wide case rows
//! twice for want of one) and keeps the condition out of the scan. [`ConstantRowAsColumns`]
//! replaces such a join by the other side, filtered with the constants put in the condition, and
//! projects the constants as columns.
//!
//! DataFusion's `CrossJoinExec` collects its left input in memory and streams its right one. A
//! job's `FROM calibration c CROSS JOIN unit u` (a table of one row per customer, then one row of
//! parameters) collects the whole table: 1.3 GB at 27M customers, which cannot spill. DataFusion's
//! join selection swaps the sides only when it knows both sizes; here the one-row side is known
//! (an aggregate without groups, or `VALUES`) and the other is not, so [`CollectTheSingleRow`]
//! swaps them.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, JoinType, ScalarValue, TableReference};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, Filter, LogicalPlan, Projection};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::CrossJoinExec;
use datafusion::physical_plan::{ExecutionPlan, StatisticsArgs, StatisticsContext};

/// The logical rule: an inner join without equality keys, one of whose sides is a row of
/// constants, becomes the other side filtered by the join's condition (the constants put in)
/// under a projection of the join's columns (the constants as literals).
#[derive(Debug, Default)]
pub struct ConstantRowAsColumns;

/// A column by its qualifier and name, as the join's schema and condition name it.
type ColumnKey = (Option<TableReference>, String);

/// The value of each column of `plan`'s one row, when `plan` is a row of constants: literals
/// projected from the empty relation's one row, under any aliases.
fn constant_row(plan: &LogicalPlan) -> Option<HashMap<ColumnKey, ScalarValue>> {
    let mut inner = plan;
    while let LogicalPlan::SubqueryAlias(alias) = inner {
        inner = alias.input.as_ref();
    }
    let LogicalPlan::Projection(projection) = inner else {
        return None;
    };
    let LogicalPlan::EmptyRelation(empty) = projection.input.as_ref() else {
        return None;
    };
    if !empty.produce_one_row {
        return None;
    }
    let values = projection
        .expr
        .iter()
        .map(|e| match e.clone().unalias_nested().data {
            Expr::Literal(value, _) => Some(value),
            _ => None,
        });
    let keys = plan
        .schema()
        .iter()
        .map(|(q, f)| (q.cloned(), f.name().clone()));
    keys.zip(values)
        .map(|(key, value)| value.map(|v| (key, v)))
        .collect()
}

/// `expr` with each column of `constants` replaced by its value.
fn put_in(expr: Expr, constants: &HashMap<ColumnKey, ScalarValue>) -> Result<Expr> {
    expr.transform(|e| {
        let Expr::Column(Column { relation, name, .. }) = &e else {
            return Ok(Transformed::no(e));
        };
        match constants.get(&(relation.clone(), name.clone())) {
            Some(value) => Ok(Transformed::yes(Expr::Literal(value.clone(), None))),
            None => Ok(Transformed::no(e)),
        }
    })
    .map(|t| t.data)
}

impl OptimizerRule for ConstantRowAsColumns {
    fn name(&self) -> &str {
        "constant_row_as_columns"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Join(join) = &plan else {
            return Ok(Transformed::no(plan));
        };
        if join.join_type != JoinType::Inner || !join.on.is_empty() {
            return Ok(Transformed::no(plan));
        }
        let (other, constants) = match (constant_row(&join.right), constant_row(&join.left)) {
            (Some(constants), _) => (&join.left, constants),
            (None, Some(constants)) => (&join.right, constants),
            (None, None) => return Ok(Transformed::no(plan)),
        };
        let mut input = Arc::clone(other);
        if let Some(condition) = &join.filter {
            let condition = put_in(condition.clone(), &constants)?;
            input = Arc::new(LogicalPlan::Filter(Filter::try_new(condition, input)?));
        }
        let columns = join.schema.iter().map(|(q, f)| {
            let key = (q.cloned(), f.name().clone());
            match constants.get(&key) {
                Some(value) => Expr::Literal(value.clone(), None).alias_qualified(key.0, key.1),
                None => Expr::Column(Column::new(key.0, key.1)),
            }
        });
        let projection = Projection::try_new(columns.collect(), input)?;
        Ok(Transformed::yes(LogicalPlan::Projection(projection)))
    }
}

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

    /// A session of `state` (DataFusion's defaults and a rule), with `t` holding x = 0..1000.
    fn session_with_t(state: SessionStateBuilder) -> SessionContext {
        let ctx = SessionContext::new_with_state(state.build());
        let many = Int64Array::from_iter_values(0..1000);
        let batch = RecordBatch::try_from_iter([("x", Arc::new(many) as _)]).unwrap();
        ctx.register_batch("t", batch).unwrap();
        ctx
    }

    /// A session with the logical rule, and `t`.
    fn session_with_constant_rows() -> SessionContext {
        let state = SessionStateBuilder::new().with_default_features();
        session_with_t(state.with_optimizer_rule(Arc::new(ConstantRowAsColumns)))
    }

    async fn plan_and_rows(ctx: &SessionContext, sql: &str) -> (String, String) {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let text = displayable(plan.as_ref()).indent(true).to_string();
        let batches = df.collect().await.unwrap();
        let rows = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        (text, rows)
    }

    #[tokio::test]
    async fn a_row_of_constants_becomes_a_filter_and_columns() {
        let ctx = session_with_constant_rows();
        // The constants on either side, with and without a condition on them.
        let left = "WITH params AS (SELECT CAST(5 AS BIGINT) AS k, 'on' AS label) \
                    SELECT t.x, p.k, p.label FROM params p CROSS JOIN t \
                    WHERE t.x <= p.k AND t.x % 2 = 1 ORDER BY t.x";
        let (text, rows) = plan_and_rows(&ctx, left).await;
        assert!(!text.contains("Join"), "{text}");
        assert_eq!(
            rows,
            "+---+---+-------+\n| x | k | label |\n+---+---+-------+\n\
             | 1 | 5 | on    |\n| 3 | 5 | on    |\n| 5 | 5 | on    |\n+---+---+-------+"
        );
        let right = "SELECT u.days, t.x FROM t CROSS JOIN (SELECT 7 AS days) u \
                     ORDER BY t.x DESC LIMIT 2";
        let (text, rows) = plan_and_rows(&ctx, right).await;
        assert!(!text.contains("Join"), "{text}");
        assert_eq!(
            rows,
            "+------+-----+\n| days | x   |\n+------+-----+\n| 7    | 999 |\n| 7    | 998 |\n+------+-----+"
        );
    }

    #[tokio::test]
    async fn a_computed_row_stays_a_join() {
        let ctx = session_with_constant_rows();
        let sql = "SELECT t.x, n.total FROM t CROSS JOIN (SELECT count(*) AS total FROM t) n \
                   WHERE t.x * 500 >= n.total ORDER BY t.x LIMIT 1";
        let (text, rows) = plan_and_rows(&ctx, sql).await;
        assert!(text.contains("Join"), "{text}");
        assert_eq!(
            rows,
            "+---+-------+\n| x | total |\n+---+-------+\n| 2 | 1000  |\n+---+-------+"
        );
    }

    #[tokio::test]
    async fn the_one_row_side_is_collected_and_the_rows_are_the_same() {
        let state = SessionStateBuilder::new().with_default_features();
        let ctx = session_with_t(state.with_physical_optimizer_rule(Arc::new(CollectTheSingleRow)));
        let sql =
            "SELECT t.x, u.days FROM t CROSS JOIN (SELECT 7 AS days) u ORDER BY t.x DESC LIMIT 2";
        let (text, rows) = plan_and_rows(&ctx, sql).await;
        // The join's first (collected) input is the one-row projection, the second the table.
        let join = text.find("CrossJoinExec").expect(&text);
        let (one_row, table) = (
            text[join..].find("days"),
            text[join..].find("DataSourceExec"),
        );
        assert!(one_row < table, "{text}");
        assert_eq!(
            rows,
            "+-----+------+\n| x   | days |\n+-----+------+\n| 999 | 7    |\n| 998 | 7    |\n+-----+------+"
        );
    }
}
