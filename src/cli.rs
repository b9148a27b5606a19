//! Command-line interface: argument definitions and one function per command.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use datafusion::arrow::array::RecordBatch;

use crate::config::{Overrides, Project};
use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, generate};
use crate::ledger::RUNS_TABLE;
use crate::runner::{JobOutcome, Workspace, execute};
use crate::session::Engine;
use crate::storage::Stores;

/// Turn a marketplace's raw data into curated customer trust, recovery and retention tables.
#[derive(Debug, Parser)]
#[command(name = "retention", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes; each has an environment variable too (flag wins).
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Project directory (holds retention.toml, jobs/ and sql/).
    #[arg(
        short = 'C',
        long,
        global = true,
        env = "RETENTION_PROJECT_DIR",
        default_value = "."
    )]
    pub project_dir: PathBuf,
    /// Raw data root URL or path (overrides storage.raw).
    #[arg(long, global = true, env = "RETENTION_RAW")]
    pub raw: Option<String>,
    /// Curated data root URL or path (overrides storage.curated).
    #[arg(long, global = true, env = "RETENTION_CURATED")]
    pub curated: Option<String>,
    /// Query memory limit: a size (4GiB), a share of physical memory (60%), or none (overrides engine.memory_limit; default 75%).
    #[arg(long, global = true, env = "RETENTION_MEMORY_LIMIT")]
    pub memory_limit: Option<String>,
    /// DataFusion target partitions (overrides engine.target_partitions).
    #[arg(long, global = true, env = "RETENTION_TARGET_PARTITIONS")]
    pub target_partitions: Option<usize>,
    /// Days of Delta log kept for time travel (overrides history.log_retention_days).
    #[arg(long, global = true, env = "RETENTION_LOG_RETENTION_DAYS")]
    pub log_retention_days: Option<u32>,
    /// Hours replaced files are kept before vacuum (overrides history.deleted_file_retention_hours).
    #[arg(long, global = true, env = "RETENTION_DELETED_FILE_RETENTION_HOURS")]
    pub deleted_file_retention_hours: Option<u32>,
    /// Log format on stderr; filter with RUST_LOG (default `info`).
    #[arg(
        long,
        global = true,
        env = "RETENTION_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Xlsx,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run jobs in dependency order and publish their curated tables.
    #[command(
        after_help = "Examples:\n  retention run --all\n  retention run daily_orders\n  retention run +customer_summary     # with everything upstream\n  retention run order_experience+     # with everything downstream\n  retention run tag:finance --jobs 4\n  retention run --all --dry-run\n  retention run daily_orders --param from_day=2026-10-01   # backfill from a day"
    )]
    Run {
        /// Job selectors: NAME, +NAME (with upstream), NAME+ (with downstream), tag:TAG.
        selectors: Vec<String>,
        /// Run every job.
        #[arg(long)]
        all: bool,
        /// Jobs run at once (overrides engine.jobs).
        #[arg(long, short = 'j', env = "RETENTION_JOBS")]
        jobs: Option<usize>,
        /// Print the plan and exit without reading or writing data.
        #[arg(long)]
        dry_run: bool,
        /// Override a job parameter for this run (backfills): NAME=VALUE, repeatable.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// Check every spec, contract and SQL without reading data; reports all problems at once.
    #[command(
        after_help = "Examples:\n  retention validate\n  retention -C examples/online_retail validate"
    )]
    Validate,
    /// Show the jobs a selection would run, in order, with their inputs.
    #[command(
        visible_alias = "list",
        after_help = "Examples:\n  retention plan\n  retention plan +customer_summary\n  retention plan --dot | dot -Tsvg > dag.svg"
    )]
    Plan {
        /// Job selectors (as for `run`); none means all jobs.
        selectors: Vec<String>,
        /// Print the graph in Graphviz DOT.
        #[arg(long)]
        dot: bool,
    },
    /// Print DataFusion's logical and physical plan of a job.
    #[command(after_help = "Examples:\n  retention explain daily_orders")]
    Explain {
        /// Job name.
        job: String,
    },
    /// Show the run ledger (newest first).
    #[command(
        after_help = "Examples:\n  retention runs\n  retention runs --job daily_orders --limit 5"
    )]
    Runs {
        /// Only this job.
        #[arg(long)]
        job: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// Run ad-hoc SQL over sources, curated tables and `_runs`.
    #[command(
        after_help = "Examples:\n  retention query \"select * from daily_orders limit 5\"\n  retention query --format csv \"select count(*) from orders\""
    )]
    Query {
        /// The SQL text (may start with a `--` comment).
        #[arg(allow_hyphen_values = true)]
        sql: String,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// Write a deterministic synthetic marketplace as raw Parquet sources.
    #[command(
        after_help = "Examples:\n  retention generate\n  retention generate --customers 100000 --months 24 --seed 7\n  retention generate --out s3://bucket/raw"
    )]
    Generate {
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 20_000)]
        customers: u64,
        #[arg(long, default_value_t = 24)]
        months: u32,
        /// First day of the data (YYYY-MM-DD).
        #[arg(long, default_value = "2024-11-01")]
        start: chrono::NaiveDate,
        /// Where to write (default: the project's raw root).
        #[arg(long)]
        out: Option<String>,
        /// Ledger lines per booked spend entry (finance volume).
        #[arg(long, default_value_t = 1)]
        ledger_lines: usize,
    },
    /// Run the SQL unit tests: sqllogictest files that feed hand-made rows to jobs.
    #[command(
        after_help = "Examples:\n  retention test\n  retention test tests/sql/order_experience.slt\n  retention test --complete   # rewrite expected results from what the jobs return"
    )]
    Test {
        /// Test files or directories (default: tests/sql under the project).
        paths: Vec<PathBuf>,
        /// Rewrite each file's expected results with the actual ones.
        #[arg(long)]
        complete: bool,
    },
    /// Generate data if the raw root is empty, run every job, and say where the tables are.
    #[command(after_help = "Examples:\n  retention demo")]
    Demo,
    /// Export a month of the budget reconciliation for finance: a summary and a detail file
    /// (every ledger entry of the month with its mapping), exact decimal text.
    #[command(
        after_help = "Examples:\n  retention export budget_reconciliation --month 2026-10\n  retention export budget_reconciliation --month 2026-10 --out /tmp/close"
    )]
    Export {
        /// The table to export (budget_reconciliation).
        table: String,
        /// Service month, YYYY-MM.
        #[arg(long)]
        month: String,
        /// `xlsx`: one workbook with a summary and a detail sheet; `csv`: two files.
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
        /// Directory to write into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Close a month: run the finance jobs, then freeze the month of every frozen table as an
    /// immutable snapshot that later runs never change. Late entries for a closed month become
    /// prior-period adjustments of the first open month. Closing twice does nothing.
    #[command(
        name = "close-month",
        after_help = "Examples:\n  retention close-month 2026-10\n  retention close-month 2026-10 --dry-run\n  retention close-month 2026-10 --reopen --reason \"vendor invoice INV-88 was booked to the wrong program\"\n\nWho closed is RETENTION_ACTOR, else the OS user. Old snapshots stay readable:\n  retention query \"select * from _closed_budget_reconciliation where closed_month = '2026-10'\"\n  retention query \"select * from _month_close\""
    )]
    CloseMonth {
        /// The month, YYYY-MM.
        month: String,
        /// Re-open a closed month (needs --reason); its snapshot stays readable.
        #[arg(long, requires = "reason")]
        reopen: bool,
        /// Why the month is re-opened (recorded in the close log and the run ledger).
        #[arg(long, requires = "reopen")]
        reason: Option<String>,
        /// Print what the close would do and exit.
        #[arg(long)]
        dry_run: bool,
        /// Jobs run at once by the run before the close (overrides engine.jobs).
        #[arg(long, short = 'j', env = "RETENTION_JOBS")]
        jobs: Option<usize>,
    },
    /// Run every job on its `schedule` (cron, UTC) until stopped (Ctrl-C / SIGTERM).
    #[command(
        after_help = "Examples:\n  retention schedule\n  retention schedule --dry-run                        # the next 7 days of firings\n  retention schedule --dry-run --from 2026-11-30 --days 3"
    )]
    Schedule {
        /// List the firings of a window and exit.
        #[arg(long)]
        dry_run: bool,
        /// Start of the --dry-run window (YYYY-MM-DD, UTC; default now).
        #[arg(long, requires = "dry_run")]
        from: Option<chrono::NaiveDate>,
        /// Length of the --dry-run window in days.
        #[arg(long, default_value_t = 7, requires = "dry_run")]
        days: u32,
        /// Jobs run at once per firing (overrides engine.jobs).
        #[arg(long, short = 'j', env = "RETENTION_JOBS")]
        jobs: Option<usize>,
    },
    /// Delete data files no longer referenced by versions inside the history window.
    #[command(
        after_help = "Examples:\n  retention vacuum --dry-run\n  retention vacuum daily_orders --retention-hours 24"
    )]
    Vacuum {
        /// Tables (default: every job's table and _runs).
        tables: Vec<String>,
        /// Keep files replaced within this many hours (default: history.deleted_file_retention_hours).
        #[arg(long)]
        retention_hours: Option<u32>,
        /// List what would be deleted without deleting.
        #[arg(long)]
        dry_run: bool,
    },
}

