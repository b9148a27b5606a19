//! `retention close-month`: close a month for finance (or re-open it with a reason), or print
//! what that would do with `--dry-run`.

use std::sync::Arc;

use clap::Args;

use crate::cli::output::{OutputFormat, print_batches, print_summary};
use crate::close::month_close::{self, Action, Outcome, Plan, Request};
use crate::error::Result;
use crate::plan::workspace::Workspace;
use crate::store::system::snapshot_table;
use crate::values::Month;

pub const EXAMPLES: &str = "Examples:\n  retention close-month 2026-10\n  retention close-month 2026-10 --dry-run\n  retention close-month 2026-10 --reopen --reason \"vendor invoice INV-88 was booked to the wrong program\"\n\nWho closed is RETENTION_ACTOR, else the OS user. Old snapshots stay readable:\n  retention query \"select * from _closed_budget_reconciliation where closed_month = '2026-10'\"\n  retention query \"select * from _month_close\"";

#[derive(Debug, Args)]
pub struct CloseMonthArgs {
    /// The month, YYYY-MM.
    #[arg(value_parser = crate::cli::args::month)]
    pub month: Month,
    /// Re-open a closed month (needs --reason); its snapshot stays readable.
    #[arg(long, requires = "reason")]
    pub reopen: bool,
    /// Why the month is re-opened (recorded in the close log and the run ledger).
    #[arg(long, requires = "reopen")]
    pub reason: Option<String>,
    /// Print what the close would do and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Jobs run at once by the run before the close (overrides engine.jobs).
    #[arg(long, short = 'j', env = "RETENTION_JOBS")]
    pub jobs: Option<usize>,
}

pub async fn run(ws: Workspace, args: CloseMonthArgs) -> Result<()> {
    let req = Request {
        month: args.month,
        action: if args.reopen {
            Action::Reopen {
                reason: args.reason.unwrap_or_default(),
            }
        } else {
            Action::Close
        },
        actor: crate::ledger::current_actor(),
        now: ws.engine.clock.now(),
        concurrency: ws.engine.project.jobs,
    };
    let ws = Arc::new(ws);
    let plan = month_close::plan(&ws, &req).await?;
    if args.dry_run {
        print!("{}", plan.render());
        return Ok(());
    }
    let outcome = month_close::execute(ws.clone(), &plan, &req).await?;
    print_outcome(&plan, outcome)
}

fn print_outcome(plan: &Plan, outcome: Outcome) -> Result<()> {
    match outcome {
        Outcome::AlreadyClosed(l) => println!(
            "{} is already closed (snapshot {}, by {} at {}); nothing changed",
            l.month, l.snapshot, l.actor, l.at
        ),
        Outcome::Closed {
            snapshot,
            frozen,
            open_items,
        } => {
            for (table, batches) in &open_items {
                let n: usize = batches.iter().map(|b| b.num_rows()).sum();
                if n > 0 {
                    tracing::warn!(month = %plan.month, table = %table, open_items = n, "closing a month with open items");
                    eprintln!("warning: {} has {n} open items in {table}:", plan.month);
                    print_batches(batches, OutputFormat::Table)?;
                }
            }
            println!("closed {} as snapshot {snapshot}:", plan.month);
            for (table, version, rows) in frozen {
                println!(
                    "  {table}: {rows} rows frozen (from version {version}) into {}",
                    snapshot_table(&table)
                );
            }
        }
        Outcome::Reopened { snapshot, report } => {
            println!(
                "reopened {} (snapshot {snapshot} stays readable in the _closed_* tables)",
                plan.month
            );
            print_summary("reopen", &report.outcomes);
            report.into_result()?;
        }
    }
    Ok(())
}
