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

use crate::dispatch::{admit, after_forward, hold, to_app};
use crate::pages;
use crate::route::{AppRoute, RouteTable};
use crate::router_state::RouterState;
pub use crate::router_state::{AcmeAnswers, HostFilter};
use crate::upstream::{ConnectionCache, ProxyBody};

/// What a listener serves besides routing: TLS, and ACME's HTTP-01 answers.
#[derive(Clone, Default)]
pub struct Edge {
    /// Serve HTTPS with these settings; `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Answers `/.well-known/acme-challenge/TOKEN` for any host.
    pub acme_http: Option<AcmeAnswers>,
    /// Where HTTPS listens: plain requests for apps with `force_https` are
    /// redirected there.
    pub https_port: Option<u16>,
    /// Proxies in front of berth (`--trusted-proxy`): the client address
    /// and `X-Forwarded-*` headers they send are believed.
    pub trusted_proxies: Arc<[berth_proto::IpRange]>,
    /// Answer only the hosts this admits (421 for others): a tunnel's
    /// connections may name only what its token serves.
    pub host_filter: Option<HostFilter>,
    /// Where access log lines go (for apps with `[logs] access`).
    pub access_log: Option<crate::measure::AccessLog>,
}

/// Where ACME's HTTP-01 asks (RFC 8555 §8.3).
const ACME_CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the router on `listener` until `shutdown` completes: HTTPS when
/// `edge` has TLS settings, else plain HTTP. Apps are found by `Host`: a custom
/// domain, `APP.localhost` or `APP.<domain_suffix>`.
pub async fn serve(
    listener: TcpListener,
    table: watch::Receiver<Arc<RouteTable>>,
    domain_suffix: String,
    edge: Edge,
    shutdown: impl Future<Output = ()>,
) {
    let (state, acceptor) = listener_state(table, domain_suffix, edge);
    let builder = Arc::new(http_builder());
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
        accept(&state, &builder, acceptor.as_ref(), stream, client);
    }
}

/// A listener's state and, for HTTPS, its TLS acceptor.
pub(crate) fn listener_state(
    table: watch::Receiver<Arc<RouteTable>>,
    domain_suffix: String,
    edge: Edge,
) -> (Arc<RouterState>, Option<tokio_rustls::TlsAcceptor>) {
    let mut state = RouterState::new(table, domain_suffix);
    if let Some(state) = Arc::get_mut(&mut state) {
        state.acme_http = edge.acme_http;
        state.secure = edge.tls.is_some();
        state.https_port = edge.https_port;
        state.trusted_proxies = edge.trusted_proxies;
        state.host_filter = edge.host_filter;
        state.access_log = edge.access_log;
    }
    (state, edge.tls.map(tokio_rustls::TlsAcceptor::from))
}

/// Serves one accepted connection in a task of its own: its TLS handshake
/// first when the listener serves HTTPS.
pub(crate) fn accept<S>(
    state: &Arc<RouterState>,
    builder: &Arc<auto::Builder<TokioExecutor>>,
    acceptor: Option<&tokio_rustls::TlsAcceptor>,
    stream: S,
    client: SocketAddr,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Some(acceptor) = acceptor else {
        tokio::spawn(serve_connection(
            state.clone(),
            builder.clone(),
            stream,
            client,
            false,
        ));
        return;
    };
    let (state, builder, acceptor) = (state.clone(), builder.clone(), acceptor.clone());
    tokio::spawn(async move {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => serve_connection(state, builder, stream, client, true).await,
            Ok(Err(err)) => tracing::debug!(%client, error = %err, "TLS handshake failed"),
            Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
        }
    });
}

/// How the router speaks HTTP: 1.1 with keep-alive (30 s to send the
/// head), 2, and upgrades.
pub(crate) fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .timer(crate::coarse_timer::CoarseTimer)
        .header_read_timeout(std::time::Duration::from_secs(30));
    builder
}

/// Serves the requests of one client connection until it closes.
pub(crate) async fn serve_connection<S>(
    state: Arc<RouterState>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: S,
    client: SocketAddr,
    secure: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let trusted = state
        .trusted_proxies
        .iter()
        .any(|range| range.contains(client.ip()));
    let cache = ConnectionCache::with_trust(state.upstream.clone(), client, secure, trusted);
    let service = service_fn(move |request| {
        let state = state.clone();
        let cache = cache.clone();
        async move { Ok::<_, Infallible>(handle(&state, request, &cache).await) }
    });
    let _ = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await;
}

