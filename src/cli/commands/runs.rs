//! `retention runs`: the run ledger, newest first.

use clap::Args;
use datafusion::prelude::{col, lit};

use crate::cli::output::{OutputFormat, print_batches};
use crate::error::Result;
use crate::plan::workspace::Workspace;
use crate::store::system::RUNS_TABLE;

pub const EXAMPLES: &str =
    "Examples:\n  retention runs\n  retention runs --job daily_orders --limit 5";

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only this job.
    #[arg(long)]
    pub job: Option<String>,
    /// At most this many rows.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

pub async fn run(ws: &Workspace, args: RunsArgs) -> Result<()> {
    let ctx = ws.query_session().await?;
    if !ctx.table_exist(RUNS_TABLE)? {
        println!("no runs recorded yet");
        return Ok(());
    }
    let mut df = ctx.table(RUNS_TABLE).await?;
    if let Some(j) = args.job {
        df = df.filter(col("job").eq(lit(j)))?;
    }
    let df = df
        .sort(vec![
            col("started_at").sort(false, true),
            col("job").sort(true, true),
        ])?
        .limit(0, Some(args.limit))?;
    print_batches(&df.collect().await?, args.format)
}
