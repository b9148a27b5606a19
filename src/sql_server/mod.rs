//! `retention serve-sql`: the curated tables over the PostgreSQL wire protocol and Arrow Flight
//! SQL, read-only and authenticated, for BI tools. This module owns the validated endpoint settings, the shared
//! session the endpoints plan in, and the listeners' lifecycle.

pub mod catalog;
pub mod compat;
pub mod describe;
pub mod flight;
pub mod limits;
pub mod pg;
pub mod prepared;
pub mod users;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::pgwire;
use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::tokio_rustls::rustls;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Error, Result};
use crate::plan::workspace::Workspace;
use crate::project::config::{PROJECT_FILE, SqlServerSettings};
use crate::sql_server::catalog::{CATALOG, PUBLIC, ServedCatalog};
use crate::sql_server::limits::QueryLimits;
use crate::sql_server::pg::{NoAuth, PgHandlers, QueryService, scram_startup};
use crate::sql_server::users::{FailedLogins, Users};
use crate::values::{MemoryLimit, physical_memory};

/// Where the PostgreSQL endpoint listens when nothing says otherwise.
pub const DEFAULT_PG: &str = "127.0.0.1:5433";
/// Where the Flight SQL endpoint listens when nothing says otherwise.
pub const DEFAULT_FLIGHT: &str = "127.0.0.1:50051";
/// How often the served catalog looks for tables published for the first time.
pub const CATALOG_REFRESH: Duration = Duration::from_secs(10);
/// Failed logins from one address before it must wait, and the window they are counted in.
pub const MAX_FAILED_LOGINS: usize = 5;
pub const FAILED_LOGIN_WINDOW: Duration = Duration::from_secs(60);

/// The validated settings of the endpoints.
#[derive(Debug, Clone)]
pub struct SqlServerConfig {
    /// The PostgreSQL endpoint's address, if it runs.
    pub pg: Option<SocketAddr>,
    /// The Flight SQL endpoint's address, if it runs.
    pub flight: Option<SocketAddr>,
    /// Who may log in; `None` with `--no-auth` (loopback only).
    pub users: Option<Users>,
    /// Certificate chain and key, PEM.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub limits: QueryLimits,
    pub max_connections: usize,
    /// Serve the raw sources as schema `raw`.
    pub serve_raw: bool,
}

impl SqlServerConfig {
    /// Validate `settings` (flags over file); `endpoints.no_pg` and `endpoints.no_flight` turn an
    /// endpoint off and `no_auth` drops logins, which only loopback addresses may do.
    pub fn new(
        settings: SqlServerSettings,
        root: &Path,
        endpoints: Endpoints,
        no_auth: bool,
    ) -> Result<SqlServerConfig> {
        let bad = |key: &str, message: String| Error::Config {
            path: root.join(PROJECT_FILE),
            key: format!("serve_sql.{key}"),
            message,
        };
        let address = |key: &str, text: &str| -> Result<SocketAddr> {
            text.parse().map_err(|e| {
                bad(
                    key,
                    format!(
                        "`{text}` is not an address ({e}): expected IP:PORT, e.g. \"{DEFAULT_PG}\""
                    ),
                )
            })
        };
        let pg = match (endpoints.no_pg, settings.pg.as_deref()) {
            (true, _) => None,
            (false, text) => Some(address("pg", text.unwrap_or(DEFAULT_PG))?),
        };
        let flight = match (endpoints.no_flight, settings.flight.as_deref()) {
            (true, _) => None,
            (false, text) => Some(address("flight", text.unwrap_or(DEFAULT_FLIGHT))?),
        };
        if pg.is_none() && flight.is_none() {
            return Err(Error::Argument {
                flag: "--no-pg",
                key: "serve-sql".into(),
                message: "both endpoints are turned off (--no-pg and --no-flight)".into(),
            });
        }
        let timeout = match settings.statement_timeout.as_deref() {
            None => Duration::from_secs(300),
            Some(t) => humantime::parse_duration(t).map_err(|e| {
                bad(
                    "statement_timeout",
                    format!("`{t}` is not a duration ({e}): expected e.g. \"90s\" or \"5m\""),
                )
            })?,
        };
        let memory_text = settings.query_memory_limit.as_deref().unwrap_or("25%");
        let memory: MemoryLimit = memory_text
            .parse()
            .map_err(|e: String| bad("query_memory_limit", e))?;
        let users = if no_auth {
            if let Some(addr) = pg.filter(|a| !a.ip().is_loopback()) {
                return Err(Error::Argument {
                    flag: "--no-auth",
                    key: "serve-sql".into(),
                    message: format!(
                        "--no-auth is only allowed on a loopback address, and the PostgreSQL endpoint would listen on {addr}"
                    ),
                });
            }
            None
        } else {
            let file = settings.users_file.as_deref().map(|f| root.join(f));
            let users = Users::load(file.as_deref())?;
            if users.is_empty() {
                return Err(Error::Argument {
                    flag: "--users",
                    key: "serve-sql".into(),
                    message: "no SQL users: give a users file (--users FILE, made with `retention sql-user NAME`) or RETENTION_SQL_USER and RETENTION_SQL_PASSWORD, or --no-auth on a loopback address".into(),
                });
            }
            Some(users)
        };
        let tls = match (settings.tls_cert, settings.tls_key) {
            (Some(c), Some(k)) => Some((root.join(c), root.join(k))),
            (None, None) => None,
            _ => return Err(bad("tls_cert", "tls_cert and tls_key go together".into())),
        };
        Ok(SqlServerConfig {
            pg,
            flight,
            users,
            tls,
            limits: QueryLimits {
                memory: memory.bytes(physical_memory()),
                timeout,
            },
            max_connections: settings.max_connections.unwrap_or(64).max(1),
            serve_raw: settings.raw.unwrap_or(false),
        })
    }
}