impl GlobalArgs {
    fn overrides(&self, jobs: Option<usize>) -> Overrides {
        Overrides {
            raw: self.raw.clone(),
            curated: self.curated.clone(),
            memory_limit: self.memory_limit.clone(),
            target_partitions: self.target_partitions,
            jobs,
            log_retention_days: self.log_retention_days,
            deleted_file_retention_hours: self.deleted_file_retention_hours,
        }
    }
}

/// Exit code for an error: 2 for problems in the project's files, 1 for failures while running.
pub fn exit_code(e: &Error) -> i32 {
    match e {
        Error::Toml { .. }
        | Error::Config { .. }
        | Error::Sql { .. }
        | Error::UnknownTable { .. }
        | Error::Cycle { .. }
        | Error::Selector { .. } => 2,
        Error::Many(v) if v.iter().all(|e| exit_code(e) == 2) => 2,
        _ => 1,
    }
}

/// Run a parsed command line with the given stores (tests inject theirs).
pub async fn run(cli: Cli, stores: Stores) -> Result<()> {
    let jobs_override = match &cli.command {
        Command::Run { jobs, .. }
        | Command::CloseMonth { jobs, .. }
        | Command::Schedule { jobs, .. } => *jobs,
        _ => None,
    };
    let project = Project::load(
        &cli.global.project_dir,
        &cli.global.overrides(jobs_override),
    )?;
    tracing::debug!(raw = %project.raw, curated = %project.curated, "project loaded");
    let engine = Engine::new(project, stores)?;
    if let Command::Generate {
        seed,
        customers,
        months,
        start,
        out,
        ledger_lines,
    } = &cli.command
    {
        let root = match out {
            Some(o) => {
                crate::config::parse_location(&engine.project.root, o).map_err(|message| {
                    Error::Config {
                        path: "--out".into(),
                        key: "out".into(),
                        message,
                    }
                })?
            }
            None => engine.project.raw.clone(),
        };
        let opts = GenerateOptions {
            seed: *seed,
            customers: *customers,
            months: *months,
            start: *start,
            ledger_lines: *ledger_lines,
        };
        let clock = std::time::Instant::now();
        let g = generate(&engine.stores, &root, &opts).await?;
        for (table, rows) in &g.tables {
            println!("{table}: {rows} rows");
        }
        println!("written to {root} in {:.1}s", clock.elapsed().as_secs_f64());
        return Ok(());
    }
    let mut ws = Workspace::load(engine)?;
    if let Command::Run {
        selectors,
        all,
        params,
        ..
    } = &cli.command
        && !params.is_empty()
    {
        let selected = ws.graph.select(selectors, *all)?;
        ws.override_params(&selected, params)?;
    }
    let ws = Arc::new(ws);
    match cli.command {
        Command::Generate { .. } => unreachable!("handled above"),
        Command::Test { paths, complete } => {
            let paths = if paths.is_empty() {
                vec![ws.engine.project.root.join("tests/sql")]
            } else {
                paths
            };
            let files = crate::sqltest::test_files(&paths)?;
            let mut failed = 0;
            for f in &files {
                match crate::sqltest::run_file(ws.clone(), f, complete).await {
                    Ok(()) => println!("ok      {}", f.display()),
                    Err(e) => {
                        failed += 1;
                        println!("FAILED  {}\n{e}", f.display());
                    }
                }
            }
            println!("{} passed, {failed} failed", files.len() - failed);
            if failed > 0 {
                return Err(Error::Job {
                    job: "test".into(),
                    message: format!("{failed} SQL test file(s) failed"),
                });
            }
            Ok(())
        }
        Command::Demo => {
            let raw = &ws.engine.project.raw;
            let (store, path) = ws.engine.stores.store_for(raw)?;
            let empty = {
                use futures::StreamExt;
                store.list(Some(&path)).next().await.is_none()
            };
            if empty {
                println!("no raw data under {raw}: generating the default data set");
                generate(&ws.engine.stores, raw, &GenerateOptions::default()).await?;
            }
            let selected = ws.graph.select(&[], true)?;
            let plan = ws.plan(&selected, "demo")?;
            let report = execute(ws.clone(), &plan, ws.engine.project.jobs).await?;
            print_summary(&plan.run_id, &report.outcomes);
            let outcomes = report.into_result()?.outcomes;
            crate::demo::print_highlights(&ws.query_session().await?).await?;
            println!("\ncurated tables under {}:", ws.engine.project.curated);
            for (job, o) in plan.jobs.iter().zip(&outcomes) {
                println!(
                    "  {:<24} {} (Delta version {})",
                    job.table,
                    job.url,
                    o.output_version.unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Run {
            selectors,
            all,
            dry_run,
            ..
        } => {
            let selected = ws.graph.select(&selectors, all)?;
            let plan = ws.plan(&selected, "manual")?;
            if dry_run {
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
            report.into_result().map(|_| ())
        }
        Command::Validate => {
            let outputs = ws.validate().await?;
            for p in crate::schedule::order_problems(&ws, chrono::Utc::now())? {
                tracing::warn!("{p}");
                eprintln!("warning: {p}");
            }
            println!(
                "ok: {} source(s), {} job(s) planned against their contracts",
                ws.sources.len(),
                outputs.len()
            );
            Ok(())
        }
        Command::Plan { selectors, dot } => {
            let selected = ws.graph.select(&selectors, selectors.is_empty())?;
            if dot {
                print!("{}", ws.graph.to_dot(&selected));
            } else {
                let plan = ws.plan(&selected, "manual")?;
                print!("{}", plan.render());
            }
            Ok(())
        }
        Command::Explain { job } => {
            let node = ws.graph.node(&job).ok_or(Error::Selector {
                selector: job.clone(),
            })?;
            // Jobs not published yet are planned from their validated output schemas.
            let schemas = ws.validate().await?;
            let ctx = ws.query_session_with(&schemas).await?;
            let df = crate::session::plan_job(&ctx, &node.spec).await?;
            let batches = df.explain(false, false)?.collect().await?;
            print_batches(&batches, OutputFormat::Table)
        }
        Command::Runs { job, limit, format } => {
            let ctx = ws.query_session().await?;
            if ctx.table_exist(RUNS_TABLE)? {
                let mut df = ctx.table(RUNS_TABLE).await?;
                if let Some(j) = job {
                    df =
                        df.filter(datafusion::prelude::col("job").eq(datafusion::prelude::lit(j)))?;
                }
                let df = df
                    .sort(vec![
                        datafusion::prelude::col("started_at").sort(false, true),
                        datafusion::prelude::col("job").sort(true, true),
                    ])?
                    .limit(0, Some(limit))?;
                print_batches(&df.collect().await?, format)
            } else {
                println!("no runs recorded yet");
                Ok(())
            }
        }
        Command::Query { sql, format } => {
            let ctx = ws.query_session().await?;
            let df = ctx.sql(&sql).await?;
            print_batches(&df.collect().await?, format)
        }
        Command::Schedule {
            dry_run: true,
            from,
            days,
            ..
        } => {
            let from = from
                .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
                .unwrap_or_else(chrono::Utc::now);
            let to = from + chrono::Duration::days(i64::from(days));
            for (at, jobs) in crate::schedule::firings(&ws, from, to)? {
                println!(
                    "{}  {}",
                    at.format("%Y-%m-%d %H:%M:%S UTC"),
                    jobs.join(", ")
                );
            }
            Ok(())
        }
        Command::Schedule { .. } => {
            for p in crate::schedule::order_problems(&ws, chrono::Utc::now())? {
                tracing::warn!("{p}");
            }
            let concurrency = ws.engine.project.jobs;
            crate::schedule::serve(ws.clone(), concurrency, async {
                shutdown_signal().await;
            })
            .await
        }
        Command::CloseMonth {
            month,
            reopen,
            reason,
            dry_run,
            ..
        } => {
            let req = crate::close::Request {
                month,
                action: if reopen {
                    crate::close::Action::Reopen {
                        reason: reason.unwrap_or_default(),
                    }
                } else {
                    crate::close::Action::Close
                },
                actor: crate::ledger::current_actor(),
                now: chrono::Utc::now(),
                concurrency: ws.engine.project.jobs,
            };
            let plan = crate::close::plan(&ws, &req).await?;
            if dry_run {
                print!("{}", plan.render());
                return Ok(());
            }
            match crate::close::execute(ws.clone(), &plan, &req).await? {
                crate::close::Outcome::AlreadyClosed(l) => println!(
                    "{} is already closed (snapshot {}, by {} at {}); nothing changed",
                    l.month, l.snapshot, l.actor, l.at
                ),
                crate::close::Outcome::Closed {
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
                            crate::close::snapshot_table(&table)
                        );
                    }
                }
                crate::close::Outcome::Reopened { snapshot, report } => {
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
        Command::Export {
            table,
            month,
            format,
            out,
        } => {
            let files = match format {
                ExportFormat::Csv => {
                    crate::export::export_month_csv(&ws, &table, &month, &out).await?
                }
                ExportFormat::Xlsx => {
                    crate::export::export_month_xlsx(&ws, &table, &month, &out).await?
                }
            };
            for f in files {
                println!("wrote {}", f.display());
            }
            Ok(())
        }
        Command::Vacuum {
            tables,
            retention_hours,
            dry_run,
        } => {
            let names: Vec<String> = if tables.is_empty() {
                let mut v: Vec<String> = ws
                    .graph
                    .nodes
                    .iter()
                    .map(|n| n.spec.table.clone())
                    .collect();
                v.push(RUNS_TABLE.into());
                v
            } else {
                tables
            };
            let hours = retention_hours.unwrap_or(ws.engine.project.deleted_file_retention_hours);
            for name in names {
                let url = ws.table_url(&name)?;
                let Some(table) = crate::curated::open(&ws.engine.stores, &url).await? else {
                    println!("{name}: not published, nothing to vacuum");
                    continue;
                };
                let (_, metrics) = table
                    .vacuum()
                    .with_retention_period(chrono::Duration::hours(i64::from(hours)))
                    .with_enforce_retention_duration(false)
                    .with_dry_run(dry_run)
                    .await
                    .map_err(|e| Error::Storage {
                        location: url.to_string(),
                        message: crate::storage::redact(&e.to_string()),
                    })?;
                println!(
                    "{name}: {} {} file(s)",
                    if dry_run { "would delete" } else { "deleted" },
                    metrics.files_deleted.len()
                );
            }
            Ok(())
        }
    }
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn print_summary(run_id: &str, outcomes: &[JobOutcome]) {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec!["job", "status", "rows", "seconds", "version", "error"]);
    for o in outcomes {
        t.add_row(vec![
            o.job.clone(),
            o.status.to_string(),
            o.rows_written.to_string(),
            format!("{:.2}", o.seconds),
            o.output_version.map(|v| v.to_string()).unwrap_or_default(),
            o.error.clone().unwrap_or_default(),
        ]);
    }
    println!("run {run_id}\n{t}");
}

/// Print batches as a table, CSV or JSON (one array of objects) on stdout.
pub fn print_batches(batches: &[RecordBatch], format: OutputFormat) -> Result<()> {
    use datafusion::arrow;
    let err = |e: arrow::error::ArrowError| Error::DataFusion(e.to_string());
    match format {
        OutputFormat::Table => {
            println!(
                "{}",
                arrow::util::pretty::pretty_format_batches(batches).map_err(err)?
            );
        }
        OutputFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(std::io::stdout());
            for b in batches {
                w.write(b).map_err(err)?;
            }
        }
        OutputFormat::Json => {
            let mut w = arrow::json::ArrayWriter::new(std::io::stdout());
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs).map_err(err)?;
            w.finish().map_err(err)?;
            println!();
        }
    }
    Ok(())
}
