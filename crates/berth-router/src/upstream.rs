//! Forwarding a request to an instance and streaming its answer back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::balance::{Backend, InFlight, pick};
use crate::pages;
use crate::route::AppRoute;

/// The body of every response the router sends: an instance's, streamed, or
/// one of the router's own pages; an enum, so only a measured answer
/// (one to an app, see `crate::measure`) is boxed.
pub enum ProxyBody {
    /// Streamed from an instance.
    Proxied(GuardedBody),
    /// A page of the router's own.
    Page(Full<Bytes>),
    /// Nothing (after an upgrade).
    Empty,
    /// Another body, measured as it is sent (see `crate::measure`).
    Measured(Pin<Box<dyn Body<Data = Bytes, Error = hyper::Error> + Send>>),
    /// A static file, streamed from disk.
    File(crate::file_body::FileBody),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Proxied(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Page(page) => Pin::new(page)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Measured(body) => body.as_mut().poll_frame(cx),
            ProxyBody::File(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Proxied(body) => body.is_end_stream(),
            ProxyBody::Page(page) => page.is_end_stream(),
            ProxyBody::Empty => true,
            ProxyBody::Measured(body) => body.is_end_stream(),
            ProxyBody::File(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Proxied(body) => body.size_hint(),
            ProxyBody::Page(page) => page.size_hint(),
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Measured(body) => body.size_hint(),
            ProxyBody::File(body) => body.size_hint(),
        }
    }
}

/// What became of a request [`Upstream::forward`] was given.
pub enum Forwarded {
    /// The instance's answer, or the router's own page.
    Answered(Response<ProxyBody>),
    /// No instance could be reached (one just died, say) and nothing was
    /// sent: the request, for the caller to hold until the route changes.
    Unreached {
        /// The request, as it would have been sent.
        request: Request<Incoming>,
        /// The instance last tried.
        instance: String,
        /// Why it could not be reached.
        why: String,
    },
}

impl From<Full<Bytes>> for ProxyBody {
    fn from(page: Full<Bytes>) -> ProxyBody {
        ProxyBody::Page(page)
    }
}

type Sender = SendRequest<CountedBody>;

/// Idle keep-alive connections to instances, shared by all client connections.
#[derive(Default)]
pub struct Upstream {
    idle: Mutex<HashMap<u64, Vec<Sender>>>,
}

/// Most idle connections kept per instance.
const MAX_IDLE_PER_INSTANCE: usize = 512;

/// Upstream connections one client connection is using; they go back to the
/// shared [`Upstream`] pool when the client connection ends. Requests of one
/// HTTP/1 client connection thus reuse one upstream connection with no
/// shared lock on the hot path.
pub struct ConnectionCache {
    upstream: Arc<Upstream>,
    client_ip: HeaderValue,
    /// The client's address.
    pub(crate) client: std::net::IpAddr,
    /// The client is a proxy berth trusts (`--trusted-proxy`): the
    /// `X-Forwarded-*` headers it sends are kept, this hop added.
    pub(crate) trusted: bool,
    /// `https` when the client connection is TLS, else `http`.
    proto: &'static str,
    local: Mutex<Vec<(u64, Sender)>>,
    /// The apps this connection counts against (`[edge] max_connections`).
    pub(crate) slots: Mutex<Vec<crate::edge_rules::ConnectionSlot>>,
}

impl ConnectionCache {
    /// A cache for one client connection from `client`, over TLS or not.
    pub fn new(upstream: Arc<Upstream>, client: SocketAddr, secure: bool) -> Arc<Self> {
        Self::with_trust(upstream, client, secure, false)
    }