thread_local! {
    /// Rotates tie-breaks between equally idle instances; per thread, so no
    /// cache line bounces between cores on every request.
    static TURN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// One year, as browsers' preload lists ask.
const HSTS: &str = "max-age=31536000";

async fn handle(
    state: &RouterState,
    request: Request<Incoming>,
    cache: &Arc<ConnectionCache>,
) -> Response<ProxyBody> {
    if let Some(admits) = &state.host_filter {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .or_else(|| request.uri().host())
            .unwrap_or_default();
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => host,
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !admits(&name) {
            return pages::misdirected(&name);
        }
    }
    if !state.secure {
        return route_request(state, request, cache).await;
    }
    let hsts = host_route(state, &request).is_some_and(|route| route.hsts);
    let mut response = route_request(state, request, cache).await;
    if hsts {
        response.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            header::HeaderValue::from_static(HSTS),
        );
    }
    response
}

/// The route of the app a request's `Host` names, if any.
fn host_route(state: &RouterState, request: &Request<Incoming>) -> Option<AppRoute> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri().host())?;
    let table = state.table.borrow().clone();
    let app = table.app_for_host(host, &state.domain_suffix)?;
    table.apps.get(app).cloned()
}

/// `https://HOST[:PORT]/PATH?QUERY` for a plain request.
fn https_location(
    host: &str,
    port: u16,
    request: &Request<Incoming>,
) -> Option<header::HeaderValue> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    let location = if port == 443 {
        format!("https://{name}{path}")
    } else {
        format!("https://{name}:{port}{path}")
    };
    header::HeaderValue::from_str(&location).ok()
}

async fn route_request(
    state: &RouterState,
    request: Request<Incoming>,
    cache: &Arc<ConnectionCache>,
) -> Response<ProxyBody> {
    if let Some(answers) = &state.acme_http
        && let Some(token) = request.uri().path().strip_prefix(ACME_CHALLENGE_PATH)
        && let Some(answer) = answers(token)
    {
        return pages::text(answer);
    }
    // RFC 9112 §3.2: a request with more than one Host is refused, so the
    // app and the router can never disagree on which it names.
    if request
        .headers()
        .get_all(header::HOST)
        .iter()
        .nth(1)
        .is_some()
    {
        return pages::bad_request("the request has more than one Host header");
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri().host());
    let Some(host) = host else {
        return pages::no_host();
    };
    // Only a host name (or address) and a port: anything else would reach
    // the app's links and redirects (`shop.evil.com/.localhost` routes to
    // shop by its first label).
    if !is_host_name(host) {
        return pages::bad_request("the Host header is not a host name");
    }
    let table = state.table.borrow().clone();
    let Some(app) = table.app_for_host(host, &state.domain_suffix) else {
        return pages::unknown_app(host);
    };
    let turn = TURN.with(|turn| {
        let next = turn.get().wrapping_add(1);
        turn.set(next);
        next
    });
    // The fast path: an instance has room now.
    let (app, route) = match table.apps.get_key_value(app) {
        Some(found) => found,
        None => match table.apps.get_key_value(&app.to_ascii_lowercase()) {
            Some(found) => found,
            None => return pages::unknown_app(host),
        },
    };
    let client = if cache.trusted {
        crate::forwarding::forwarded_client(cache.client, request.headers(), &state.trusted_proxies)
    } else {
        cache.client
    };
    let log = state
        .access_log
        .as_ref()
        .filter(|_| route.access_log)
        .cloned();
    let measure = crate::measure::Measure::start(route.traffic.clone(), log, app, &request, client);
    let response = serve_app(state, app, route, request, cache, turn, client).await;
    measure.finish(response)
}

