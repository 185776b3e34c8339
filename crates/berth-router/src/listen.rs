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

use std::sync::atomic::Ordering;

use crate::balance::{InFlight, pick};
use crate::pages;
use crate::route::{AppRoute, RouteTable};
use crate::upstream::{ConnectionCache, Forwarded, ProxyBody, Upstream};

pub(crate) struct RouterState {
    table: watch::Receiver<Arc<RouteTable>>,
    upstream: Arc<Upstream>,
    domain_suffix: String,
    acme_http: Option<AcmeAnswers>,
    /// This listener is HTTPS.
    secure: bool,
    /// The HTTPS port plain requests of `force_https` apps are sent to.
    https_port: Option<u16>,
    /// Proxies whose `X-Forwarded-*` headers are believed.
    trusted_proxies: Arc<[berth_proto::IpRange]>,
}

/// The key authorization for an ACME HTTP-01 token, while its challenge runs.
pub type AcmeAnswers = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

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
    let mut state = RouterState::new(table, domain_suffix);
    if let Some(state) = Arc::get_mut(&mut state) {
        state.acme_http = edge.acme_http;
        state.secure = edge.tls.is_some();
        state.https_port = edge.https_port;
        state.trusted_proxies = edge.trusted_proxies;
    }
    let acceptor = edge.tls.map(tokio_rustls::TlsAcceptor::from);
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
        let Some(acceptor) = &acceptor else {
            tokio::spawn(serve_connection(
                state.clone(),
                builder.clone(),
                stream,
                client,
                false,
            ));
            continue;
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
}

impl RouterState {
    pub(crate) fn new(
        table: watch::Receiver<Arc<RouteTable>>,
        domain_suffix: String,
    ) -> Arc<RouterState> {
        Arc::new(RouterState {
            table,
            upstream: Arc::new(Upstream::new()),
            domain_suffix,
            acme_http: None,
            secure: false,
            https_port: None,
            trusted_proxies: Arc::from(Vec::new()),
        })
    }
}

/// How the router speaks HTTP: 1.1 with keep-alive (30 s to send the
/// head), 2, and upgrades.
pub(crate) fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .timer(hyper_util::rt::TokioTimer::new())
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
    if !route.edge.is_empty() {
        use crate::edge_rules::Verdict;
        let client = if cache.trusted {
            crate::upstream::forwarded_client(
                cache.client,
                request.headers(),
                &state.trusted_proxies,
            )
        } else {
            cache.client
        };
        match route.edge.check(
            &route.traffic.edge,
            client,
            request.uri().path(),
            request.headers(),
        ) {
            Verdict::Pass => {}
            Verdict::Denied => return pages::forbidden(app),
            Verdict::Limited(seconds) => return pages::too_many(app, seconds),
            Verdict::TooLarge => return pages::too_large(app, route.edge.max_body),
            Verdict::LengthRequired => return pages::length_required(app),
        }
    }
    if route.force_https
        && !state.secure
        && let Some(port) = state.https_port
        && let Some(location) = https_location(host, port, &request)
    {
        return pages::redirect(location);
    }
    route.traffic.count_request();
    if !route.statics.is_empty() {
        let statics = route.statics.clone();
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let app = app.clone();
        let host = host.to_string();
        drop(table);
        if let Some(response) = crate::statics::serve(&statics, &method, &path).await {
            return response;
        }
        return to_app(state, &app, &host, request, cache, turn).await;
    }
    if let Some(guard) = admit(&route.backends, turn, route.admission.hard_limit) {
        let forwarded = state
            .upstream
            .forward(app, route, request, guard, turn, cache)
            .await;
        return after_forward(state, app, forwarded, cache, turn).await;
    }
    let app = app.clone();
    let host = host.to_string();
    drop(table);
    hold(state, &app, &host, request, cache, turn).await
}

/// A request for `app` that is not a static file: forwarded when an
/// instance has room, else held.
async fn to_app(
    state: &RouterState,
    app: &str,
    host: &str,
    request: Request<Incoming>,
    cache: &Arc<ConnectionCache>,
    turn: usize,
) -> Response<ProxyBody> {
    let table = state.table.borrow().clone();
    let Some(route) = table.apps.get(app) else {
        return pages::unknown_app(host);
    };
    if let Some(guard) = admit(&route.backends, turn, route.admission.hard_limit) {
        let forwarded = state
            .upstream
            .forward(app, route, request, guard, turn, cache)
            .await;
        drop(table);
        return after_forward(state, app, forwarded, cache, turn).await;
    }
    drop(table);
    hold(state, app, host, request, cache, turn).await
}

/// The answer of a request that is not held again: an unreachable
/// instance is the router's 502.
fn last_try(route: &AppRoute, app: &str, forwarded: Forwarded) -> Response<ProxyBody> {
    match forwarded {
        Forwarded::Answered(response) => response,
        Forwarded::Unreached { instance, why, .. } => {
            route.traffic.count_router_error();
            pages::bad_gateway(app, &instance, &why)
        }
    }
}

/// How long a request that found its instance dead waits for another.
const UNREACHED_HOLD: std::time::Duration = std::time::Duration::from_secs(10);

