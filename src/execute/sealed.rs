//! An already-planned physical plan shown to an outer plan as a leaf, so the outer plan's optimizer
//! cannot rebuild (and so detach the metrics of) the nodes inside it, with a watch on each batch
//! it passes on: the job's result given to Delta's writer, a kept table's scan.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Statistics;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
    StatisticsArgs, StatisticsContext,
};

/// What a sealed plan does beside passing its inner plan's batches on.
pub trait Watch: std::fmt::Debug + Send + Sync + 'static {
    /// The node's name in plans.
    const NAME: &'static str;
    /// Whether the node reports its inner plan's statistics (else unknown ones).
    const STATISTICS: bool;
    /// What `explain` shows after the name.
    fn describe(&self, inner: &dyn ExecutionPlan) -> String;
    /// The function applied to each of `partition`'s batches, or to its error.
    fn partition(
        &self,
        partition: usize,
    ) -> impl FnMut(Result<RecordBatch>) -> Result<RecordBatch> + Send + 'static;
    /// What the inner plan's failure to start becomes.
    fn failed(&self, e: DataFusionError) -> DataFusionError {
        e
    }
    fn metrics(&self) -> Option<MetricsSet> {
        None
    }
}

/// `inner` as a leaf, watched by `watch`.
#[derive(Debug)]
pub struct Sealed<W> {
    pub inner: Arc<dyn ExecutionPlan>,
    pub watch: W,
}

impl<W: Watch> DisplayAs for Sealed<W> {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            W::NAME,
            self.watch.describe(self.inner.as_ref())
        )
    }
}

impl<W: Watch> ExecutionPlan for Sealed<W> {
    fn name(&self) -> &'static str {
        W::NAME
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        use futures::StreamExt;
        let stream = self
            .inner
            .execute(partition, context)
            .map_err(|e| self.watch.failed(e))?;
        let schema = stream.schema();
        let watched = stream.map(self.watch.partition(partition));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, watched)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        self.watch.metrics()
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        match W::STATISTICS {
            true => StatisticsContext::new().compute(self.inner.as_ref(), args),
            false => Ok(Arc::new(Statistics::new_unknown(&self.schema()))),
        }
    }
}
