//! The router's listening sockets: one per serving thread, each thread
//! with a runtime of its own.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::listen::{Edge, serve};
use crate::route::RouteTable;

/// The router's listening sockets: one per serving thread, all on one port
/// (`SO_REUSEPORT`), so the kernel spreads connections over the threads.
pub struct RouterSockets {
    sockets: Vec<std::net::TcpListener>,
    addr: SocketAddr,
}

impl RouterSockets {
    /// Binds `threads` sockets on `addr` (port 0 picks one free port for all).
    pub fn bind(addr: SocketAddr, threads: usize) -> std::io::Result<RouterSockets> {
        let mut sockets = Vec::with_capacity(threads.max(1));
        let mut bound = addr;
        for _ in 0..threads.max(1) {
            let socket = if bound.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.set_nodelay(true)?;
            socket.bind(bound)?;
            let listener = socket.listen(4096)?;
            bound = listener.local_addr()?;
            sockets.push(listener.into_std()?);
        }
        Ok(RouterSockets {
            sockets,
            addr: bound,
        })
    }

    /// The address every socket listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves on one thread per socket, each with its own single-threaded
    /// runtime, so a request and its upstream connection never cross threads
    /// (as nginx's workers do). Returns when `shutdown` completes on every
    /// thread; `shutdown` is called once per thread.
    pub fn serve<F, S>(
        self,
        table: watch::Receiver<Arc<RouteTable>>,
        domain_suffix: String,
        edge: Edge,
        shutdown: S,
    ) -> std::io::Result<Vec<std::thread::JoinHandle<()>>>
    where
        S: Fn() -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let mut threads = Vec::with_capacity(self.sockets.len());
        for (index, socket) in self.sockets.into_iter().enumerate() {
            let table = table.clone();
            let suffix = domain_suffix.clone();
            let edge = edge.clone();
            let stop = shutdown();
            let thread = std::thread::Builder::new()
                .name(format!(
                    "berth-{}-{index}",
                    if edge.tls.is_some() {
                        "https"
                    } else {
                        "router"
                    }
                ))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(err) => {
                            tracing::error!(error = %err, "cannot start a router thread");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        match TcpListener::from_std(socket) {
                            Ok(listener) => serve(listener, table, suffix, edge, stop).await,
                            Err(err) => {
                                tracing::error!(error = %err, "cannot use the router socket")
                            }
                        }
                    });
                })?;
            threads.push(thread);
        }
        Ok(threads)
    }
}