/// Which endpoints are turned off.
#[derive(Debug, Clone, Copy, Default)]
pub struct Endpoints {
    pub no_pg: bool,
    pub no_flight: bool,
}

/// The session every endpoint plans in: catalog `retention` (schemas `public`, `closed`, `raw`
/// when served, `pg_catalog` and `information_schema`), retention's SQL functions, and the
/// project's engine settings.
pub async fn served_session(
    ws: &Workspace,
    serve_raw: bool,
) -> Result<(Arc<SessionContext>, Arc<ServedCatalog>)> {
    let catalog = Arc::new(ServedCatalog::new(ws, serve_raw).await?);
    let config = ws
        .engine
        .config()?
        .with_default_catalog_and_schema(CATALOG, PUBLIC);
    let ctx = ws.engine.session_with(config, &[])?;
    ctx.register_catalog(CATALOG, catalog.clone());
    setup_pg_catalog(&ctx, CATALOG, EmptyContextProvider).map_err(|e| Error::DataFusion(*e))?;
    compat::register_functions(&ctx);
    describe::describe_catalog(&ctx, &catalog).await?;
    Ok((Arc::new(ctx), catalog))
}

/// Running endpoints: their bound addresses, and how to stop them.
pub struct Running {
    pub pg: Option<SocketAddr>,
    pub flight: Option<SocketAddr>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Running {
    /// Stop accepting, close every connection, and wait for the tasks to end.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Bind the endpoints (a port of 0 is chosen now and returned) and serve until stopped.
pub async fn start(ws: &Workspace, config: SqlServerConfig) -> Result<Running> {
    let (ctx, catalog) = served_session(ws, config.serve_raw).await?;
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let mut running = Running {
        pg: None,
        flight: None,
        stop: stop.clone(),
        tasks: tasks.clone(),
    };
    tasks.spawn(refresh_catalog(catalog, stop.clone()));
    let failed = Arc::new(FailedLogins::new(MAX_FAILED_LOGINS, FAILED_LOGIN_WINDOW));
    if let Some(addr) = config.flight {
        running.flight =
            Some(start_flight(&config, addr, ctx.clone(), failed.clone(), &stop, &tasks).await?);
    }
    if let Some(addr) = config.pg {
        let (listener, bound) = bind("postgres", addr).await?;
        let tls = config
            .tls
            .as_ref()
            .map(|(c, k)| tls_acceptor(c, k))
            .transpose()?;
        let endpoint = PgEndpoint {
            queries: Arc::new(QueryService::new(ctx.clone(), config.limits)),
            failed,
            tls,
            connections: Arc::new(Semaphore::new(config.max_connections)),
            max_connections: config.max_connections,
        };
        tracing::info!(address = %bound, tls = endpoint.tls.is_some(), auth = config.users.is_some(), "postgres endpoint listening");
        tasks.spawn(endpoint.accept(listener, config.users.clone(), stop.clone(), tasks.clone()));
        running.pg = Some(bound);
    }
    Ok(running)
}

/// Serve Flight SQL on `addr` until `stop`; returns the bound address.
async fn start_flight(
    config: &SqlServerConfig,
    addr: SocketAddr,
    ctx: Arc<SessionContext>,
    failed: Arc<FailedLogins>,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<SocketAddr> {
    let (listener, bound) = bind("flight", addr).await?;
    let users = config.users.clone().map(Arc::new);
    let service = flight::FlightSql::new(ctx, config.limits, users, failed);
    let mut server = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(config.max_connections);
    if let Some((cert, key)) = &config.tls {
        server = server
            .tls_config(flight_tls(cert, key)?)
            .map_err(|e| Error::SqlServer {
                endpoint: "flight".into(),
                message: format!("TLS: {e}"),
                source: Some(Box::new(e)),
            })?;
    }
    let serving = server
        .add_service(arrow_flight::flight_service_server::FlightServiceServer::new(service))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stop.clone().cancelled_owned(),
        );
    tracing::info!(address = %bound, tls = config.tls.is_some(), auth = config.users.is_some(), "flight sql endpoint listening");
    tasks.spawn(async move {
        if let Err(e) = serving.await {
            tracing::error!(error = %e, "flight sql endpoint stopped");
        }
    });
    Ok(bound)
}

async fn bind(endpoint: &str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    crate::listen::listen(addr)
        .await
        .map_err(|e| Error::SqlServer {
            endpoint: endpoint.into(),
            message: format!("cannot listen on {addr}: {e}"),
            source: Some(Box::new(e)),
        })
}

/// Flight's TLS from the same PEM files.
fn flight_tls(cert: &Path, key: &Path) -> Result<tonic::transport::ServerTlsConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| Error::ReadFile {
            path: path.to_path_buf(),
            source,
        })
    };
    let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
    Ok(tonic::transport::ServerTlsConfig::new().identity(identity))
}

