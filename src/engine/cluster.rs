//! A distributed engine's coordinator side (datafusion-distributed): a job's session planned into
//! stages that run on the configured workers, the token coordinators and workers share, sent on
//! every request, and the TLS connections to workers. The worker itself is `engine::worker`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion_distributed::grpc::{BoxCloneSyncChannel, create_worker_client};
use datafusion_distributed::{
    ChannelResolver, DistributedExt, SessionStateBuilderExt, WorkerChannel, WorkerResolver,
};
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use subtle::ConstantTimeEq;
use url::Url;

use crate::error::{Error, Result};
use crate::project::config::Cluster;

/// The environment variable holding the secret that coordinators and workers share.
pub const TOKEN_VAR: &str = "RETENTION_WORKER_TOKEN";

/// Fewest characters a worker token may have.
const MIN_TOKEN_CHARS: usize = 16;

/// The secret shared by a cluster's coordinators and workers, sent as `authorization: Bearer`.
/// Never printed. Held as the header that carries it, built once.
#[derive(Clone)]
pub struct WorkerToken {
    header: HeaderValue,
}

impl fmt::Debug for WorkerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorkerToken(***)")
    }
}

impl WorkerToken {
    /// The token in `RETENTION_WORKER_TOKEN`, if set and not empty.
    pub fn from_env() -> Result<Option<WorkerToken>> {
        match std::env::var(TOKEN_VAR) {
            Ok(text) if text.is_empty() => Ok(None),
            Ok(text) => WorkerToken::new(&text).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(token_error("is not UTF-8")),
        }
    }

    /// A token from its text: at least 16 visible ASCII characters (it travels in a header).
    pub fn new(text: &str) -> Result<WorkerToken> {
        if text.chars().count() < MIN_TOKEN_CHARS {
            return Err(token_error(&format!(
                "must be at least {MIN_TOKEN_CHARS} characters (e.g. `openssl rand -hex 32`)"
            )));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(token_error(
                "may hold only visible ASCII characters, no spaces",
            ));
        }
        let mut header =
            HeaderValue::try_from(format!("Bearer {text}")).expect("checked: visible ASCII");
        header.set_sensitive(true);
        Ok(WorkerToken { header })
    }

    /// Whether a request's `authorization` header carries this token (constant time).
    pub(crate) fn admits(&self, header: Option<&HeaderValue>) -> bool {
        header.is_some_and(|h| h.as_bytes().ct_eq(self.header.as_bytes()).into())
    }
}

fn token_error(message: &str) -> Error {
    Error::Worker {
        message: format!("{TOKEN_VAR} {message}"),
        source: None,
    }
}

/// The headers every request to a worker carries: the token, when one is set.
pub(crate) fn auth_headers(token: Option<&WorkerToken>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        headers.insert(AUTHORIZATION, token.header.clone());
    }
    headers
}

/// The cluster's workers, as the configuration names them.
#[derive(Clone)]
struct ConfiguredWorkers(Vec<Url>);

impl WorkerResolver for ConfiguredWorkers {
    fn get_urls(&self) -> std::result::Result<Vec<Url>, DataFusionError> {
        Ok(self.0.clone())
    }
}

/// A coordinator's session: its queries are planned into stages that run on `cluster`'s workers,
/// each request carrying `token` (the engine read it once from `RETENTION_WORKER_TOKEN`), over
/// TLS with `tls`.
pub fn coordinator(
    builder: SessionStateBuilder,
    cluster: &Cluster,
    token: Option<&WorkerToken>,
    tls: Option<&TlsChannels>,
) -> Result<SessionStateBuilder> {
    let mut builder = builder
        .with_distributed_worker_resolver(ConfiguredWorkers(cluster.workers.clone()))
        .with_distributed_passthrough_headers(auth_headers(token))?
        .with_distributed_user_codec(crate::engine::codec::RetentionCodec);
    if let Some(tls) = tls {
        builder = builder.with_distributed_channel_resolver(tls.clone());
    }
    Ok(builder.with_distributed_planner())
}

/// Install the process's TLS provider (ring) before TLS is served or used; a second call is a
/// no-op.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Connections to workers over TLS, trusting the CA that signed their certificates: one channel
/// per worker, kept for the process's life.
#[derive(Clone)]
pub struct TlsChannels {
    ca: tonic::transport::Certificate,
    open: Arc<std::sync::Mutex<HashMap<Url, BoxCloneSyncChannel>>>,
}

impl fmt::Debug for TlsChannels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsChannels")
    }
}

impl TlsChannels {
    /// Channels trusting the CA in the PEM file at `ca`.
    pub fn from_pem_file(ca: &Path) -> Result<TlsChannels> {
        let pem = std::fs::read(ca).map_err(|source| Error::ReadFile {
            path: ca.to_path_buf(),
            source,
        })?;
        install_tls_provider();
        Ok(TlsChannels {
            ca: tonic::transport::Certificate::from_pem(pem),
            open: Arc::default(),
        })
    }

    async fn channel(
        &self,
        url: &Url,
    ) -> std::result::Result<BoxCloneSyncChannel, DataFusionError> {
        if let Some(open) = self.open.lock().expect("not poisoned").get(url) {
            return Ok(open.clone());
        }
        let failed = |e: tonic::transport::Error| {
            DataFusionError::Execution(format!(
                "Error connecting to Distributed DataFusion worker on '{url}' over TLS: {e} ({e:?})"
            ))
        };
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(self.ca.clone());
        let channel = tonic::transport::Channel::from_shared(url.to_string())
            .map_err(|e| DataFusionError::Configuration(format!("worker address {url}: {e}")))?
            .tls_config(tls)
            .map_err(failed)?
            .connect()
            .await
            .map_err(failed)?;
        let channel = BoxCloneSyncChannel::new(channel);
        self.open
            .lock()
            .expect("not poisoned")
            .insert(url.clone(), channel.clone());
        Ok(channel)
    }
}

#[async_trait::async_trait]
impl ChannelResolver for TlsChannels {
    async fn get_worker_client_for_url(
        &self,
        url: &Url,
    ) -> std::result::Result<Box<dyn WorkerChannel>, DataFusionError> {
        self.channel(url).await.map(create_worker_client)
    }
}

/// An executed distributed plan with each stage's metrics, summed over its tasks, folded back
/// into its nodes (rows and bytes its scans read, what its operators spilled); a plan that ran
/// here is returned as it is.
pub async fn with_worker_metrics(
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    if !plan.is::<datafusion_distributed::DistributedExec>() {
        return Ok(plan);
    }
    datafusion_distributed::rewrite_distributed_plan_with_metrics(
        plan,
        datafusion_distributed::DistributedMetricsFormat::Aggregated,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_visible_and_never_printed() {
        assert!(WorkerToken::new("short").is_err());
        assert!(WorkerToken::new("has a space in it, sixteen+").is_err());
        let t = WorkerToken::new("0123456789abcdef").unwrap();
        assert_eq!(format!("{t:?}"), "WorkerToken(***)");
        assert!(t.header.is_sensitive());
        assert!(t.admits(Some(&HeaderValue::from_static("Bearer 0123456789abcdef"))));
        assert!(!t.admits(Some(&HeaderValue::from_static("Bearer 0123456789abcdeF"))));
        assert!(!t.admits(Some(&HeaderValue::from_static("0123456789abcdef"))));
        assert!(!t.admits(None));
        let e = WorkerToken::new("x").unwrap_err().to_string();
        assert!(e.contains(TOKEN_VAR) && e.contains("16 characters"), "{e}");
    }
}
