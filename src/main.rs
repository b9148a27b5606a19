//! The `retention` binary: parse arguments, set up logging (redacted), run the command, and map
//! errors to exit codes.

use clap::Parser;
use retention::cli::{self, Cli, LogFormat};
use retention::redact::{redact, redacted_stderr};
use retention::store::Stores;
use tracing_subscriber::EnvFilter;

/// Our own info logs; only warnings from libraries (the Delta kernel logs expected misses as errors).
const DEFAULT_LOG_FILTER: &str = "warn,retention=info,buoyant_kernel=off";

fn main() {
    let cli = Cli::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(redacted_stderr);
    match cli.global.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.compact().init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let stores = Stores::with_latency(cli.global.store_latency.unwrap_or_default());
    if let Err(e) = runtime.block_on(cli::run(cli, stores)) {
        eprintln!("error: {}", redact(&e.to_string()));
        std::process::exit(e.exit_code());
    }
}
