//! `retention plan`: the jobs a selection would run, in order, or the graph in Graphviz DOT.

use clap::Args;

use crate::error::Result;
use crate::plan::workspace::Workspace;
use crate::values::{Selector, Trigger};

pub const EXAMPLES: &str = "Examples:\n  retention plan\n  retention plan +customer_summary\n  retention plan --dot | dot -Tsvg > dag.svg";

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Job selectors (as for `run`); none means all jobs.
    pub selectors: Vec<Selector>,
    /// Print the graph in Graphviz DOT.
    #[arg(long)]
    pub dot: bool,
}

pub async fn run(ws: &Workspace, args: PlanArgs) -> Result<()> {
    let selected = ws
        .select(&args.selectors, args.selectors.is_empty())
        .await?;
    if args.dot {
        print!("{}", ws.graph.to_dot(&selected));
    } else {
        print!("{}", ws.plan(&selected, Trigger::Manual)?.render());
    }
    Ok(())
}
