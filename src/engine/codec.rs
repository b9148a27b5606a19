//! How retention's own physical operators travel to a cluster's workers: each is sent as the
//! DataFusion operator it replaces (which DataFusion's codec knows), and the worker rebuilds the
//! same operator from it. A `SortedWindowExec` travels as its `BoundedWindowAggExec`, a
//! `LookupJoinExec` as its `HashJoinExec`.

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::windows::BoundedWindowAggExec;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::PhysicalPlanNode;
use prost::Message;

use crate::engine::lookup_join::LookupJoinExec;
use crate::engine::stand_in::{self, recompute};
use crate::engine::window::SortedWindowExec;

/// The codec for the operators retention's optimizer rules put in a plan.
#[derive(Debug, Default)]
pub struct RetentionCodec;

impl PhysicalExtensionCodec for RetentionCodec {
    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let replaced: Arc<dyn ExecutionPlan> =
            if let Some(window) = node.downcast_ref::<SortedWindowExec>() {
                window.replaced().clone()
            } else if let Some(join) = node.downcast_ref::<LookupJoinExec>() {
                join.replaced().clone()
            } else {
                return Err(DataFusionError::NotImplemented(format!(
                    "no codec for {}",
                    node.name()
                )));
            };
        // The inputs travel as the node's children: only their schemas are kept here.
        let stand_ins = replaced
            .children()
            .into_iter()
            .map(|child| Arc::new(EmptyExec::new(child.schema())) as Arc<dyn ExecutionPlan>)
            .collect();
        let alone = replaced.replace_children(stand_ins, recompute())?;
        proto_converter
            .execution_plan_to_proto(&alone, self)?
            .encode(buf)
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node =
            PhysicalPlanNode::decode(buf).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let alone = proto_converter
            .proto_to_execution_plan(&node, &PhysicalPlanDecodeContext::new(ctx, self))?;
        if alone.children().len() != inputs.len() {
            return Err(DataFusionError::Internal(format!(
                "{} has {} inputs, got {}",
                alone.name(),
                alone.children().len(),
                inputs.len()
            )));
        }
        if alone.is::<HashJoinExec>() {
            // A join whose build side the worker sees behind a network boundary, where its keys
            // are not known to be distinct, stays DataFusion's: the same rows.
            return stand_in::over_children(
                alone,
                inputs.to_vec(),
                recompute(),
                LookupJoinExec::replacing,
            );
        }
        let replaced = alone.replace_children(inputs.to_vec(), recompute())?;
        if let Some(window) = replaced.downcast_ref::<BoundedWindowAggExec>() {
            return SortedWindowExec::try_new(Arc::new(window.clone()))
                .map(|exec| Arc::new(exec) as Arc<dyn ExecutionPlan>)
                .ok_or_else(|| {
                    DataFusionError::Internal(
                        "a SortedWindowExec sent to this worker could not be rebuilt".into(),
                    )
                });
        }
        Err(DataFusionError::Internal(format!(
            "{} is not an operator retention sends",
            replaced.name()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::{SessionConfig, SessionContext};
    use datafusion_proto::bytes::{
        physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes,
        physical_plan_to_bytes_with_extension_codec,
    };

    async fn rows(plan: Arc<dyn ExecutionPlan>, ctx: &SessionContext) -> Vec<String> {
        let batches = collect(plan, ctx.task_ctx()).await.unwrap();
        let text = pretty_format_batches(&batches).unwrap().to_string();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    }

    /// Two partitions, with `rule` after DataFusion's physical optimizer rules.
    fn session_with(
        rule: Arc<dyn datafusion::physical_optimizer::PhysicalOptimizerRule + Send + Sync>,
    ) -> SessionContext {
        let state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(2))
            .with_default_features()
            .with_physical_optimizer_rule(rule)
            .build();
        SessionContext::new_with_state(state)
    }

    async fn planned(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
        let frame = ctx.sql(sql).await.unwrap();
        frame.create_physical_plan().await.unwrap()
    }

    fn shown(plan: &Arc<dyn ExecutionPlan>) -> String {
        displayable(plan.as_ref()).indent(false).to_string()
    }

    /// `plan` sent with our codec (DataFusion's own does not know retention's operators) and
    /// rebuilt: the same plan, and its rows, which are the original's.
    async fn round_trip(plan: Arc<dyn ExecutionPlan>, ctx: &SessionContext) -> Vec<String> {
        assert!(physical_plan_to_bytes(plan.clone()).is_err());
        let bytes =
            physical_plan_to_bytes_with_extension_codec(plan.clone(), &RetentionCodec).unwrap();
        let decoded =
            physical_plan_from_bytes_with_extension_codec(&bytes, &ctx.task_ctx(), &RetentionCodec)
                .unwrap();
        assert_eq!(shown(&decoded), shown(&plan));
        let got = rows(decoded, ctx).await;
        assert_eq!(got, rows(plan, ctx).await);
        got
    }

    #[tokio::test]
    async fn a_sorted_window_travels_and_computes_the_same_rows() {
        let ctx = session_with(Arc::new(crate::engine::window::SortedRunWindows));
        ctx.sql("CREATE TABLE t (customer_id BIGINT, ts BIGINT) AS VALUES (1, 10), (2, 5), (1, 30), (1, 20), (2, 7), (3, 1)")
            .await
            .unwrap();
        let sql = "SELECT customer_id, ts, \
                   row_number() OVER (PARTITION BY customer_id ORDER BY ts) AS n, \
                   lag(ts, 1, -1) OVER (PARTITION BY customer_id ORDER BY ts) AS prev \
                   FROM t";
        let plan = planned(&ctx, sql).await;
        assert!(
            shown(&plan).contains("SortedWindowExec"),
            "{}",
            shown(&plan)
        );
        let got = round_trip(plan, &ctx).await;
        for row in [
            "| 1           | 30 | 3 | 20   |",
            "| 2           | 5  | 1 | -1   |",
            "| 3           | 1  | 1 | -1   |",
        ] {
            assert!(got.iter().any(|l| l == row), "{row} not in {got:#?}");
        }
    }

    #[tokio::test]
    async fn a_lookup_join_travels_and_computes_the_same_rows() {
        let ctx = session_with(Arc::new(crate::engine::lookup_join::UniqueKeyJoins));
        for table in [
            "CREATE TABLE orders (order_id BIGINT, gmv INT) AS VALUES (1, 10), (2, 20), (3, 30)",
            "CREATE TABLE refunds (order_id BIGINT, amount INT) AS VALUES (1, 4), (1, 5), (3, 7)",
        ] {
            ctx.sql(table).await.unwrap().collect().await.unwrap();
        }
        let sql = "WITH r AS (SELECT order_id, sum(amount) AS refunded FROM refunds GROUP BY order_id) \
                   SELECT o.order_id, o.gmv, r.refunded FROM orders o LEFT JOIN r ON r.order_id = o.order_id";
        let plan = planned(&ctx, sql).await;
        assert!(shown(&plan).contains("LookupJoinExec"), "{}", shown(&plan));
        let got = round_trip(plan, &ctx).await;
        for row in [
            "| 1        | 10  | 9        |",
            "| 2        | 20  |          |",
            "| 3        | 30  | 7        |",
        ] {
            assert!(got.iter().any(|l| l == row), "{row} not in {got:#?}");
        }
    }
}
