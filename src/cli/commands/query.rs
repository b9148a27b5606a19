//! `retention query`: ad-hoc SQL over sources, curated tables and the system tables, read-only
//! unless `--allow-write` is given; `WITH x AS MATERIALIZED (...)` works as in a job's SQL.

use clap::Args;

use crate::cli::output::{OutputFormat, print_batches};
use crate::engine::guard::{Access, plan_user_sql_materialized};
use crate::error::Result;
use crate::plan::workspace::Workspace;

pub const EXAMPLES: &str = "Examples:\n  retention query \"select * from daily_orders limit 5\"\n  retention query --format csv \"select count(*) from orders\"";

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The SQL text (may start with a `--` comment).
    #[arg(allow_hyphen_values = true)]
    pub sql: String,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// Allow statements that write or change the session (COPY, CREATE, INSERT, SET, ...).
    #[arg(long)]
    pub allow_write: bool,
}

pub async fn run(ws: &Workspace, args: QueryArgs) -> Result<()> {
    let access = if args.allow_write {
        Access::ReadWrite
    } else {
        Access::ReadOnly
    };
    let ctx = ws.query_session().await?;
    let df = plan_user_sql_materialized(&ctx, &args.sql, access).await?;
    print_batches(&df.collect().await?, args.format)
}
