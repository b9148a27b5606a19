//! `retention vacuum`: delete data files no longer referenced inside the history window.

use clap::Args;

use crate::error::{Error, Result};
use crate::plan::workspace::Workspace;
use crate::store::delta;
use crate::store::system::RUNS_TABLE;

pub const EXAMPLES: &str =
    "Examples:\n  retention vacuum --dry-run\n  retention vacuum daily_orders --retention-hours 24";

#[derive(Debug, Args)]
pub struct VacuumArgs {
    /// Tables (default: every job's table and _runs).
    pub tables: Vec<String>,
    /// Keep files replaced within this many hours (default: history.deleted_file_retention_hours).
    #[arg(long)]
    pub retention_hours: Option<u32>,
    /// List what would be deleted without deleting.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(ws: &Workspace, args: VacuumArgs) -> Result<()> {
    let names: Vec<String> = if args.tables.is_empty() {
        let mut v: Vec<String> = ws
            .graph
            .nodes
            .iter()
            .map(|n| n.spec.table.clone())
            .collect();
        v.push(RUNS_TABLE.into());
        v
    } else {
        args.tables
    };
    let hours = args
        .retention_hours
        .unwrap_or(ws.engine.project.deleted_file_retention_hours);
    for name in names {
        let url = ws.table_url(&name)?;
        let Some(table) = delta::open(&ws.engine.stores, &url).await? else {
            println!("{name}: not published, nothing to vacuum");
            continue;
        };
        let (_, metrics) = table
            .vacuum()
            .with_retention_period(chrono::Duration::hours(i64::from(hours)))
            .with_enforce_retention_duration(false)
            .with_dry_run(args.dry_run)
            .await
            .map_err(|e| Error::storage(&url, e))?;
        println!(
            "{name}: {} {} file(s)",
            if args.dry_run {
                "would delete"
            } else {
                "deleted"
            },
            metrics.files_deleted.len()
        );
    }
    Ok(())
}
