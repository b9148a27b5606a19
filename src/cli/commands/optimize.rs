//! `retention optimize`: rewrite curated tables' files for their readers (small files compacted,
//! or Z-ordered by `[output] zorder_by`) without changing a row; `--dry-run` prints the plan.

use std::num::NonZeroU64;

use clap::Args;

use crate::error::{Error, Result};
use crate::plan::workspace::Workspace;
use crate::project::spec::JobSpec;
use crate::store::delta;
use crate::store::layout::{self, DEFAULT_TARGET_SIZE, Layout, Rewrite};

pub const EXAMPLES: &str = "Examples:\n  retention optimize --dry-run\n  retention optimize order_experience\n  retention optimize order_experience --zorder customer_id --target-size 256MiB";

#[derive(Debug, Args)]
pub struct OptimizeArgs {
    /// Tables (default: every job's table).
    pub tables: Vec<String>,
    /// Z-order by these columns instead of the spec's `[output] zorder_by` (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub zorder: Option<Vec<String>>,
    /// Compact files up to this size (default 100MiB, Delta's own).
    #[arg(long, value_parser = crate::values::parse_size)]
    pub target_size: Option<u64>,
    /// Print what would be rewritten without writing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(ws: &Workspace, args: OptimizeArgs) -> Result<()> {
    let target_size =
        NonZeroU64::new(args.target_size.unwrap_or(DEFAULT_TARGET_SIZE)).ok_or_else(|| {
            Error::Argument {
                flag: "--target-size",
                key: "0".into(),
                message: "must be more than 0 bytes".into(),
            }
        })?;
    for spec in tables(ws, &args.tables)? {
        let table = spec.table.as_str();
        let layout = Layout {
            zorder_by: args.zorder.clone().unwrap_or(spec.zorder_by.clone()),
            target_size,
            files: spec.file_layout.clone(),
        };
        let url = ws.table_url(table)?;
        let Some(delta_table) = delta::open(&ws.engine.stores, &url).await? else {
            println!("{table}: not published, nothing to optimize");
            continue;
        };
        let how = match layout.zorder_by.as_slice() {
            [] => "compact".to_string(),
            cols => format!("z-order by {}", cols.join(", ")),
        };
        if args.dry_run {
            let planned = layout::plan(&delta_table, &layout).await?;
            println!("{table} ({how}): would rewrite {}", describe(&planned));
            continue;
        }
        let done = layout::optimize(delta_table, &url, &layout).await?;
        tracing::info!(
            table,
            files_removed = done.files_removed,
            files_added = done.files_added,
            "optimized"
        );
        println!(
            "{table} ({how}): rewrote {} into {} file(s)",
            describe(&done),
            done.files_added
        );
    }
    Ok(())
}

/// The specs of the jobs writing the tables to optimize (every job's when none is named); a
/// table no job writes is refused.
fn tables<'a>(ws: &'a Workspace, names: &[String]) -> Result<Vec<&'a JobSpec>> {
    let all: Vec<&JobSpec> = ws.graph.nodes.iter().map(|n| &n.spec).collect();
    if names.is_empty() {
        return Ok(all);
    }
    names
        .iter()
        .map(|name| {
            all.iter()
                .find(|s| &s.table == name)
                .copied()
                .ok_or_else(|| Error::Argument {
                    flag: "TABLE",
                    key: name.clone(),
                    message: format!(
                        "no job writes this table (tables: {})",
                        all.iter()
                            .map(|s| s.table.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })
        })
        .collect()
}

fn describe(r: &Rewrite) -> String {
    format!(
        "{} of {} file(s) ({} MiB) in {} partition(s)",
        r.files_removed,
        r.files_before,
        crate::cli::output::mib(r.bytes_removed),
        r.partitions
    )
}
