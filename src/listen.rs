//! Binding a TCP listener for the servers (the daemon's HTTP, the SQL endpoints, a worker): port 0
//! picks a free port, and the address actually bound is returned for the log and for tests.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Listen on `addr`; returns the listener and the address it is bound to. Each server maps the
/// error to its own `Error` variant, naming `addr`.
pub async fn listen(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}