/// Look for newly published tables every `CATALOG_REFRESH` until stopped.
async fn refresh_catalog(catalog: Arc<ServedCatalog>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(CATALOG_REFRESH) => {}
        }
        if let Err(e) = catalog.refresh().await {
            tracing::warn!(error = %e, "catalog refresh failed");
        }
    }
}

/// One PostgreSQL endpoint's shared parts.
struct PgEndpoint {
    queries: Arc<QueryService>,
    failed: Arc<FailedLogins>,
    tls: Option<TlsAcceptor>,
    connections: Arc<Semaphore>,
    max_connections: usize,
}

impl PgEndpoint {
    async fn accept(
        self,
        listener: TcpListener,
        users: Option<Users>,
        stop: CancellationToken,
        tasks: TaskTracker,
    ) {
        let users = users.map(Arc::new);
        let no_auth = Arc::new(NoAuth);
        loop {
            let (socket, peer) = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                },
            };
            let tls = self.tls.clone();
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                tracing::warn!(address = %peer, max = self.max_connections, "connection refused: too many connections");
                let refuse = Arc::new(PgHandlers::new(
                    self.queries.clone(),
                    Arc::new(pg::TooManyConnections(self.max_connections)),
                    self.failed.clone(),
                ));
                tasks.spawn(pgwire::tokio::process_socket(socket, tls, refuse));
                continue;
            };
            let stop = stop.clone();
            let connection = match &users {
                Some(u) => {
                    let login = Arc::new(scram_startup(u.clone(), self.failed.clone()));
                    serve_socket(
                        socket,
                        tls,
                        PgHandlers::new(self.queries.clone(), login, self.failed.clone()),
                    )
                }
                None => serve_socket(
                    socket,
                    tls,
                    PgHandlers::new(self.queries.clone(), no_auth.clone(), self.failed.clone()),
                ),
            };
            tasks.spawn(async move {
                let _permit = permit;
                tokio::select! {
                    () = stop.cancelled() => {}
                    result = connection => if let Err(e) = result {
                        tracing::debug!(address = %peer, error = %e, "connection ended with an error");
                    }
                }
            });
        }
    }
}

fn serve_socket<S: pgwire::api::auth::StartupHandler + 'static>(
    socket: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    handlers: PgHandlers<S>,
) -> futures::future::BoxFuture<'static, std::io::Result<()>> {
    Box::pin(pgwire::tokio::process_socket(
        socket,
        tls,
        Arc::new(handlers),
    ))
}

/// A TLS acceptor from PEM files, with rustls's ring provider installed explicitly (both ring
/// and aws-lc-rs are compiled in through dependencies, so rustls cannot pick one itself).
fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bad = |path: &Path, e: String| Error::SqlServer {
        endpoint: "tls".into(),
        message: format!("{}: {e}", path.display()),
        source: None,
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| bad(cert, format!("expected a PEM certificate chain ({e})")))?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| bad(key, format!("expected a PEM private key ({e})")))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            bad(
                cert,
                format!("certificate and key do not make a TLS config ({e})"),
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