    /// A cache for one client connection, from a trusted proxy or not.
    pub fn with_trust(
        upstream: Arc<Upstream>,
        client: SocketAddr,
        secure: bool,
        trusted: bool,
    ) -> Arc<Self> {
        let client_ip = HeaderValue::from_str(&client.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        Arc::new(ConnectionCache {
            upstream,
            client_ip,
            client: client.ip(),
            trusted,
            proto: if secure { "https" } else { "http" },
            local: Mutex::new(Vec::with_capacity(1)),
            slots: Mutex::new(Vec::new()),
        })
    }

    fn take(&self, key: u64) -> Option<Sender> {
        let mut local = self
            .local
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(index) = local.iter().position(|(cached, _)| *cached == key) {
            let (_, sender) = local.swap_remove(index);
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        drop(local);
        self.upstream.take(key)
    }

    fn give_back(&self, key: u64, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut local = self
            .local
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if local.len() < 8 {
            local.push((key, sender));
        } else {
            drop(local);
            self.upstream.give_back(key, sender);
        }
    }
}

impl Drop for ConnectionCache {
    fn drop(&mut self) {
        let local = std::mem::take(
            self.local
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for (key, sender) in local {
            self.upstream.give_back(key, sender);
        }
    }
}

async fn connect(backend: &Backend) -> Result<Sender, String> {
    let addr = backend.addr;
    let dial = async {
        match &backend.netns {
            Some(netns) => netns.connect(addr).await,
            None => TcpStream::connect(addr).await,
        }
    };
    let stream = tokio::time::timeout(Duration::from_secs(5), dial)
        .await
        .map_err(|_| format!("connect to {addr} timed out"))?
        .map_err(|err| format!("connect to {addr}: {err}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("handshake with {addr}: {err}"))?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    Ok(sender)
}

impl Upstream {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    fn take(&self, key: u64) -> Option<Sender> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let senders = idle.get_mut(&key)?;
        while let Some(sender) = senders.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        idle.remove(&key);
        None
    }

    fn give_back(&self, key: u64, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let senders = idle.entry(key).or_default();
        senders.retain(|sender| !sender.is_closed());
        if senders.len() < MAX_IDLE_PER_INSTANCE {
            senders.push(sender);
        }
    }

    /// A ready connection to `backend`: a cached one, else a new one.
    async fn checkout(cache: &ConnectionCache, backend: &Backend) -> Result<Sender, String> {
        while let Some(mut sender) = cache.take(backend.key) {
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        let mut sender = connect(backend).await?;
        sender
            .ready()
            .await
            .map_err(|err| format!("connection to {}: {err}", backend.addr))?;
        Ok(sender)
    }

    /// Sends `request` to the backend `guard` holds a slot on (or, if it
    /// cannot be reached, another of `route`'s) and returns its response, or
    /// the router's own error page — or, when no instance could be reached
    /// and nothing was sent, the request back (see [`Forwarded`]).
    pub async fn forward(
        &self,
        app: &str,
        route: &AppRoute,
        mut request: Request<Incoming>,
        mut guard: InFlight,
        turn: usize,
        cache: &Arc<ConnectionCache>,
    ) -> Forwarded {
        let limit = route.admission.hard_limit;
        let upgrade = wants_upgrade(request.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        crate::forwarding::prepare_request_headers(
            &mut parts.headers,
            &parts.uri,
            parts.version,
            &cache.client_ip,
            cache.proto,
            upgrade,
            cache.trusted,
        );
        parts.version = Version::HTTP_11;
        parts.uri = origin_form(&parts.uri);
        // A body that did not say its length is held to the app's limit
        // as it goes (one that did was judged at the edge).
        let body_limit =
            (route.edge.max_body).filter(|_| !parts.headers.contains_key(header::CONTENT_LENGTH));
        let over_limit = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let body = CountedBody {
            inner: body,
            traffic: route.traffic.clone(),
            limit: body_limit,
            carried: 0,
            over_limit: over_limit.clone(),
        };
        let mut request = Request::from_parts(parts, body);

        let mut attempts = 0;
        let (response, sender) = loop {
            attempts += 1;
            let sender = match Self::checkout(cache, guard.backend()).await {
                Ok(sender) => sender,
                Err(err) => {
                    // Nothing was sent: another instance can take it.
                    match pick(&route.backends, turn + attempts, Some(guard.backend()))
                        .and_then(|backend| InFlight::try_start_limited(backend, limit))
                    {
                        Some(next) if attempts < 3 => {
                            guard = next;
                            continue;
                        }
                        // Not an upgrade (whose handshake is taken): the caller
                        // may hold it for the instance that replaces this one.
                        _ if client_upgrade.is_none() => {
                            return Forwarded::Unreached {
                                request: request.map(|body| body.inner),
                                instance: guard.backend().instance.clone(),
                                why: err,
                            };
                        }
                        _ => {
                            route.traffic.count_router_error();
                            return Forwarded::Answered(pages::bad_gateway(
                                app,
                                &guard.backend().instance,
                                &err,
                            ));
                        }
                    }
                }
            };
            let mut sender = sender;
            match sender.try_send_request(request).await {
                Ok(response) => break (response, sender),
                Err(mut err) => match err.take_message() {
                    // The connection closed before the request went out: retry it.
                    Some(unsent) if attempts < 3 => request = unsent,
                    // The body went over the limit on its way: the client's
                    // doing, not the app's.
                    _ if over_limit.load(std::sync::atomic::Ordering::Relaxed) => {
                        (route.traffic.edge.too_large)
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let mut page = pages::too_large(app, route.edge.max_body);
                        page.extensions_mut().insert(crate::edge_rules::EdgeRefusal);
                        return Forwarded::Answered(page);
                    }
                    _ => {
                        route.traffic.count_router_error();
                        return Forwarded::Answered(pages::bad_gateway(
                            app,
                            &guard.backend().instance,
                            &err.into_error().to_string(),
                        ));
                    }
                },
            }
        };
        let (mut parts, body) = response.into_parts();
        parts
            .extensions
            .insert(crate::balance::ServedBy(guard.backend().instance.clone()));
        if parts.status == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let instance_upgrade = hyper::upgrade::on(Response::from_parts(parts.clone(), body));
            // The tunnel outlives the HTTP connection: its `max_connections`
            // slots go with it.
            let slots = std::mem::take(&mut *cache.slots.lock().unwrap_or_else(|p| p.into_inner()));
            tokio::spawn(async move {
                let (_guard, _slots) = (guard, slots);
                if let (Ok(client_io), Ok(instance_io)) =
                    tokio::join!(client_upgrade, instance_upgrade)
                {
                    let mut client_io = TokioIo::new(client_io);
                    let mut instance_io = TokioIo::new(instance_io);
                    let _ = tokio::io::copy_bidirectional(&mut client_io, &mut instance_io).await;
                }
            });
            return Forwarded::Answered(Response::from_parts(parts, ProxyBody::Empty));
        }
        crate::forwarding::strip_hop_by_hop(&mut parts.headers, false);
        let key = guard.backend().key;
        // hyper never polls a body that is already at its end (HEAD, 204,
        // 304, length 0): hand the connection back now, not at the end.
        let reuse = if body.is_end_stream() {
            cache.give_back(key, sender);
            None
        } else {
            Some((key, sender, cache.clone()))
        };
        let body = GuardedBody {
            inner: body,
            _guard: guard,
            reuse,
        };
        Forwarded::Answered(Response::from_parts(parts, ProxyBody::Proxied(body)))
    }
}

fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(path) if uri.scheme().is_none() => {
            if uri.authority().is_none() {
                return uri.clone();
            }
            Uri::try_from(path.as_str()).unwrap_or_else(|_| Uri::from_static("/"))
        }
        Some(path) => Uri::try_from(path.as_str()).unwrap_or_else(|_| Uri::from_static("/")),
        None => Uri::from_static("/"),
    }
}

fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| {
                value
                    .split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// A request body on its way to an instance, counting the bytes it
/// carries as the app's `bytes_in`, and ending in an error past `limit`.
pub struct CountedBody {
    inner: Incoming,
    traffic: Arc<crate::route::AppTraffic>,
    /// The most it may carry (the app's `max_body`, for a body that did
    /// not say its length: chunked, or HTTP/2 without Content-Length).
    limit: Option<u64>,
    carried: u64,
    /// Set when it went past `limit`.
    over_limit: Arc<std::sync::atomic::AtomicBool>,
}

/// What ends a request body: the client's connection, or its limit.
type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for CountedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let frame = match std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            let length = data.len() as u64;
            self.traffic.http.count_bytes_in(length);
            self.carried += length;
            if self.limit.is_some_and(|limit| self.carried > limit) {
                (self.over_limit).store(true, std::sync::atomic::Ordering::Relaxed);
                return Poll::Ready(Some(Err(
                    "the request body is over the app's max_body".into()
                )));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request counted in flight until it ends,
/// then hands its upstream connection back for the next request.
pub struct GuardedBody {
    inner: Incoming,
    _guard: InFlight,
    reuse: Option<(u64, Sender, Arc<ConnectionCache>)>,
}

impl GuardedBody {
    fn finished(&mut self) {
        if let Some((key, sender, cache)) = self.reuse.take() {
            cache.give_back(key, sender);
        }
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finished(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finished(),
            Poll::Ready(Some(Err(_))) => self.reuse = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
