//! `retention worker`: a gRPC server (datafusion-distributed's worker) that runs the plan
//! fragments coordinators send, with retention's functions, the project's stores and settings;
//! it refuses any request without the cluster's token and any fragment that would write.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionState;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_distributed::{
    DistributedExt, Worker, WorkerPlanRewriteEvent, WorkerPlanRewriteEventResponse,
    WorkerQueryContext, WorkerSessionBuilder,
};
use http::header::AUTHORIZATION;

use crate::engine::cluster::{TOKEN_VAR, WorkerToken, auth_headers};
use crate::engine::session::{Engine, register_functions};
use crate::error::{Error, Result};

/// How a worker builds the session each plan fragment runs in.
struct WorkerSessions {
    engine: Engine,
    token: Option<WorkerToken>,
}

#[async_trait]
impl WorkerSessionBuilder for WorkerSessions {
    async fn build_session_state(
        &self,
        ctx: WorkerQueryContext,
    ) -> std::result::Result<SessionState, DataFusionError> {
        let mut builder = ctx.builder;
        let config = builder.config().take().unwrap_or_default();
        let config = self
            .engine
            .tune(config)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mut builder = builder
            .with_config(config)
            // Calls this worker makes to other workers (shuffles) carry the token on.
            .with_distributed_passthrough_headers(auth_headers(self.token.as_ref()))?
            .with_distributed_worker_plan_rewrite_handler(refuse_writes)
            .with_distributed_user_codec(crate::engine::codec::RetentionCodec);
        // ... and reach them over TLS when the cluster uses it.
        if let Some(tls) = &self.engine.worker_tls {
            builder = builder.with_distributed_channel_resolver(tls.clone());
        }
        let mut state = builder.build();
        register_functions(&mut state).map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(state)
    }
}

/// A worker only reads: a fragment holding a write (`DataSinkExec`) is refused. Each fragment's
/// operators are logged at debug level.
fn refuse_writes(
    ev: WorkerPlanRewriteEvent,
) -> std::result::Result<WorkerPlanRewriteEventResponse, DataFusionError> {
    let mut operators = Vec::new();
    ev.plan.apply(|node: &Arc<dyn ExecutionPlan>| {
        operators.push(node.name());
        Ok(TreeNodeRecursion::Continue)
    })?;
    if let Some(name) = operators.iter().find(|n| **n == "DataSinkExec") {
        return Err(DataFusionError::Plan(format!(
            "a retention worker only reads: refused a plan fragment holding {name}"
        )));
    }
    tracing::debug!(operators = %operators.join(","), "plan fragment received");
    Ok(WorkerPlanRewriteEventResponse::new(ev.plan))
}

/// The worker's certificate and key (PEM files), when it serves over TLS.
#[derive(Debug, Clone)]
pub struct WorkerIdentity {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl WorkerIdentity {
    fn server_config(&self) -> Result<tonic::transport::ServerTlsConfig> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|source| Error::ReadFile {
                path: path.to_path_buf(),
                source,
            })
        };
        crate::engine::cluster::install_tls_provider();
        let identity = tonic::transport::Identity::from_pem(read(&self.cert)?, read(&self.key)?);
        Ok(tonic::transport::ServerTlsConfig::new().identity(identity))
    }
}

/// Serve plan fragments on `listener` until `stop` resolves; `token` (when some) must be on every
/// request, over TLS with `identity`. Fragments run on `engine`'s runtime: its stores, memory
/// limit and spill directory.
pub async fn serve_worker(
    engine: Engine,
    listener: tokio::net::TcpListener,
    token: Option<WorkerToken>,
    identity: Option<&WorkerIdentity>,
    stop: impl Future<Output = ()> + Send,
) -> Result<()> {
    // Buckets beyond the project's own roots are found from the environment, on first use.
    let runtime = engine.runtime_with(
        engine.runtime.memory_pool.clone(),
        Arc::new(crate::store::DiscoveringRegistry::new(
            engine.runtime.object_store_registry.clone(),
            engine.stores.clone(),
        )),
    );
    let worker = Worker::from_session_builder(WorkerSessions {
        engine,
        token: token.clone(),
    })
    .with_runtime_env(runtime);
    let check = move |request: tonic::Request<()>| match &token {
        Some(t) if !t.admits(request.metadata().as_ref().get(AUTHORIZATION)) => {
            tracing::warn!("refused a request without the worker token");
            Err(tonic::Status::unauthenticated(format!(
                "this worker needs the token in {TOKEN_VAR}"
            )))
        }
        _ => Ok(request),
    };
    let mut server = tonic::transport::Server::builder();
    if let Some(identity) = identity {
        server = server
            .tls_config(identity.server_config()?)
            .map_err(|e| Error::Worker {
                message: format!("TLS with {}: {e}", identity.cert.display()),
                source: Some(Box::new(e)),
            })?;
    }
    server
        .layer(tonic::service::InterceptorLayer::new(check))
        .add_service(worker.into_worker_server())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stop,
        )
        .await
        .map_err(|e| Error::Worker {
            message: format!("stopped: {e}"),
            source: Some(Box::new(e)),
        })
}

/// Bind the worker's address (port 0 picks a free one); returns the listener and where it is.
pub async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    crate::listen::listen(addr)
        .await
        .map_err(|e| Error::Worker {
            message: format!("cannot listen on {addr}: {e}"),
            source: Some(Box::new(e)),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_runs_reads_and_refuses_writes() {
        use datafusion::prelude::SessionContext;
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a INT) AS VALUES (1), (2)")
            .await
            .unwrap();
        let config = ctx.state().config().clone();
        let fragment = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                ctx.sql(sql)
                    .await
                    .unwrap()
                    .create_physical_plan()
                    .await
                    .unwrap()
            }
        };
        let read = fragment("SELECT sum(a) FROM t").await;
        let kept = refuse_writes(WorkerPlanRewriteEvent {
            plan: read.clone(),
            session_config: &config,
        })
        .unwrap();
        assert!(Arc::ptr_eq(&kept.plan, &read));
        let write = fragment("INSERT INTO t VALUES (3)").await;
        let e = refuse_writes(WorkerPlanRewriteEvent {
            plan: write,
            session_config: &config,
        })
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("only reads") && e.contains("DataSinkExec"),
            "{e}"
        );
    }
}
