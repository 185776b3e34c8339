//! Forwarding a request to an instance and streaming its answer back.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::balance::{InFlight, pick};
use crate::pages;
use crate::route::AppRoute;

/// The body of every response the router sends.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// The connection pool to instances.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, UpstreamBody>,
}

impl Default for Upstream {
    fn default() -> Self {
        Self::new()
    }
}

const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

impl Upstream {
    /// A pool with keep-alive connections to instances.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Upstream { client }
    }

    /// Sends `request` to one of `route`'s backends and returns its response,
    /// or the router's own error page.
    pub async fn forward(
        &self,
        app: &str,
        route: &AppRoute,
        mut request: Request<Incoming>,
        client: SocketAddr,
        turn: usize,
    ) -> Response<ProxyBody> {
        let Some(backend) = pick(&route.backends, turn, None) else {
            route.traffic.count_router_error();
            return pages::unavailable(app, route.unavailable_reason.as_deref());
        };
        let upgrade = wants_upgrade(request.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        prepare_request_headers(
            &mut parts.headers,
            &parts.uri,
            parts.version,
            client,
            upgrade,
        );
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .to_string();
        let retryable = body.is_end_stream() && is_idempotent(&parts.method) && !upgrade;
        parts.version = Version::HTTP_11;

        let mut body = Some(Either::Left(body));
        let mut guard = InFlight::start(backend);
        let mut attempts = 0;
        let response = loop {
            attempts += 1;
            let addr = guard.backend().addr;
            let mut outgoing = Request::from_parts(
                parts.clone(),
                body.take().unwrap_or_else(|| Either::Right(Empty::new())),
            );
            *outgoing.uri_mut() = upstream_uri(addr, &path);
            match self.client.request(outgoing).await {
                Ok(response) => break response,
                Err(err) if err.is_connect() && retryable && attempts < 3 => {
                    // The instance went away between routing and connecting; try another.
                    match pick(&route.backends, turn + attempts, Some(guard.backend())) {
                        Some(next) => guard = InFlight::start(next),
                        None => {
                            route.traffic.count_router_error();
                            return pages::bad_gateway(
                                app,
                                &guard.backend().instance,
                                &describe(&err),
                            );
                        }
                    }
                }
                Err(err) => {
                    route.traffic.count_router_error();
                    return pages::bad_gateway(app, &guard.backend().instance, &describe(&err));
                }
            }
        };
        let (mut parts, body) = response.into_parts();
        if parts.status == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let instance_upgrade = hyper::upgrade::on(Response::from_parts(parts.clone(), body));
            tokio::spawn(async move {
                let _guard = guard;
                if let (Ok(client_io), Ok(instance_io)) =
                    tokio::join!(client_upgrade, instance_upgrade)
                {
                    let mut client_io = TokioIo::new(client_io);
                    let mut instance_io = TokioIo::new(instance_io);
                    let _ = tokio::io::copy_bidirectional(&mut client_io, &mut instance_io).await;
                }
            });
            return Response::from_parts(
                parts,
                Empty::new().map_err(|never| match never {}).boxed(),
            );
        }
        for name in &HOP_BY_HOP {
            parts.headers.remove(name);
        }
        Response::from_parts(
            parts,
            GuardedBody {
                inner: body,
                _guard: guard,
            }
            .boxed(),
        )
    }
}

fn describe(err: &hyper_util::client::legacy::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
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

fn upstream_uri(addr: SocketAddr, path: &str) -> Uri {
    Uri::builder()
        .scheme("http")
        .authority(addr.to_string())
        .path_and_query(path)
        .build()
        .unwrap_or_else(|_| Uri::from_static("/"))
}

fn prepare_request_headers(
    headers: &mut HeaderMap,
    uri: &Uri,
    version: Version,
    client: SocketAddr,
    upgrade: bool,
) {
    if upgrade {
        // Keep `Connection: upgrade` and `Upgrade`; drop the rest of the hop-by-hop set.
        for name in HOP_BY_HOP.iter().skip(1) {
            headers.remove(name);
        }
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
        headers.remove(header::UPGRADE);
    }
    if version == Version::HTTP_2
        && !headers.contains_key(header::HOST)
        && let Some(authority) = uri.authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, value);
    }
    let client_ip = client.ip().to_string();
    let forwarded_for = match headers
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
    {
        Some(earlier) => format!("{earlier}, {client_ip}"),
        None => client_ip,
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", value);
    }
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert("x-forwarded-host", host);
    }
}

/// A response body that keeps its request counted in flight until it ends.
struct GuardedBody {
    inner: Incoming,
    _guard: InFlight,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Keeps the type checker honest about what is shared across tasks.
#[allow(dead_code)]
fn assert_send_sync() {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Upstream>();
    is_send_sync::<Arc<crate::balance::Backend>>();
}
