//! `retention serve` (alias `schedule`): the daemon that runs every scheduled job's slots until
//! stopped, or the firings of a window with `--dry-run`.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::sync::mpsc;

use crate::error::Result;
use crate::plan::workspace::Workspace;
use crate::serve::daemon::{Daemon, DaemonSettings};
use crate::serve::{ServeOptions, http, slots};

pub const EXAMPLES: &str = "Examples:\n  retention serve\n  retention serve --http 127.0.0.1:0            # any free port, logged\n  retention serve --max-concurrent 4 --grace 5m\n  retention serve --sql --users users.toml       # and the SQL endpoints (see serve-sql)\n  retention serve --dry-run                        # the next 7 days of firings\n  retention serve --dry-run --from 2026-11-30 --days 3";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// List the firings of a window and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Start of the --dry-run window (YYYY-MM-DD, UTC; default now).
    #[arg(long, requires = "dry_run")]
    pub from: Option<chrono::NaiveDate>,
    /// Length of the --dry-run window in days.
    #[arg(long, default_value_t = 7, requires = "dry_run")]
    pub days: u32,
    /// Jobs executing at once in this daemon (default: engine.jobs).
    #[arg(long, env = "RETENTION_MAX_CONCURRENT")]
    pub max_concurrent: Option<usize>,
    /// After SIGTERM or SIGINT, how long running jobs may finish before they are abandoned
    /// without publishing (a second signal abandons them at once).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// This daemon's name in leases and `_runs.daemon_id` (default: host, process id and a
    /// random suffix).
    #[arg(long, env = "RETENTION_DAEMON_ID")]
    pub daemon_id: Option<String>,
    /// How often missed slots and slots whose daemon stopped are looked for.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub sweep: Duration,
    /// How often a slot held by another daemon is looked at again.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    /// Where `/healthz`, `/metrics` and `/runs` listen (default: [serve] http in retention.toml,
    /// else 127.0.0.1:9470; port 0 picks a free port and logs it).
    #[arg(long, env = "RETENTION_HTTP", conflicts_with = "no_http")]
    pub http: Option<std::net::SocketAddr>,
    /// No HTTP endpoint.
    #[arg(long)]
    pub no_http: bool,
    /// Delay before the first retry of a transient failure (doubling, with jitter).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub retry_delay: Duration,
    /// How long a slot's lease outlives the job's timeout (room for the publish, and for the
    /// daemons' clocks to disagree); a stopped daemon's slot is taken over after timeout + this.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub lease_margin: Duration,
    /// Also serve the curated tables over SQL (PostgreSQL wire and Flight SQL), as `serve-sql`
    /// does with the same settings; stopped with the daemon.
    #[arg(long)]
    pub sql: bool,
    /// With --sql: no logins (refused unless every endpoint is on loopback).
    #[arg(long, requires = "sql")]
    pub sql_no_auth: bool,
    #[command(flatten)]
    pub sql_settings: crate::project::config::SqlServerSettings,
}

pub async fn run(ws: Workspace, args: ServeArgs) -> Result<()> {
    let now = ws.engine.clock.now();
    if args.dry_run {
        let from = args
            .from
            .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
            .unwrap_or(now);
        let to = from + chrono::Duration::days(i64::from(args.days));
        for (at, jobs) in slots::firings(&ws, from, to)? {
            println!(
                "{}  {}",
                at.format("%Y-%m-%d %H:%M:%S UTC"),
                jobs.join(", ")
            );
        }
        return Ok(());
    }
    for p in slots::order_problems(&ws, now)? {
        tracing::warn!("{p}");
    }
    let settings = DaemonSettings {
        daemon_id: args.daemon_id.unwrap_or_else(default_daemon_id),
        max_concurrent: args.max_concurrent.unwrap_or(ws.engine.project.jobs),
        poll: args.poll,
        retry_delay: args.retry_delay,
        lease_margin: args.lease_margin,
    };
    let http = match args.no_http {
        true => None,
        false => Some(
            http::bind(args.http.unwrap_or(ws.engine.project.http))
                .await?
                .0,
        ),
    };
    let sql = match args.sql {
        false => None,
        true => {
            let project = &ws.engine.project;
            let config = crate::sql_server::SqlServerConfig::new(
                args.sql_settings.over(project.serve_sql.clone()),
                &project.root,
                crate::sql_server::Endpoints::default(),
                args.sql_no_auth,
            )?;
            Some(crate::sql_server::start(&ws, config).await?)
        }
    };
    let daemon = Daemon::new(Arc::new(ws), settings)?;
    let options = ServeOptions {
        grace: args.grace,
        sweep: args.sweep,
    };
    let served = crate::serve::serve(daemon, options, http, signals()).await;
    if let Some(running) = sql {
        running.stop().await;
    }
    served
}

/// `host-pid-xxxx`: unique per process, readable in `_runs`.
fn default_daemon_id() -> String {
    let host = sysinfo::System::host_name().unwrap_or_else(|| "host".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..6])
}

/// One message per SIGTERM or SIGINT (Ctrl-C).
pub(crate) fn signals() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            #[cfg(unix)]
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async {
                    match term.as_mut() {
                        Some(t) => { t.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            if tx.send(()).await.is_err() {
                break;
            }
        }
    });
    rx
}
