//! Publishing a job's planned result: its distinct partitions, the physical plan shown to Delta's
//! writer as a sealed leaf (execute/sealed.rs: its scan metrics survive the write), the rows and
//! bytes the scans read, the bytes its operators spilled, and its rows put in the job's file order.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::expressions::Column as ColumnExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

use crate::execute::kept::Capture;
use crate::execute::sealed::{Sealed, Watch};
use crate::project::spec::FileLayout;

/// Distinct values of the partition columns in the job's result.
pub async fn distinct_partitions(
    df: datafusion::prelude::DataFrame,
    columns: &[String],
) -> datafusion::error::Result<Vec<Vec<ScalarValue>>> {
    let cols: Vec<&str> = columns.iter().map(String::as_str).collect();
    let batches = df.select_columns(&cols)?.distinct()?.collect().await?;
    let mut out = Vec::new();
    for b in batches {
        for row in 0..b.num_rows() {
            let mut values = Vec::new();
            for c in 0..b.num_columns() {
                values.push(ScalarValue::try_from_array(b.column(c), row)?);
            }
            out.push(values);
        }
    }
    out.sort_by_key(|a| format!("{a:?}"));
    Ok(out)
}

/// `plan`'s rows in `layout.sort_by` order (ascending, nulls last), merged into one stream; `plan`
/// itself without a `sort_by`. Sorted here, inside the sealed plan Delta's writer reads, because
/// the writer's optimizer drops a sort that none of its own nodes asks for.
pub fn in_file_order(
    plan: Arc<dyn ExecutionPlan>,
    layout: &FileLayout,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    use datafusion::arrow::compute::SortOptions;
    use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
    use datafusion::physical_plan::sorts::sort::SortExec;
    use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
    let schema = plan.schema();
    let ascending = SortOptions {
        descending: false,
        nulls_first: false,
    };
    let keys = layout.sort_by.iter().map(|c| {
        let column = datafusion::physical_expr::expressions::col(c, &schema)?;
        Ok(PhysicalSortExpr::new(column, ascending))
    });
    let Some(order) = LexOrdering::new(keys.collect::<datafusion::error::Result<Vec<_>>>()?) else {
        return Ok(plan);
    };
    let sorted = SortExec::new(order.clone(), plan).with_preserve_partitioning(true);
    Ok(Arc::new(SortPreservingMergeExec::new(
        order,
        Arc::new(sorted),
    )))
}

/// Rows and bytes the leaf scans of an executed plan read.
pub fn leaf_metrics(plan: &Arc<dyn ExecutionPlan>) -> (i64, i64) {
    let children = plan.children();
    if children.is_empty() {
        let m = plan.metrics();
        let rows = m.as_ref().and_then(|m| m.output_rows()).unwrap_or(0) as i64;
        let bytes = m
            .as_ref()
            .and_then(|m| m.sum_by_name("bytes_scanned"))
            .map(|v| v.as_usize() as i64)
            .unwrap_or(0);
        return (rows, bytes);
    }
    children.iter().fold((0, 0), |(r, b), c| {
        let (cr, cb) = leaf_metrics(c);
        (r + cr, b + cb)
    })
}

/// The first error the job's query raised while Delta's writer streamed it, if any: what a failed
/// publish reports instead of the writer's wrapping of it.
#[derive(Debug, Clone, Default)]
pub struct QueryFailure(Arc<std::sync::Mutex<Option<Arc<datafusion::error::DataFusionError>>>>);

impl QueryFailure {
    /// The query's error, when the query failed.
    pub fn take(&self) -> Option<datafusion::error::DataFusionError> {
        let first = self.0.lock().expect("not poisoned").take()?;
        Some(datafusion::error::DataFusionError::Shared(first))
    }

    /// `e`, kept when it is the first, and returned shared.
    fn record(&self, e: datafusion::error::DataFusionError) -> datafusion::error::DataFusionError {
        let shared = Arc::new(e);
        self.0
            .lock()
            .expect("not poisoned")
            .get_or_insert_with(|| shared.clone());
        datafusion::error::DataFusionError::Shared(shared)
    }
}

/// A table whose scan is an already-planned physical plan: lets Delta's writer stream the job's
/// result while we keep the plan to read its metrics afterwards, and the query's own error.
#[derive(Debug)]
pub struct PreparedPlan {
    pub plan: Arc<dyn ExecutionPlan>,
    pub failure: QueryFailure,
    /// Sees every batch written, for the run's later readers of the table.
    pub capture: Option<Capture>,
}

#[async_trait]
impl TableProvider for PreparedPlan {
    fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let schema = self.plan.schema();
        match projection {
            Some(p) if *p != (0..schema.fields().len()).collect::<Vec<_>>() => {
                let exprs: Vec<ProjectionExpr> = p
                    .iter()
                    .map(|&i| ProjectionExpr {
                        expr: Arc::new(ColumnExpr::new(schema.field(i).name(), i)),
                        alias: schema.field(i).name().clone(),
                    })
                    .collect();
                Ok(Arc::new(ProjectionExec::try_new(
                    exprs,
                    Arc::new(self.sealed()),
                )?))
            }
            _ => Ok(Arc::new(self.sealed())),
        }
    }
}

impl PreparedPlan {
    fn sealed(&self) -> Sealed<Written> {
        Sealed {
            inner: self.plan.clone(),
            watch: Written {
                failure: self.failure.clone(),
                capture: self.capture.clone(),
            },
        }
    }
}

/// The job's result as Delta's writer reads it: the query's first error is recorded, and each
/// batch is captured for the run's later readers when the table is kept.
#[derive(Debug)]
struct Written {
    failure: QueryFailure,
    capture: Option<Capture>,
}

impl Watch for Written {
    const NAME: &'static str = "SealedPlan";
    const STATISTICS: bool = false;

    fn describe(&self, inner: &dyn ExecutionPlan) -> String {
        inner.name().to_string()
    }

    fn partition(
        &self,
        _partition: usize,
    ) -> impl FnMut(datafusion::error::Result<RecordBatch>) -> datafusion::error::Result<RecordBatch>
    + Send
    + 'static {
        let (failure, capture) = (self.failure.clone(), self.capture.clone());
        move |batch| {
            if let (Ok(b), Some(capture)) = (&batch, &capture) {
                capture.push(b);
            }
            batch.map_err(|e| failure.record(e))
        }
    }

    fn failed(&self, e: datafusion::error::DataFusionError) -> datafusion::error::DataFusionError {
        self.failure.record(e)
    }
}