/// The answer, or — when the instance could not be reached and nothing
/// was sent (it just died) — the request held until the reconciler's next
/// route table brings an instance (the dead one out, a replacement in),
/// then tried once more, as a cold start is held.
async fn after_forward(
    state: &RouterState,
    app: &str,
    forwarded: Forwarded,
    cache: &Arc<ConnectionCache>,
    turn: usize,
) -> Response<ProxyBody> {
    let (request, instance, why) = match forwarded {
        Forwarded::Answered(response) => return response,
        Forwarded::Unreached {
            request,
            instance,
            why,
        } => (request, instance, why),
    };
    let mut changes = state.table.clone();
    let hold = changes
        .borrow_and_update()
        .apps
        .get(app)
        .map_or(UNREACHED_HOLD, |route| {
            route.admission.hold_timeout.min(UNREACHED_HOLD)
        });
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            break;
        }
        let table = changes.borrow_and_update().clone();
        let Some(route) = table.apps.get(app) else {
            break;
        };
        let Some(guard) = admit(&route.backends, turn, route.admission.hard_limit) else {
            continue;
        };
        let forwarded = state
            .upstream
            .forward(app, route, request, guard, turn, cache)
            .await;
        return last_try(route, app, forwarded);
    }
    if let Some(route) = state.table.borrow().apps.get(app) {
        route.traffic.count_router_error();
    }
    pages::bad_gateway(app, &instance, &why)
}

/// The slow path: no instance can take the request now. It waits (for a
/// cold start or a free slot) or gets the router's answer.
async fn hold(
    state: &RouterState,
    app: &str,
    host: &str,
    request: Request<Incoming>,
    cache: &Arc<ConnectionCache>,
    turn: usize,
) -> Response<ProxyBody> {
    let mut table_changes = state.table.clone();
    let started = std::time::Instant::now();
    let mut held: Option<Held> = None;
    loop {
        let table = table_changes.borrow_and_update().clone();
        let Some(route) = table.apps.get(app) else {
            return pages::unknown_app(host);
        };
        let limit = route.admission.hard_limit;
        if let Some(guard) = admit(&route.backends, turn, limit) {
            drop(held);
            let forwarded = state
                .upstream
                .forward(app, route, request, guard, turn, cache)
                .await;
            return last_try(route, app, forwarded);
        }
        let live = route.backends.iter().any(|backend| !backend.is_retired());
        let cold = !live;
        if cold {
            let Some(wake) = &route.admission.wake else {
                route.traffic.count_router_error();
                return pages::unavailable(app, route.unavailable_reason.as_deref());
            };
            if route.failing {
                route.traffic.count_router_error();
                return pages::start_failed(app, route.unavailable_reason.as_deref());
            }
            if held.as_ref().is_none_or(|held| !held.woke) {
                (wake.0)(app);
            }
        } else if limit.is_none() {
            // Every live instance was retired between the table and the pick.
            tokio::task::yield_now().await;
            continue;
        }
        if held.is_none() {
            let waiting = route.traffic.waiting.fetch_add(1, Ordering::Relaxed) + 1;
            held = Some(Held {
                traffic: route.traffic.clone(),
                woke: false,
            });
            if waiting > route.admission.queue_limit {
                route.traffic.count_router_error();
                return pages::busy(app, "too many requests are already waiting");
            }
        }
        let held = held.as_mut().expect("held above");
        held.woke |= cold;
        let left = route
            .admission
            .hold_timeout
            .saturating_sub(started.elapsed());
        if left.is_zero() {
            route.traffic.count_router_error();
            return if cold {
                pages::start_failed(
                    app,
                    Some(&format!(
                        "no instance started within {}s",
                        route.admission.hold_timeout.as_secs()
                    )),
                )
            } else {
                pages::busy(app, "every instance is at its hard limit")
            };
        }
        // Slots free up without a table change: poll for them briefly; a
        // start shows as a new table.
        let poll = if cold {
            std::time::Duration::from_millis(50)
        } else {
            std::time::Duration::from_millis(2)
        };
        tokio::select! {
            _ = table_changes.changed() => {}
            () = tokio::time::sleep(poll.min(left)) => {}
        }
    }
}

/// A request held at the router, counted in the app's `waiting` until it
/// is sent on or answered.
struct Held {
    traffic: Arc<crate::route::AppTraffic>,
    woke: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.traffic.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes a slot on the least busy instance under the hard limit.
fn admit(
    backends: &[Arc<crate::balance::Backend>],
    turn: usize,
    limit: Option<usize>,
) -> Option<crate::balance::InFlight> {
    for attempt in 0..backends.len().max(1) {
        let backend = pick(backends, turn + attempt, None)?;
        if let Some(guard) = InFlight::try_start_limited(backend, limit) {
            return Some(guard);
        }
        if limit.is_none() {
            // Retired between the pick and the count; try the next one.
            continue;
        }
    }
    // Under a limit the least busy one was full; the others may not be.
    backends
        .iter()
        .filter(|backend| !backend.is_retired())
        .find_map(|backend| InFlight::try_start_limited(backend.clone(), limit))
}
