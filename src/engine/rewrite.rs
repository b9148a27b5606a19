//! Rewriting the expressions a plan node evaluates on its one input (a projection, aggregate,
//! window or sort), each keeping its name, and the optimizer rule that plans such expressions as
//! one of retention's functions (`utc_date`, `eager_case`).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, LogicalPlan, ScalarUDF};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

/// `plan` with `rewrite` applied bottom-up to every expression it evaluates on its input (whose
/// schema `rewrite` is given), the output names unchanged; other nodes are left as they are.
pub fn evaluated_expressions(
    plan: LogicalPlan,
    rewrite: impl Fn(Expr, &DFSchema) -> Result<Transformed<Expr>>,
) -> Result<Transformed<LogicalPlan>> {
    let evaluated_on_one_input = matches!(
        plan,
        LogicalPlan::Projection(_)
            | LogicalPlan::Aggregate(_)
            | LogicalPlan::Window(_)
            | LogicalPlan::Sort(_)
    );
    if !evaluated_on_one_input || plan.inputs().len() != 1 {
        return Ok(Transformed::no(plan));
    }
    let input = Arc::clone(plan.inputs()[0].schema());
    let names = NamePreserver::new(&plan);
    let rewritten = plan.map_expressions(|expr| {
        let name = names.save(&expr);
        let new = expr.transform_up(|e| rewrite(e, &input))?;
        Ok(new.update_data(|e| name.restore(e)))
    })?;
    if rewritten.transformed {
        rewritten.map_data(|p| p.recompute_schema())
    } else {
        Ok(rewritten)
    }
}

/// How a rule plans one expression as its function: the rewritten expression, or the same one.
pub type AsFunction = fn(Expr, &DFSchema, &Arc<ScalarUDF>) -> Result<Transformed<Expr>>;

/// A logical optimizer rule that plans expressions as one of retention's functions, in every node
/// `evaluated_expressions` rewrites.
#[derive(Debug)]
pub struct FunctionRule {
    name: &'static str,
    udf: Arc<ScalarUDF>,
    rewrite: AsFunction,
}

impl FunctionRule {
    pub fn new(name: &'static str, udf: ScalarUDF, rewrite: AsFunction) -> Self {
        FunctionRule {
            name,
            udf: Arc::new(udf),
            rewrite,
        }
    }
}

impl OptimizerRule for FunctionRule {
    fn name(&self) -> &str {
        self.name
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        evaluated_expressions(plan, |e, input| (self.rewrite)(e, input, &self.udf))
    }
}

/// A session with DataFusion's defaults, and with `rule` and its function when given: what the
/// rules' tests compare.
#[cfg(test)]
pub fn test_session(rule: Option<FunctionRule>) -> datafusion::prelude::SessionContext {
    use datafusion::execution::{FunctionRegistry, SessionStateBuilder};
    let mut state = SessionStateBuilder::new().with_default_features();
    let udf = rule.as_ref().map(|r| Arc::clone(&r.udf));
    if let Some(rule) = rule {
        state = state.with_optimizer_rule(Arc::new(rule));
    }
    let mut state = state.build();
    if let Some(udf) = udf {
        state.register_udf(udf).expect("a new function");
    }
    datafusion::prelude::SessionContext::new_with_state(state)
}
