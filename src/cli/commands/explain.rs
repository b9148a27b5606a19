//! `retention explain`: DataFusion's logical and physical plan of a job.

use clap::Args;

use crate::cli::output::{OutputFormat, print_batches};
use crate::error::{Error, Result};
use crate::plan::workspace::Workspace;

pub const EXAMPLES: &str = "Examples:\n  retention explain daily_orders";

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Job name.
    pub job: String,
}

pub async fn run(ws: &Workspace, args: ExplainArgs) -> Result<()> {
    let node = ws.graph.node(&args.job).ok_or(Error::Selector {
        selector: args.job.clone(),
    })?;
    // Jobs not published yet are planned from their validated output schemas.
    let schemas = ws.validate().await?;
    let ctx = ws.query_session_with(&schemas).await?;
    let as_of = Some(ws.engine.today());
    let df = ws.engine.plan_job(&ctx, &node.spec, as_of, None).await?;
    let batches = df.explain(false, false)?.collect().await?;
    print_batches(&batches, OutputFormat::Table)
}
