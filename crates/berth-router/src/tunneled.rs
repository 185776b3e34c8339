//! Connections that arrive through a tunnel (berth-tunnel's home side)
//! rather than a socket: served like the listener's own, each from the
//! client address its PROXY v2 header named.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};

use crate::listen::{Edge, accept, http_builder, listener_state};
use crate::route::RouteTable;

/// Serves the connections `connections` delivers until `shutdown`
/// completes or the sender goes: HTTPS when `edge` has TLS settings.
pub async fn serve_tunneled<S>(
    mut connections: mpsc::Receiver<(S, SocketAddr)>,
    table: watch::Receiver<Arc<RouteTable>>,
    domain_suffix: String,
    edge: Edge,
    shutdown: impl Future<Output = ()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (state, acceptor) = listener_state(table, domain_suffix, edge);
    let builder = Arc::new(http_builder());
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            received = connections.recv() => match received {
                Some(connection) => connection,
                None => break,
            },
            () = &mut shutdown => break,
        };
        accept(&state, &builder, acceptor.as_ref(), stream, client);
    }
}