/// Answers a request for `app`: its edge rules first, then the app.
async fn serve_app(
    state: &RouterState,
    app: &str,
    route: &AppRoute,
    request: Request<Incoming>,
    cache: &Arc<ConnectionCache>,
    turn: usize,
    client: std::net::IpAddr,
) -> Response<ProxyBody> {
    if !route.edge.is_empty() {
        use crate::edge_rules::Verdict;
        let refusal = match route.edge.check(
            &route.traffic.edge,
            client,
            request.uri().path(),
            request.headers(),
        ) {
            Verdict::Pass => None,
            Verdict::Denied => Some(pages::forbidden(app)),
            Verdict::Limited(seconds) => Some(pages::too_many(app, seconds)),
            Verdict::TooLarge => Some(pages::too_large(app, route.edge.max_body)),
            Verdict::LengthRequired => Some(pages::length_required(app)),
            Verdict::HeadersTooLarge => Some(pages::headers_too_large(app, route.edge.max_header)),
        };
        // Behind a trusted proxy the proxy holds the connections (and pools
        // them across its clients): they are not one client's.
        let refusal = refusal.or_else(|| {
            let limit = route.edge.max_connections?;
            (!cache.trusted && !counts_against(cache, &route.traffic, client, limit))
                .then(|| pages::too_many_connections(app, limit))
        });
        if let Some(mut refusal) = refusal {
            refusal
                .extensions_mut()
                .insert(crate::edge_rules::EdgeRefusal);
            return refusal;
        }
    }
    // Behind a trusted proxy that took the client's HTTPS, the request is
    // secure already: redirecting it would loop.
    let proxied_https = cache.trusted
        && request
            .headers()
            .get("x-forwarded-proto")
            .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"));
    if route.force_https
        && !state.secure
        && !proxied_https
        && let Some(port) = state.https_port
        && let Some(location) = https_location(&named_host(&request), port, &request)
    {
        return pages::redirect(location);
    }
    route.traffic.count_request();
    let Some(limit) = route.edge.request_timeout else {
        return deliver(state, app, route, request, cache, turn).await;
    };
    match tokio::time::timeout(limit, deliver(state, app, route, request, cache, turn)).await {
        Ok(response) => response,
        Err(_) => {
            route.traffic.count_router_error();
            (route.traffic.edge.timed_out).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            pages::timed_out(app, limit)
        }
    }
}

/// Whether the connection counts against the app's per-client connection
/// limit, taking a slot at its first request; `false`: the client is at the
/// limit.
fn counts_against(
    cache: &ConnectionCache,
    traffic: &Arc<crate::AppTraffic>,
    client: std::net::IpAddr,
    limit: u32,
) -> bool {
    let mut slots = cache
        .slots
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if slots.iter().any(|slot| slot.is_for(traffic)) {
        return true;
    }
    match crate::edge_rules::ConnectionSlot::take(traffic, client, limit) {
        Some(slot) => {
            slots.push(slot);
            true
        }
        None => false,
    }
}

/// Sends a request that passed the edge to the app: a static file, an
/// instance with room, or held until one has room.
async fn deliver(
    state: &RouterState,
    app: &str,
    route: &AppRoute,
    request: Request<Incoming>,
    cache: &Arc<ConnectionCache>,
    turn: usize,
) -> Response<ProxyBody> {
    if let Some(site) = &route.site {
        let range = crate::statics::range_of(request.headers());
        return crate::site::answer(site, request.method(), request.uri().path(), range).await;
    }
    if !route.statics.is_empty() {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let range = crate::statics::range_of(request.headers());
        if let Some(response) =
            crate::statics::serve_part(&route.statics, &method, &path, range).await
        {
            return response;
        }
        let host = named_host(&request);
        return to_app(state, app, &host, request, cache, turn).await;
    }
    if let Some(guard) = admit(&route.backends, turn, route.admission.hard_limit) {
        let forwarded = state
            .upstream
            .forward(app, route, request, guard, turn, cache)
            .await;
        return after_forward(state, app, forwarded, cache, turn).await;
    }
    let host = named_host(&request);
    hold(state, app, &host, request, cache, turn).await
}

/// Whether `host` is `NAME[:PORT]` or `[IPv6][:PORT]`, NAME of letters,
/// digits, `-`, `_` and `.`.
fn is_host_name(host: &str) -> bool {
    let port_ok = |port: &str| {
        !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
    };
    if let Some(v6) = host.strip_prefix('[') {
        let Some((address, rest)) = v6.split_once(']') else {
            return false;
        };
        return address.parse::<std::net::Ipv6Addr>().is_ok()
            && (rest.is_empty() || rest.strip_prefix(':').is_some_and(port_ok));
    }
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && port.is_none_or(port_ok)
}

/// The host a request names, for the pages that show it.
fn named_host(request: &Request<Incoming>) -> String {
    request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri().host())
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_host_is_a_name_or_an_address_and_a_port() {
        for good in [
            "shop.localhost",
            "Shop.Example.org:8443",
            "127.0.0.1:8080",
            "[::1]",
            "[2001:db8::1]:443",
            "shop_dev.lan",
        ] {
            assert!(super::is_host_name(good), "{good}");
        }
        for bad in [
            "",
            "shop.evil.com/.localhost",
            "shop.localhost:80:80",
            "shop.localhost:",
            "shop.localhost:http",
            "[::1",
            "[nope]:80",
            "shop localhost",
            "shop.localhost\\@evil",
        ] {
            assert!(!super::is_host_name(bad), "{bad}");
        }
    }
}
