//! Accepting connections and handing each request to route → balance → upstream.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::pages;
use crate::route::{RouteTable, app_from_host};
use crate::upstream::{ConnectionCache, ProxyBody, Upstream};

struct RouterState {
    table: watch::Receiver<Arc<RouteTable>>,
    upstream: Arc<Upstream>,
    domain_suffix: String,
}

/// Serves the router on `listener` until `shutdown` completes. Apps are
/// found by `Host`: `APP.localhost` or `APP.<domain_suffix>`.
pub async fn serve(
    listener: TcpListener,
    table: watch::Receiver<Arc<RouteTable>>,
    domain_suffix: String,
    shutdown: impl Future<Output = ()>,
) {
    let state = Arc::new(RouterState {
        table,
        upstream: Arc::new(Upstream::new()),
        domain_suffix,
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(30));
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "router accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let cache = ConnectionCache::new(state.upstream.clone(), client);
            let service = service_fn(move |request| {
                let state = state.clone();
                let cache = cache.clone();
                async move { Ok::<_, Infallible>(handle(&state, request, &cache).await) }
            });
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

thread_local! {
    /// Rotates tie-breaks between equally idle instances; per thread, so no
    /// cache line bounces between cores on every request.
    static TURN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

async fn handle(
    state: &RouterState,
    request: Request<Incoming>,
    cache: &Arc<ConnectionCache>,
) -> Response<ProxyBody> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri().host());
    let Some(host) = host else {
        return pages::no_host();
    };
    let Some(app) = app_from_host(host, &state.domain_suffix) else {
        return pages::unknown_app(host);
    };
    let table = state.table.borrow().clone();
    let route = match table.apps.get(app) {
        Some(route) => route,
        None => match table.apps.get(&app.to_ascii_lowercase()) {
            Some(route) => route,
            None => return pages::unknown_app(host),
        },
    };
    let app = app.to_string();
    route.traffic.count_request();
    let turn = TURN.with(|turn| {
        let next = turn.get().wrapping_add(1);
        turn.set(next);
        next
    });
    state
        .upstream
        .forward(&app, route, request, turn, cache)
        .await
}

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
            let stop = shutdown();
            let thread = std::thread::Builder::new()
                .name(format!("berth-router-{index}"))
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
                            Ok(listener) => serve(listener, table, suffix, stop).await,
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
