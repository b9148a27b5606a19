//! Flags every command takes, and the value types commands share; raw text is parsed here once
//! into validated values (`values`), and everything after trusts them.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::project::config::Overrides;
use crate::values::Month;

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
    /// Settings that override retention.toml.
    #[command(flatten)]
    pub overrides: Overrides,
    /// Log format on stderr; filter with RUST_LOG (default `info`).
    #[arg(
        long,
        global = true,
        env = "RETENTION_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
    /// Wait this long before every object store request, as a cloud store's round trip would
    /// (benchmarks: `--store-latency 20ms`). `run` prints the requests it made.
    #[arg(long, global = true, env = "RETENTION_STORE_LATENCY", value_parser = humantime::parse_duration)]
    pub store_latency: Option<std::time::Duration>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Parse `YYYY-MM` for clap (which names the argument itself).
pub fn month(text: &str) -> Result<Month, String> {
    Month::check(text)
}
