//! `retention run`: the selected jobs in dependency order, or their plan with `--dry-run`.

use std::sync::Arc;

use clap::Args;

use crate::cli::output::print_summary;
use crate::error::Result;
use crate::execute::execute;
use crate::plan::workspace::Workspace;
use crate::values::{AsOf, ParamAssignment, Selector, Trigger};

pub const EXAMPLES: &str = "Examples:\n  retention run --all\n  retention run daily_orders\n  retention run +customer_summary     # with everything upstream\n  retention run order_experience+     # with everything downstream\n  retention run tag:finance --jobs 4\n  retention run --all --dry-run\n  retention run daily_orders --param from_day=2026-10-01   # backfill from a day\n  retention run +customer_churn --as-of 2026-03-31          # the marts as of a past day";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Job selectors: NAME, +NAME (with upstream), NAME+ (with downstream), tag:TAG,
    /// state:modified (changed spec or SQL since the last success; state:modified+ with downstream).
    pub selectors: Vec<Selector>,
    /// Run every job.
    #[arg(long)]
    pub all: bool,
    /// Jobs run at once (overrides engine.jobs).
    #[arg(long, short = 'j', env = "RETENTION_JOBS")]
    pub jobs: Option<usize>,
    /// Print the plan and exit without reading or writing data.
    #[arg(long)]
    pub dry_run: bool,
    /// Override a job parameter for this run (backfills): NAME=VALUE, repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<ParamAssignment>,
    /// The day every job is as of (`$as_of`): YYYY-MM-DD for a backfill, `latest` (the latest
    /// order day in the data) or `today`. Default: each job's own `as_of` (mostly `latest`).
    #[arg(long, value_name = "DAY")]
    pub as_of: Option<AsOf>,
    /// Incremental jobs whose SQL or spec changed go on from the intervals already done instead
    /// of rebuilding their tables.
    #[arg(long)]
    pub forward_only: bool,
}

pub async fn run(mut ws: Workspace, args: RunArgs) -> Result<()> {
    let before = ws.engine.stores.requests();
    let selected = ws.select(&args.selectors, args.all).await?;
    if !args.params.is_empty() {
        ws.override_params(&selected, &args.params)?;
    }
    let ws = Arc::new(ws);
    let mut plan = ws.plan_as_of(&selected, Trigger::Manual, args.as_of)?;
    plan.forward_only = args.forward_only;
    if args.dry_run {
        print!(
            "run {} would run {} job(s):\n{}",
            plan.run_id,
            plan.jobs.len(),
            plan.render()
        );
        return Ok(());
    }
    let report = execute(ws.clone(), &plan, ws.engine.project.jobs).await?;
    print_summary(&plan.run_id, &report.outcomes);
    let r = ws.engine.stores.requests().since(&before);
    println!(
        "object store requests: {} (lists {}, footer reads {}, range reads {}, whole reads and heads {}, writes {})",
        r.total(),
        r.lists,
        r.tail_gets,
        r.range_gets,
        r.whole_gets,
        r.writes
    );
    let cache = ws.engine.stores.read_cache_stats();
    if cache.fills > 0 {
        println!(
            "read cache: {} small file(s) read whole ({} MiB), {} later read(s) served from memory",
            cache.fills,
            crate::cli::output::mib(cache.filled_bytes),
            cache.hits
        );
    }
    for (folder, gets) in ws.engine.stores.gets_by_folder() {
        tracing::debug!(folder, gets, "object store GETs");
    }
    report.into_result().map(|_| ())
}
