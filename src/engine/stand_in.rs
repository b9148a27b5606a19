//! Retention's operators that stand in for a DataFusion operator they keep (`SortedWindowExec`,
//! `LookupJoinExec`): an optimizer rule's pass that puts them in, and how one is rebuilt over new
//! children, by the planner or on a worker.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};

/// Children replaced with the plan's properties computed again (`with_new_children`'s way).
pub fn recompute() -> ReplaceChildrenOptions {
    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute)
}

/// `replaced` (the DataFusion operator) over `children`, stood in for again by `stand_in` when it
/// still qualifies, else left as DataFusion's.
pub fn over_children<T: ExecutionPlan + 'static>(
    replaced: Arc<dyn ExecutionPlan>,
    children: Vec<Arc<dyn ExecutionPlan>>,
    options: ReplaceChildrenOptions,
    stand_in: impl FnOnce(&Arc<dyn ExecutionPlan>) -> Option<T>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let replaced = replaced.replace_children(children, options)?;
    Ok(match stand_in(&replaced) {
        Some(exec) => Arc::new(exec),
        None => replaced,
    })
}

/// `plan` with every operator `stand_in` qualifies replaced by it, leaves first (an optimizer
/// rule's pass).
pub fn everywhere<T: ExecutionPlan + 'static>(
    plan: Arc<dyn ExecutionPlan>,
    stand_in: impl Fn(&Arc<dyn ExecutionPlan>) -> Option<T>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| match stand_in(&node) {
        Some(exec) => Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>)),
        None => Ok(Transformed::no(node)),
    })
    .map(|t| t.data)
}
