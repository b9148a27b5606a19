//! `retention serve-sql`: the curated tables for BI tools over the PostgreSQL wire protocol and
//! Arrow Flight SQL, read-only and authenticated, until SIGTERM or Ctrl-C; and `retention sql-user`, which makes a
//! users-file entry.

use std::io::BufRead;

use clap::Args;

use crate::error::{Error, Result};
use crate::plan::workspace::Workspace;
use crate::project::config::SqlServerSettings;
use crate::sql_server::users::{PASSWORD_ENV, PasswordHash};
use crate::sql_server::{Endpoints, SqlServerConfig, start};

pub const EXAMPLES: &str = "Examples:\n  retention sql-user analyst >> users.toml      # asks for the password on stdin\n  retention serve-sql --users users.toml         # postgres on 127.0.0.1:5433, flight on 50051\n  psql \"host=127.0.0.1 port=5433 user=analyst dbname=retention\" -c '\\dt'\n  retention serve-sql --no-auth --pg 127.0.0.1:0  # loopback only; logs the port";

#[derive(Debug, Args)]
pub struct ServeSqlArgs {
    #[command(flatten)]
    pub settings: SqlServerSettings,
    /// No PostgreSQL endpoint.
    #[arg(long)]
    pub no_pg: bool,
    /// No Arrow Flight SQL endpoint.
    #[arg(long)]
    pub no_flight: bool,
    /// Accept connections without a login (refused unless every endpoint is on loopback).
    #[arg(long)]
    pub no_auth: bool,
}

pub async fn run(ws: Workspace, args: ServeSqlArgs) -> Result<()> {
    let project = &ws.engine.project;
    let settings = args.settings.over(project.serve_sql.clone());
    let endpoints = Endpoints {
        no_pg: args.no_pg,
        no_flight: args.no_flight,
    };
    let config = SqlServerConfig::new(settings, &project.root, endpoints, args.no_auth)?;
    let running = start(&ws, config).await?;
    if let Some(addr) = running.pg {
        eprintln!("postgres endpoint on {addr} (database `retention`)");
    }
    if let Some(addr) = running.flight {
        eprintln!("flight sql endpoint on grpc://{addr}");
    }
    let mut signals = crate::cli::commands::serve::signals();
    signals.recv().await;
    tracing::info!("stopping the SQL endpoints");
    running.stop().await;
    Ok(())
}

pub const USER_EXAMPLES: &str = "Examples:\n  retention sql-user analyst >> users.toml          # type the password, then Enter\n  RETENTION_SQL_PASSWORD=... retention sql-user bi >> users.toml";

#[derive(Debug, Args)]
pub struct SqlUserArgs {
    /// The login name.
    pub name: String,
}

/// Print a users-file entry for `name`: the password (from RETENTION_SQL_PASSWORD, else the
/// first line of stdin) hashed with a new salt. The password itself is printed nowhere.
pub fn sql_user(args: SqlUserArgs) -> Result<()> {
    let password = match std::env::var(PASSWORD_ENV) {
        Ok(p) => p,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| Error::Argument {
                    flag: "stdin",
                    key: "password".into(),
                    message: format!("cannot read the password from stdin: {e}"),
                })?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    if password.is_empty() {
        return Err(Error::Argument {
            flag: "stdin",
            key: "password".into(),
            message: format!("an empty password: give it on stdin or in {PASSWORD_ENV}"),
        });
    }
    let name = toml::Value::String(args.name);
    println!(
        "[[user]]\nname = {name}\npassword = \"{}\"",
        PasswordHash::new(&password).encode()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use crate::cli::{Cli, Command};

    #[test]
    fn the_sql_flags_parse_beside_the_global_ones() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "retention",
            "--raw",
            "r/",
            "serve-sql",
            "--pg",
            "127.0.0.1:1",
            "--raw-schema",
            "true",
            "--no-flight",
        ])
        .unwrap();
        assert_eq!(cli.global.overrides.storage.raw.as_deref(), Some("r/"));
        let Command::ServeSql(args) = cli.command else {
            panic!("not serve-sql")
        };
        assert_eq!(args.settings.raw, Some(true));
        assert_eq!(args.settings.pg.as_deref(), Some("127.0.0.1:1"));
        assert!(args.no_flight && !args.no_pg);
        // The daemon takes the same flags after --sql, and the global --raw stays a path.
        let cli = Cli::try_parse_from([
            "retention",
            "--raw",
            "r/",
            "serve",
            "--sql",
            "--sql-no-auth",
            "--flight",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert_eq!(cli.global.overrides.storage.raw.as_deref(), Some("r/"));
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert!(args.sql && args.sql_no_auth);
        assert_eq!(args.sql_settings.flight.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(args.sql_settings.raw, None);
    }
}
