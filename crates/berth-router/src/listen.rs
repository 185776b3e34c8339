//! Accepting connections and handing each request to route → balance → upstream.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Request, Response, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::pages;
use crate::route::{RouteTable, app_from_host};
use crate::upstream::{ProxyBody, Upstream};

struct RouterState {
    table: watch::Receiver<Arc<RouteTable>>,
    upstream: Upstream,
    domain_suffix: String,
    turn: AtomicUsize,
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
        upstream: Upstream::new(),
        domain_suffix,
        turn: AtomicUsize::new(0),
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
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, request, client).await) }
            });
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    state: &RouterState,
    request: Request<Incoming>,
    client: SocketAddr,
) -> Response<ProxyBody> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri().host())
        .map(str::to_string);
    let Some(host) = host else {
        return pages::no_host();
    };
    let Some(app) = app_from_host(&host, &state.domain_suffix) else {
        return pages::unknown_app(&host);
    };
    let app = app.to_ascii_lowercase();
    let table = state.table.borrow().clone();
    let Some(route) = table.apps.get(&app) else {
        return pages::unknown_app(&host);
    };
    route.traffic.count_request();
    let turn = state.turn.fetch_add(1, Ordering::Relaxed);
    state
        .upstream
        .forward(&app, route, request, client, turn)
        .await
}
