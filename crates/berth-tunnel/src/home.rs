//! The home server's side of the tunnel: it dials the relay, proves its
//! token, serves the HTTP/2 streams the relay opens, and hands each to the
//! router as a connection from the client address its PROXY v2 header
//! names. It dials again with backoff whenever the tunnel drops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, channel::Channel};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch};

use crate::tokens::TunnelToken;
use crate::{TunnelError, protocol};
use berth_router::proxy_v2::{Decoded, decode};

/// A connection that came through the tunnel, and its client's address.
pub type Tunneled = (DuplexStream, SocketAddr);

/// Where tunnelled connections go: the router's plain HTTP and its HTTPS.
#[derive(Clone)]
pub struct Destinations {
    /// Port 80's.
    pub http: mpsc::Sender<Tunneled>,
    /// Port 443's.
    pub https: mpsc::Sender<Tunneled>,
}

/// The tunnel's state, for `berth status`.
#[derive(Debug, Clone, PartialEq)]
pub enum TunnelState {
    /// Dialling.
    Connecting,
    /// Up since `since`, serving `domains`.
    Connected {
        /// When it came up.
        since: std::time::SystemTime,
        /// What the relay routes here.
        domains: Vec<String>,
    },
    /// Down; dialling again after a pause.
    Retrying {
        /// Why it is down.
        error: String,
    },
}

/// The first backoff after a tunnel drops, and the longest.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(2));
/// The pause after the relay refused the token: it will not change soon.
const REFUSED_BACKOFF: Duration = Duration::from_secs(30);

