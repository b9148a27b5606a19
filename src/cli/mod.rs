//! Command-line interface: the argument definitions, one module per command, and `run`, which
//! loads the project and dispatches.

pub mod args;
pub mod commands;
pub mod output;

use clap::{Parser, Subcommand};

pub use args::{GlobalArgs, LogFormat};
pub use output::{OutputFormat, print_batches};

use crate::error::{Error, Result};
use crate::project::config::Project;
use crate::store::Stores;
use commands::{
    backfill, close_month, demo, explain, export, generate, optimize, plan, query, report,
    run as run_cmd, runs, serve, serve_sql, status, test, vacuum, validate, worker,
};

/// Turn a marketplace's raw data into curated customer trust, recovery and retention tables.
#[derive(Debug, Parser)]
#[command(name = "retention", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run jobs in dependency order and publish their curated tables.
    #[command(after_help = run_cmd::EXAMPLES)]
    Run(run_cmd::RunArgs),
    /// Compute an incremental job's intervals between two days (resumable; in parallel with
    /// --parallel), optionally with its downstream jobs.
    #[command(after_help = backfill::EXAMPLES)]
    Backfill(backfill::BackfillArgs),
    /// Check every spec, contract and SQL without reading data; reports all problems at once.
    #[command(after_help = validate::EXAMPLES)]
    Validate,
    /// Show the jobs a selection would run, in order, with their inputs.
    #[command(visible_alias = "list", after_help = plan::EXAMPLES)]
    Plan(plan::PlanArgs),
    /// Print DataFusion's logical and physical plan of a job.
    #[command(after_help = explain::EXAMPLES)]
    Explain(explain::ExplainArgs),
    /// Show the run ledger (newest first).
    #[command(after_help = runs::EXAMPLES)]
    Runs(runs::RunsArgs),
    /// Run ad-hoc SQL over sources, curated tables and `_runs` (read-only unless --allow-write).
    #[command(after_help = query::EXAMPLES)]
    Query(query::QueryArgs),
    /// Write a deterministic synthetic marketplace as raw Parquet sources.
    #[command(after_help = generate::EXAMPLES)]
    Generate(generate::GenerateArgs),
    /// Run the SQL unit tests: sqllogictest files that feed hand-made rows to jobs.
    #[command(after_help = test::EXAMPLES)]
    Test(test::TestArgs),
    /// Generate data if the raw root is empty, run every job, and say where the tables are.
    #[command(after_help = demo::EXAMPLES)]
    Demo,
    /// Export a month of the budget reconciliation for finance: a summary and a detail file
    /// (every ledger entry of the month with its mapping), exact decimal text.
    #[command(after_help = export::EXAMPLES)]
    Export(export::ExportArgs),
    /// Write the retention lead's page of charts: one self-contained HTML file (inline SVG, no
    /// network) from the curated tables, with the rows behind each chart and the tables' versions.
    #[command(after_help = report::EXAMPLES)]
    Report(report::ReportArgs),
    /// Close a month: run the finance jobs, then freeze the month of every frozen table as an
    /// immutable snapshot that later runs never change. Late entries for a closed month become
    /// prior-period adjustments of the first open month. Closing twice does nothing.
    #[command(name = "close-month", after_help = close_month::EXAMPLES)]
    CloseMonth(close_month::CloseMonthArgs),
    /// The daemon: run every scheduled job's slots (cron in the job's time zone) exactly once
    /// across any number of daemons, with retries, catch-up and a graceful stop (SIGTERM/Ctrl-C).
    #[command(visible_alias = "schedule", after_help = serve::EXAMPLES)]
    Serve(serve::ServeArgs),
    /// Serve the curated tables to BI tools over the PostgreSQL wire protocol and Arrow Flight
    /// SQL: read-only, with logins, until SIGTERM or Ctrl-C.
    #[command(name = "serve-sql", after_help = serve_sql::EXAMPLES)]
    ServeSql(serve_sql::ServeSqlArgs),
    /// Print a users-file entry for `serve-sql`: a login name and its password hash.
    #[command(name = "sql-user", after_help = serve_sql::USER_EXAMPLES)]
    SqlUser(serve_sql::SqlUserArgs),
    /// Per job: its last run, its next slot, whether it is late, and its sources' freshness.
    #[command(after_help = status::EXAMPLES)]
    Status(status::StatusArgs),
    /// Rewrite curated tables' files for their readers (compact small files, or Z-order by
    /// `[output] zorder_by`) in one commit that changes no row.
    #[command(after_help = optimize::EXAMPLES)]
    Optimize(optimize::OptimizeArgs),
    /// Delete data files no longer referenced by versions inside the history window.
    #[command(after_help = vacuum::EXAMPLES)]
    Vacuum(vacuum::VacuumArgs),
    /// Serve as a worker of a distributed engine: run the query fragments that coordinators
    /// (`[engine] kind = "distributed"`) send, with the token in RETENTION_WORKER_TOKEN.
    #[command(after_help = worker::EXAMPLES)]
    Worker(worker::WorkerArgs),
}

impl Command {
    /// `--jobs` of the commands that run jobs.
    fn jobs(&self) -> Option<usize> {
        match self {
            Command::Run(a) => a.jobs,
            Command::CloseMonth(a) => a.jobs,
            _ => None,
        }
    }
}

/// Exit code for an error: 2 for problems in the project's files or the command line, 1 for
/// failures while running.
pub fn exit_code(e: &Error) -> i32 {
    e.exit_code()
}

/// Run a parsed command line with the given stores (tests inject theirs).
pub async fn run(cli: Cli, stores: Stores) -> Result<()> {
    let mut overrides = cli.global.overrides.clone();
    overrides.engine.jobs = cli.command.jobs();
    let project = Project::load(&cli.global.project_dir, &overrides)?;
    tracing::debug!(raw = %project.raw, curated = %project.curated, "project loaded");
    if let Command::Generate(args) = &cli.command {
        return generate::run(&project, &stores, args).await;
    }
    if let Command::SqlUser(args) = cli.command {
        return serve_sql::sql_user(args);
    }
    if let Command::Worker(args) = cli.command {
        return worker::run(project, stores, args).await;
    }
    let ws = crate::app::workspace(project, stores)?;
    match cli.command {
        Command::Generate(_) | Command::SqlUser(_) | Command::Worker(_) => {
            unreachable!("handled above")
        }
        Command::Run(args) => run_cmd::run(ws, args).await,
        Command::Backfill(args) => backfill::run(ws, args).await,
        Command::Validate => validate::run(ws).await,
        Command::Plan(args) => plan::run(&ws, args).await,
        Command::Explain(args) => explain::run(&ws, args).await,
        Command::Runs(args) => runs::run(&ws, args).await,
        Command::Query(args) => query::run(&ws, args).await,
        Command::Test(args) => test::run(ws, args).await,
        Command::Demo => demo::run(ws).await,
        Command::Export(args) => export::run(&ws, args).await,
        Command::Report(args) => report::run(&ws, args).await,
        Command::CloseMonth(args) => close_month::run(ws, args).await,
        Command::Serve(args) => serve::run(ws, args).await,
        Command::ServeSql(args) => serve_sql::run(ws, args).await,
        Command::Status(args) => status::run(&ws, args).await,
        Command::Vacuum(args) => vacuum::run(&ws, args).await,
        Command::Optimize(args) => optimize::run(&ws, args).await,
    }
}
