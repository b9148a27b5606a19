//! `retention worker`: serve as a worker of a distributed engine, running the plan fragments that
//! coordinators (`[engine] kind = "distributed"`) send, until SIGTERM or Ctrl-C.

use std::net::SocketAddr;

use clap::Args;

use crate::engine::cluster::{TOKEN_VAR, WorkerToken};
use crate::engine::session::Engine;
use crate::engine::worker;
use crate::error::{Error, Result};
use crate::project::config::Project;
use crate::store::Stores;

pub const EXAMPLES: &str = "Examples:\n  RETENTION_WORKER_TOKEN=$(cat /run/secrets/worker-token) retention worker --listen 0.0.0.0:7470\n  retention worker --listen 127.0.0.1:0 --no-auth     # a free port on this machine, no token";

/// Where a worker listens unless told otherwise: this machine only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7470";

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Accept requests without the token in RETENTION_WORKER_TOKEN (a trusted network only).
    #[arg(long)]
    pub no_auth: bool,
    /// Serve over TLS with this certificate (PEM; with --tls-key). Coordinators and the other
    /// workers then need `[engine] worker_ca` and https:// addresses.
    #[arg(long, env = "RETENTION_WORKER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "RETENTION_WORKER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

/// Serve until a signal. The project gives the stores (and their credentials, from the
/// environment), the memory limit and the DataFusion settings fragments run with.
pub async fn run(project: Project, stores: Stores, args: WorkerArgs) -> Result<()> {
    let token = WorkerToken::from_env()?;
    if token.is_none() && !args.no_auth {
        return Err(Error::Worker {
            message: format!(
                "set {TOKEN_VAR} (the same secret on the coordinators and every worker), or pass --no-auth on a trusted network"
            ),
            source: None,
        });
    }
    let identity = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(worker::WorkerIdentity { cert, key }),
        _ => None,
    };
    let engine = Engine::new(project, stores)?;
    let (listener, bound) = worker::bind(args.listen).await?;
    let scheme = if identity.is_some() { "https" } else { "http" };
    println!("worker listening on {scheme}://{bound}");
    tracing::info!(address = %bound, auth = token.is_some(), tls = identity.is_some(), "worker listening");
    let mut signals = crate::cli::commands::serve::signals();
    let stop = async move {
        signals.recv().await;
        tracing::info!("worker stopping");
    };
    worker::serve_worker(engine, listener, token, identity.as_ref(), stop).await
}
