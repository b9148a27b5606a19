//! Aggregates DataFusion 55 computes slowly, planned in an equivalent form it computes fast:
//! `count(DISTINCT x)` over a date, time or timestamp counts the distinct integers behind it.
//!
//! DataFusion keeps one row-by-row accumulator (a hash set) per group for `count(DISTINCT x)`
//! unless `x` is an integer, when a single accumulator serves every group. `count(DISTINCT
//! order_date)` per customer was 1.3 s of customer_summary's 4.8 s of compute at 1M orders. A
//! date is an `Int32` of days and a timestamp an `Int64` of its unit, so distinct values and
//! nulls are the same after the cast; the column keeps its name.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result};
use datafusion::functions_aggregate::count::Count;
use datafusion::logical_expr::{Aggregate, Expr, ExprSchemable, LogicalPlan, cast};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The logical optimizer rule.
#[derive(Debug, Default)]
pub struct DistinctCountOnIntegers;

impl OptimizerRule for DistinctCountOnIntegers {
    fn name(&self) -> &str {
        "distinct_count_on_integers"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = plan else {
            return Ok(Transformed::no(plan));
        };
        let schema = aggregate.input.schema().clone();
        let rewritten = aggregate
            .aggr_expr
            .iter()
            .map(|e| on_integers(e, &schema))
            .collect::<Result<Vec<_>>>()?;
        if rewritten.iter().all(Option::is_none) {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        }
        let aggr_expr = rewritten
            .into_iter()
            .zip(&aggregate.aggr_expr)
            .map(|(new, old)| new.unwrap_or_else(|| old.clone()))
            .collect();
        Aggregate::try_new(
            Arc::clone(&aggregate.input),
            aggregate.group_expr.clone(),
            aggr_expr,
        )
        .map(|a| Transformed::yes(LogicalPlan::Aggregate(a)))
    }
}

/// `count(DISTINCT x)` over the integers behind a temporal `x`, under the expression's own name;
/// `None` for any other aggregate.
fn on_integers(expr: &Expr, schema: &DFSchema) -> Result<Option<Expr>> {
    let (inner, alias) = match expr {
        Expr::Alias(a) => (a.expr.as_ref(), Some(a)),
        e => (e, None),
    };
    let Expr::AggregateFunction(f) = inner else {
        return Ok(None);
    };
    let params = &f.params;
    if !f.func.inner().is::<Count>() || !params.distinct || params.args.len() != 1 {
        return Ok(None);
    }
    let integer = match params.args[0].get_type(schema)? {
        DataType::Date32 | DataType::Time32(_) => DataType::Int32,
        DataType::Date64
        | DataType::Time64(_)
        | DataType::Timestamp(..)
        | DataType::Duration(_) => DataType::Int64,
        _ => return Ok(None),
    };
    let mut counted = f.clone();
    counted.params.args = vec![cast(params.args[0].clone(), integer)];
    let counted = Expr::AggregateFunction(counted);
    Ok(Some(match alias {
        Some(a) => counted.alias_qualified(a.relation.clone(), a.name.clone()),
        None => counted.alias(inner.schema_name().to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    fn session(with_rule: bool) -> SessionContext {
        let mut state = SessionStateBuilder::new().with_default_features();
        if with_rule {
            state = state.with_optimizer_rule(Arc::new(DistinctCountOnIntegers));
        }
        SessionContext::new_with_state(state.build())
    }

    /// Three customers' order days and times, with repeats and nulls.
    const ORDERS: &str = "SELECT * FROM (VALUES
        (1, DATE '2026-01-01', TIMESTAMP '2026-01-01 10:00:00', true),
        (1, DATE '2026-01-01', TIMESTAMP '2026-01-01 11:00:00', false),
        (1, DATE '2026-01-03', TIMESTAMP '2026-01-03 10:00:00', true),
        (2, NULL,              NULL,                            true),
        (2, DATE '2026-02-01', TIMESTAMP '2026-02-01 00:00:00', true),
        (3, NULL,              NULL,                            false)
      ) AS t(customer_id, order_date, order_ts, completed)";

    async fn rows_and_plan(ctx: &SessionContext, sql: &str) -> (String, String) {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.logical_plan().clone();
        let optimized = ctx.state().optimize(&plan).unwrap();
        let batches = df.collect().await.unwrap();
        (
            pretty_format_batches(&batches).unwrap().to_string(),
            optimized.display_indent().to_string(),
        )
    }

    #[tokio::test]
    async fn distinct_days_and_times_are_counted_as_integers_with_the_same_rows_and_names() {
        let sql = format!(
            "SELECT customer_id, count(DISTINCT order_date), count(DISTINCT order_ts) AS times,
                    count(DISTINCT order_date) FILTER (WHERE completed) AS completed_days,
                    count(*) AS orders, min(order_date) AS first_day
             FROM ({ORDERS}) GROUP BY customer_id ORDER BY customer_id"
        );
        let (rows, plan) = rows_and_plan(&session(true), &sql).await;
        assert_eq!(
            rows,
            "+-------------+------------------------------+-------+----------------+--------+------------+
| customer_id | count(DISTINCT t.order_date) | times | completed_days | orders | first_day  |
+-------------+------------------------------+-------+----------------+--------+------------+
| 1           | 2                            | 3     | 2              | 3      | 2026-01-01 |
| 2           | 1                            | 1     | 1              | 2      | 2026-02-01 |
| 3           | 0                            | 0     | 0              | 1      |            |
+-------------+------------------------------+-------+----------------+--------+------------+"
        );
        assert!(
            plan.contains("CAST(t.order_date AS Int32)")
                && plan.contains("count(DISTINCT CAST(t.order_ts AS Int64))"),
            "{plan}"
        );
        assert_eq!(rows, rows_and_plan(&session(false), &sql).await.0);
    }

    #[tokio::test]
    async fn other_counts_are_left_alone() {
        let sql = format!(
            "SELECT count(DISTINCT customer_id) AS customers, count(order_date) AS days,
                    count(DISTINCT CAST(order_date AS VARCHAR)) AS texts
             FROM ({ORDERS})"
        );
        let (rows, plan) = rows_and_plan(&session(true), &sql).await;
        assert!(!plan.contains("AS Int32)"), "{plan}");
        assert_eq!(rows, rows_and_plan(&session(false), &sql).await.0);
    }
}
