//! A job's executed plan with every operator's metrics (rows, time, memory, spills), as
//! `EXPLAIN ANALYZE` shows it, for the log at debug level: `RUST_LOG=retention::engine::profile=debug`.
//! Each materialized CTE's own query follows the plan that reads it, once.

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::display::DisplayableExecutionPlan;

use crate::engine::materialize::cte_query;

/// Log `plan`, executed, with its metrics, at debug level; nothing is formatted when that level
/// is off.
pub fn log_executed(job: &str, plan: &Arc<dyn ExecutionPlan>) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!(job, plan = %executed_plan(plan), "executed plan with metrics");
    }
}

/// The indented plan with its metrics, then each materialized CTE's query under its name.
pub fn executed_plan(plan: &Arc<dyn ExecutionPlan>) -> String {
    let mut text = String::new();
    let mut seen = HashSet::new();
    write_stage(&mut text, "job", plan, &mut seen);
    text
}

fn write_stage<'a>(
    text: &mut String,
    name: &str,
    plan: &'a Arc<dyn ExecutionPlan>,
    seen: &mut HashSet<&'a str>,
) {
    let shown = DisplayableExecutionPlan::with_metrics(plan.as_ref()).indent(true);
    let _ = write!(text, "\n{name}:\n{shown}");
    let mut ctes = Vec::new();
    collect_ctes(plan, &mut ctes);
    for (cte, query) in ctes {
        if seen.insert(cte) {
            write_stage(text, &format!("materialized CTE {cte}"), query, seen);
        }
    }
}

/// The materialized CTEs `plan` reads, in the order of a depth-first walk.
fn collect_ctes<'a>(
    plan: &'a Arc<dyn ExecutionPlan>,
    out: &mut Vec<(&'a str, &'a Arc<dyn ExecutionPlan>)>,
) {
    if let Some(found) = cte_query(plan.as_ref()) {
        out.push(found);
    }
    for child in plan.children() {
        collect_ctes(child, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn the_executed_plan_shows_metrics_and_each_materialized_ctes_query_once() {
        let ctx = SessionContext::new();
        let sql = "WITH m AS MATERIALIZED (SELECT column1 AS x FROM (VALUES (1), (2), (3)))\n\
                   SELECT count(*) FROM m a JOIN m b ON a.x = b.x";
        let physical = crate::engine::materialize::tests::physical_plan(&ctx, sql).await;
        datafusion::physical_plan::collect(physical.clone(), ctx.task_ctx())
            .await
            .unwrap();
        let text = executed_plan(&physical);
        assert_eq!(text.matches("materialized CTE m:").count(), 1, "{text}");
        assert_eq!(text.matches("MaterializedCteExec: m").count(), 2, "{text}");
        // The CTE's query ran once over the three VALUES rows.
        let cte = text.split("materialized CTE m:").nth(1).unwrap();
        assert!(cte.contains("output_rows=3"), "{cte}");
    }
}
