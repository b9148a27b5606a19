//! `retention status`: per job, its last run, its next slot, whether it is late, and the freshness
//! of the sources it reads.

use clap::Args;

use crate::cli::output::{OutputFormat, print_batches};
use crate::error::Result;
use crate::plan::workspace::Workspace;

pub const EXAMPLES: &str = "Examples:\n  retention status\n  retention status --format json";

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

pub async fn run(ws: &Workspace, args: StatusArgs) -> Result<()> {
    let batch = crate::serve::status::status(ws, ws.engine.clock.now()).await?;
    print_batches(&[batch], args.format)
}