/// The tunnel's connections ("lanes"): streams are spread over a few, so
/// their framing and encryption use more than one core at each end.
fn lane_count() -> usize {
    std::thread::available_parallelism()
        .map(|cores| cores.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

/// Each lane's state, and the tunnel's as `berth status` shows it: up
/// while any lane is.
struct Lanes {
    states: std::sync::Mutex<Vec<TunnelState>>,
    published: watch::Sender<TunnelState>,
}

impl Lanes {
    fn set(&self, lane: usize, state: TunnelState) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states[lane] = state;
        let overall = states
            .iter()
            .find(|state| matches!(state, TunnelState::Connected { .. }))
            .or_else(|| {
                states
                    .iter()
                    .find(|state| matches!(state, TunnelState::Retrying { .. }))
            })
            .cloned()
            .unwrap_or(TunnelState::Connecting);
        self.published.send_if_modified(|current| {
            let changed = *current != overall;
            *current = overall;
            changed
        });
    }

    fn is_connected(&self, lane: usize) -> bool {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        matches!(states[lane], TunnelState::Connected { .. })
    }
}

/// Keeps a tunnel to `relay` (`HOST:PORT`) up until `shutdown` completes.
pub async fn run(
    relay: String,
    token: TunnelToken,
    destinations: Destinations,
    state: watch::Sender<TunnelState>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let tls = match berth_tls::fingerprint_pinned_client_config(&token.relay_ca) {
        Ok(mut config) => {
            config.alpn_protocols = vec![protocol::ALPN.to_vec()];
            Arc::new(config)
        }
        Err(err) => {
            state.send_replace(TunnelState::Retrying {
                error: err.to_string(),
            });
            return;
        }
    };
    let count = lane_count();
    let lanes = Arc::new(Lanes {
        states: std::sync::Mutex::new(vec![TunnelState::Connecting; count]),
        published: state,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..count {
        tasks.spawn(keep_lane_up(
            lane,
            relay.clone(),
            token.clone(),
            tls.clone(),
            destinations.clone(),
            lanes.clone(),
        ));
    }
    shutdown.await;
    tasks.abort_all();
}

/// One lane: dialled, served until it drops, dialled again after a pause
/// that starts short once it had been up.
async fn keep_lane_up(
    lane: usize,
    relay: String,
    token: TunnelToken,
    tls: Arc<rustls::ClientConfig>,
    destinations: Destinations,
    lanes: Arc<Lanes>,
) {
    let mut backoff = BACKOFF.0;
    loop {
        let outcome = connect_and_serve(&relay, &token, &tls, &destinations, &lanes, lane).await;
        if lanes.is_connected(lane) {
            backoff = BACKOFF.0;
        }
        let error = match outcome {
            Ok(()) => "the relay closed the tunnel".to_string(),
            Err(err) => err.to_string(),
        };
        let refused = error.contains("refused the token");
        tracing::warn!(%relay, lane, %error, "tunnel down; dialling again");
        lanes.set(lane, TunnelState::Retrying { error });
        let pause = if refused { REFUSED_BACKOFF } else { backoff };
        // Jitter, so home servers do not all dial at once.
        let jitter = pause.mul_f64(rand::random::<f64>() * 0.2);
        tokio::time::sleep(pause + jitter).await;
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

async fn connect_and_serve(
    relay: &str,
    token: &TunnelToken,
    tls: &Arc<rustls::ClientConfig>,
    destinations: &Destinations,
    lanes: &Lanes,
    lane: usize,
) -> Result<(), TunnelError> {
    let tcp = tokio::time::timeout(
        protocol::HANDSHAKE_TIMEOUT,
        tokio::net::TcpStream::connect(relay),
    )
    .await
    .map_err(|_| TunnelError::Io(format!("{relay} did not answer within 10s")))?
    .map_err(|err| TunnelError::Io(format!("cannot reach {relay}: {err}")))?;
    let _ = tcp.set_nodelay(true);
    let host = relay
        .rsplit_once(':')
        .map_or(relay, |(host, _)| host)
        .trim_matches(['[', ']']);
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|err| TunnelError::Tls(format!("`{host}`: {err}")))?;
    let mut stream = tokio::time::timeout(
        protocol::HANDSHAKE_TIMEOUT,
        tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp),
    )
    .await
    .map_err(|_| TunnelError::Tls(format!("the relay at {relay}: no TLS handshake within 10s")))?
    .map_err(|err| TunnelError::Tls(format!("the relay at {relay}: {err}")))?;
    protocol::write_hello(&mut stream, &token.secret).await?;
    let answer = protocol::read_line(&mut stream).await?;
    let domains = match answer.split_once(' ') {
        Some(("OK", rest)) => rest
            .split_once(' ')
            .map(|(_, domains)| domains.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        Some(("NO", why)) => {
            return Err(TunnelError::Protocol(format!(
                "the relay refused the token: {why}"
            )));
        }
        _ => return Err(TunnelError::Protocol(format!("the relay said `{answer}`"))),
    };
    tracing::info!(%relay, lane, ?domains, "tunnel up");
    lanes.set(
        lane,
        TunnelState::Connected {
            since: std::time::SystemTime::now(),
            domains,
        },
    );
    let destinations = destinations.clone();
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let destinations = destinations.clone();
        async move { Ok::<_, std::convert::Infallible>(open_stream(request, &destinations)) }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(protocol::PING_EVERY)
        .keep_alive_timeout(protocol::PING_TIMEOUT)
        .initial_stream_window_size(protocol::STREAM_WINDOW)
        .initial_connection_window_size(protocol::CONNECTION_WINDOW)
        .max_concurrent_streams(4096)
        .serve_connection(TokioIo::new(stream), service)
        .await
        .map_err(|err| TunnelError::Protocol(format!("tunnel: {err}")))
}

/// One stream the relay opened: a connection for the router.
fn open_stream(
    request: http::Request<Incoming>,
    destinations: &Destinations,
) -> http::Response<Channel<Bytes>> {
    let destination = match request
        .headers()
        .get(protocol::PORT_HEADER)
        .and_then(|value| value.to_str().ok())
    {
        Some("80") => destinations.http.clone(),
        Some("443") => destinations.https.clone(),
        _ => {
            let (_, body) = Channel::new(1);
            let mut response = http::Response::new(body);
            *response.status_mut() = http::StatusCode::BAD_REQUEST;
            return response;
        }
    };
    let (router_side, tunnel_side) = tokio::io::duplex(64 * 1024);
    let (from_router, mut to_router) = tokio::io::split(tunnel_side);
    let (mut sender, body) = Channel::<Bytes>::new(4);
    let mut incoming = request.into_body();
    tokio::spawn(async move {
        // The PROXY v2 header first: who the client is.
        let mut buffered = Vec::new();
        let client = loop {
            match decode(&buffered) {
                Decoded::Header { length, client } => {
                    buffered.drain(..length);
                    break client;
                }
                Decoded::Invalid => return,
                Decoded::Incomplete => match incoming.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            buffered.extend_from_slice(&data);
                        }
                    }
                    _ => return,
                },
            }
        };
        let client = client.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        if destination.send((router_side, client)).await.is_err() {
            return;
        }
        let answer = tokio::spawn(async move { protocol::pump(from_router, &mut sender).await });
        if protocol::write_unless_stalled(&mut to_router, &buffered).await {
            while let Some(Ok(frame)) = incoming.frame().await {
                if let Ok(data) = frame.into_data()
                    && !protocol::write_unless_stalled(&mut to_router, &data).await
                {
                    break;
                }
            }
        }
        // Dropped now, not when the answer ends: what the relay still sends
        // would hold the tunnel's window meanwhile.
        drop(incoming);
        let _ = to_router.shutdown().await;
        let _ = answer.await;
    });
    http::Response::new(body)
}
