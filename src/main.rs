//! The `retention` binary: parse arguments, set up logging (redacted), run the command, and map
//! errors to exit codes.

use clap::Parser;
use retention::cli::{self, Cli, LogFormat};
use retention::redact::{redact, redacted_stderr};
use retention::store::Stores;
use tracing_subscriber::EnvFilter;

/// jemalloc, not the system allocator: under a memory limit the job's operators allocate and free
/// hundreds of MB across threads, and glibc's arenas kept the freed memory resident (at 51.6M
/// orders under `--memory-limit 2GiB`, cohort_retention peaked at 3.38 GB RSS on glibc and 2.40 GB
/// here; docs/BENCHMARKS.md). Its options are built in from .cargo/config.toml: freed pages go back
/// to the system after a second, by a background thread. Large zeroed allocations are made
/// writable at once (src/allocator.rs).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: retention::allocator::Allocator = retention::allocator::Allocator;

/// Delta's writer tasks per partitioned write (store/delta.rs, `default_concurrent_writers`),
/// unless the environment sets them. deltalake reads the variable only from the environment.
#[allow(unsafe_code)]
fn writers_per_partitioned_write() {
    use retention::store::delta::{CONCURRENT_WRITERS_VAR, default_concurrent_writers};
    if std::env::var_os(CONCURRENT_WRITERS_VAR).is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: called first in `main`, before any other thread exists, so nothing reads the
    // environment while it is written.
    unsafe {
        std::env::set_var(
            CONCURRENT_WRITERS_VAR,
            default_concurrent_writers(cores).to_string(),
        )
    };
}

/// Our own info logs; only warnings from libraries (the Delta kernel logs expected misses as errors).
const DEFAULT_LOG_FILTER: &str = "warn,retention=info,buoyant_kernel=off";

fn main() {
    writers_per_partitioned_write();
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
