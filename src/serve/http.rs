//! The daemon's HTTP endpoint (axum), on 127.0.0.1 unless told otherwise: `/healthz`,
//! `/metrics` (OpenMetrics text) and `/runs` (the newest rows of `_runs` as JSON).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use datafusion::logical_expr::col;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::ledger;
use crate::serve::daemon::Daemon;
use crate::store::system::RUNS_TABLE;

/// Most rows `/runs` returns.
const MAX_RUNS: usize = 1000;

/// Bind `addr` (port 0 picks a free one); the bound address is logged and returned.
pub async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let (listener, bound) = crate::listen::listen(addr)
        .await
        .map_err(|e| Error::Schedule {
            message: format!("cannot listen on {addr}: {e}"),
            source: Some(Box::new(e)),
        })?;
    tracing::info!(addr = %bound, "http listening: /healthz /metrics /runs");
    Ok((listener, bound))
}

/// Serve the endpoint until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    daemon: Arc<Daemon>,
    stop: CancellationToken,
) -> Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/runs", get(runs))
        .with_state(daemon);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .map_err(|e| Error::Schedule {
            message: format!("http: {e}"),
            source: Some(Box::new(e)),
        })
}

async fn metrics(State(daemon): State<Arc<Daemon>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        daemon.metrics.encode(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    limit: Option<usize>,
}

/// The newest `limit` (default 50) rows of `_runs`, newest first, as a JSON array.
async fn runs(State(daemon): State<Arc<Daemon>>, Query(q): Query<RunsQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).min(MAX_RUNS);
    match recent_runs(&daemon, limit).await {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            crate::redact::error_text(&e),
        )
            .into_response(),
    }
}

async fn recent_runs(daemon: &Daemon, limit: usize) -> Result<Vec<u8>> {
    let engine = &daemon.ws.engine;
    let Some(ctx) = ledger::session(engine, &engine.project.curated).await? else {
        return Ok(b"[]".to_vec());
    };
    let batches = ctx
        .table(RUNS_TABLE)
        .await?
        .sort(vec![
            col("started_at").sort(false, false),
            col("job").sort(true, false),
        ])?
        .limit(0, Some(limit))?
        .collect()
        .await?;
    let mut w = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    for b in &batches {
        w.write(b)?;
    }
    w.finish()?;
    let out = w.into_inner();
    Ok(if out.is_empty() { b"[]".to_vec() } else { out })
}
