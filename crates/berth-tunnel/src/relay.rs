//! `berth relay`: on a public host, it accepts home servers' outbound
//! tunnel connections (TLS, a token, then HTTP/2 in which the relay opens
//! a stream per client connection) and the internet's connections on
//! ports 80 and 443. A connection goes to the home server whose token
//! names the host it asks for — by the SNI of its ClientHello, or the
//! `Host` of its first request — prefixed with a PROXY v2 header; its TLS
//! is never terminated here, so certificates and keys stay at home.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, channel::Channel};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::tokens::RelayTokens;
use crate::{TunnelError, protocol};
use berth_router::peek::{MAX_PEEK, Peeked};

/// Where the relay listens and keeps its files.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Its CA, tunnel certificate and tokens.
    pub data: PathBuf,
    /// Plain HTTP from the internet (port 80).
    pub http: SocketAddr,
    /// HTTPS from the internet (port 443), passed through.
    pub https: SocketAddr,
    /// Home servers' tunnels.
    pub tunnel: SocketAddr,
}

/// The relay's CA (whose fingerprint every token carries) and the
/// tunnel listener's TLS settings.
pub fn relay_tls(data: &Path) -> Result<(String, Arc<rustls::ServerConfig>), TunnelError> {
    let ca = berth_tls::LocalCa::open_or_create(&data.join("ca"))
        .map_err(|err| TunnelError::Tls(err.to_string()))?;
    let fingerprint = relay_fingerprint(ca.root_pem())?;
    let (chain, key) = ca
        .issue_pem_for(&["berth-relay".to_string()], 3650)
        .map_err(|err| TunnelError::Tls(err.to_string()))?;
    let mut config = berth_tls::single_cert_config(&chain, &key)
        .map_err(|err| TunnelError::Tls(err.to_string()))?;
    if let Some(config) = Arc::get_mut(&mut config) {
        config.alpn_protocols = vec![protocol::ALPN.to_vec()];
    }
    Ok((fingerprint, config))
}

/// The fingerprint of the relay's CA, as tokens carry it (hex).
fn relay_fingerprint(root_pem: &str) -> Result<String, TunnelError> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(root_pem.as_bytes())
        .map_err(|err| TunnelError::Tls(err.to_string()))?;
    Ok(berth_tls::fingerprint(der.as_ref())
        .replace(':', "")
        .to_ascii_lowercase())
}

/// The fingerprint of the relay's CA in `data`, made if need be.
pub fn fingerprint(data: &Path) -> Result<String, TunnelError> {
    relay_tls(data).map(|(fingerprint, _)| fingerprint)
}

/// A connected home server's tunnel.
#[derive(Clone)]
struct Tunnel {
    id: u64,
    /// The hash of the secret it proved: a token removed and made again
    /// under the same name does not serve the old secret's holder.
    secret_sha256: String,
    sender: SendRequest<Channel<Bytes>>,
}

/// What tells one version of the tokens file from another. Its time
/// alone may not: two saves within a tick of the file system's clock share
/// one, and a token removed in the second would stay accepted. Each save
/// renames a new file over it, so a new inode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FileVersion {
    modified: SystemTime,
    inode: u64,
    length: u64,
}

impl FileVersion {
    fn of(meta: &std::fs::Metadata) -> Option<FileVersion> {
        use std::os::unix::fs::MetadataExt;
        Some(FileVersion {
            modified: meta.modified().ok()?,
            inode: meta.ino(),
            length: meta.len(),
        })
    }
}

/// One of a token's [`protocol::MAX_TUNNELS_PER_TOKEN`] places, given
/// back when dropped.
struct TunnelSlot {
    relay: Arc<Relay>,
    name: String,
}

impl TunnelSlot {
    fn take(relay: &Arc<Relay>, name: &str) -> Option<TunnelSlot> {
        let mut open = relay.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(name.to_string()).or_default();
        if *count >= protocol::MAX_TUNNELS_PER_TOKEN {
            return None;
        }
        *count += 1;
        Some(TunnelSlot {
            relay: relay.clone(),
            name: name.to_string(),
        })
    }
}

impl Drop for TunnelSlot {
    fn drop(&mut self) {
        let mut open = self.relay.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.name) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.name);
            }
        }
    }
}

struct Relay {
    data: PathBuf,
    /// Tunnels open (or opening) per token name.
    open: Mutex<HashMap<String, usize>>,
    tokens: Mutex<(Option<FileVersion>, Arc<RelayTokens>)>,
    tunnels: Mutex<HashMap<String, Vec<Tunnel>>>,
    next_id: std::sync::atomic::AtomicU64,
    /// Spreads streams over a home server's tunnels.
    turn: std::sync::atomic::AtomicUsize,
}

impl Relay {
    /// A relay keeping its tokens in `data`, with no tunnel yet.
    fn new(data: PathBuf) -> Relay {
        Relay {
            data,
            open: Mutex::new(HashMap::new()),
            tokens: Mutex::new((None, Arc::new(RelayTokens::default()))),
            tunnels: Mutex::new(HashMap::new()),
            next_id: Default::default(),
            turn: Default::default(),
        }
    }

    /// The tokens, read again when the file changed (`berth relay token
    /// add` needs no restart).
    fn tokens(&self) -> Arc<RelayTokens> {
        let modified = std::fs::metadata(RelayTokens::path(&self.data))
            .ok()
            .and_then(|meta| FileVersion::of(&meta));
        let mut kept = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if kept.0 != modified || modified.is_none() {
            match RelayTokens::load(&self.data) {
                Ok(tokens) => *kept = (modified, Arc::new(tokens)),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the tokens; keeping the last read")
                }
            }
        }
        kept.1.clone()
    }

    /// One of the token's live tunnels, taken in turn.
    fn tunnel_for(&self, token: &crate::tokens::RelayToken) -> Option<Tunnel> {
        let tunnels = self.tunnels.lock().unwrap_or_else(|p| p.into_inner());
        let live: Vec<&Tunnel> = tunnels
            .get(&token.name)?
            .iter()
            .filter(|tunnel| {
                !tunnel.sender.is_closed() && tunnel.secret_sha256 == token.secret_sha256
            })
            .collect();
        if live.is_empty() {
            return None;
        }
        let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(live[turn % live.len()].clone())
    }
}

/// Runs the relay until `shutdown` completes.
pub async fn run(
    config: RelayConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), TunnelError> {
    let (fingerprint, tls) = relay_tls(&config.data)?;
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|err| TunnelError::Io(format!("cannot listen on {addr}: {err}")))
    };
    let tunnel_listener = bind(config.tunnel).await?;
    let http_listener = bind(config.http).await?;
    let https_listener = bind(config.https).await?;
    let relay = Arc::new(Relay::new(config.data.clone()));
    let tokens = relay.tokens();
    tracing::info!(
        tunnel = %config.tunnel, http = %config.http, https = %config.https,
        tokens = tokens.tokens.len(), relay_ca = %fingerprint,
        "berth relay ready"
    );
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(accept_tunnels(tunnel_listener, acceptor, relay.clone()));
    tokio::spawn(accept_public(http_listener, Port::Http, relay.clone()));
    tokio::spawn(accept_public(https_listener, Port::Https, relay));
    shutdown.await;
    Ok(())
}

async fn accept_tunnels(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    relay: Arc<Relay>,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (acceptor, relay) = (acceptor.clone(), relay.clone());
        tokio::spawn(async move {
            if let Err(err) = serve_tunnel(stream, peer, acceptor, relay).await {
                tracing::warn!(%peer, error = %err, "tunnel refused or closed");
            }
        });
    }
}

/// One home server's tunnel: TLS, its token, then HTTP/2 until it closes.
async fn serve_tunnel(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    relay: Arc<Relay>,
) -> Result<(), TunnelError> {
    let _ = stream.set_nodelay(true);
    let mut tls = tokio::time::timeout(protocol::HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| TunnelError::Protocol("TLS handshake timed out".into()))?
        .map_err(|err| TunnelError::Protocol(format!("TLS handshake: {err}")))?;
    let secret = protocol::read_hello(&mut tls).await?;
    let tokens = relay.tokens();
    let Some(token) = tokens.by_secret(&secret) else {
        protocol::write_line(&mut tls, "NO the relay knows no such token").await?;
        return Err(TunnelError::Protocol("unknown token".into()));
    };
    // Taken now, under one lock, and held until the tunnel ends: tunnels
    // dialled at once cannot all pass a count made before any registered.
    let Some(_slot) = TunnelSlot::take(&relay, &token.name) else {
        let why = format!(
            "this token has {} tunnels open already",
            protocol::MAX_TUNNELS_PER_TOKEN
        );
        protocol::write_line(&mut tls, &format!("NO {why}")).await?;
        return Err(TunnelError::Protocol(why));
    };
    protocol::write_line(
        &mut tls,
        &format!("OK {} {}", token.name, token.domains.join(",")),
    )
    .await?;
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(protocol::PING_EVERY)
        .keep_alive_timeout(protocol::PING_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(protocol::STREAM_WINDOW)
        .initial_connection_window_size(protocol::CONNECTION_WINDOW)
        .max_concurrent_reset_streams(1024)
        .handshake::<_, Channel<Bytes>>(TokioIo::new(tls))
        .await
        .map_err(|err| TunnelError::Protocol(format!("HTTP/2: {err}")))?;
    let id = relay
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = token.name.clone();
    relay
        .tunnels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(name.clone())
        .or_default()
        .push(Tunnel {
            id,
            secret_sha256: token.secret_sha256.clone(),
            sender,
        });
    tracing::info!(%peer, token = %name, "home server connected");
    let outcome = connection.await;
    let mut tunnels = relay.tunnels.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(list) = tunnels.get_mut(&name) {
        list.retain(|tunnel| tunnel.id != id);
    }
    drop(tunnels);
    tracing::info!(%peer, token = %name, outcome = ?outcome.err(), "home server disconnected");
    Ok(())
}

/// Which public port a connection came in on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Port {
    Http,
    Https,
}

async fn accept_public(listener: TcpListener, port: Port, relay: Arc<Relay>) {
    loop {
        let Ok((stream, client)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let relay = relay.clone();
        tokio::spawn(async move {
            if let Err(err) = forward(stream, client, port, relay).await {
                tracing::debug!(%client, error = %err, "connection not forwarded");
            }
        });
    }
}

/// Plain HTTP's answer when no home server takes a name.
async fn refuse(stream: &mut TcpStream, port: Port, status: &str, why: &str) {
    if port == Port::Http {
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{why}\n",
            why.len() + 1
        );
        let _ = stream.write_all(response.as_bytes()).await;
    }
    let _ = stream.shutdown().await;
}

/// One client connection: its name read, its home server's tunnel found,
/// a stream opened there and bytes copied both ways.
async fn forward(
    mut stream: TcpStream,
    client: SocketAddr,
    port: Port,
    relay: Arc<Relay>,
) -> Result<(), TunnelError> {
    let _ = stream.set_nodelay(true);
    let local = stream
        .local_addr()
        .map_err(|err| TunnelError::Io(err.to_string()))?;
    let mut first = Vec::with_capacity(2048);
    let deadline = tokio::time::Instant::now() + protocol::HANDSHAKE_TIMEOUT;
    let name = loop {
        let peeked = match port {
            Port::Http => berth_router::peek::http_host(&first),
            Port::Https => berth_router::peek::server_name(&first),
        };
        match peeked {
            Peeked::Name(name) => break name,
            Peeked::Unroutable => {
                refuse(&mut stream, port, "400 Bad Request", "no Host to route by").await;
                return Ok(());
            }
            Peeked::NeedMore if first.len() >= MAX_PEEK => {
                refuse(
                    &mut stream,
                    port,
                    "431 Request Header Fields Too Large",
                    "head too large",
                )
                .await;
                return Ok(());
            }
            Peeked::NeedMore => {}
        }
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| TunnelError::Protocol("no name within 10s".into()))?
            .map_err(|err| TunnelError::Io(err.to_string()))?;
        if read == 0 {
            return Ok(());
        }
        first.extend_from_slice(&chunk[..read]);
    };
    let tokens = relay.tokens();
    let Some(owner) = tokens.owner_of(&name) else {
        refuse(
            &mut stream,
            port,
            "404 Not Found",
            &format!("this relay serves no {name}"),
        )
        .await;
        return Ok(());
    };
    let Some(tunnel) = relay.tunnel_for(owner) else {
        refuse(
            &mut stream,
            port,
            "502 Bad Gateway",
            &format!("the home server for {name} is not connected"),
        )
        .await;
        return Ok(());
    };
    let (mut body, request_body) = Channel::<Bytes>::new(4);
    let request = http::Request::post("http://berth-tunnel/")
        .header(
            protocol::PORT_HEADER,
            if port == Port::Http { "80" } else { "443" },
        )
        .body(request_body)
        .map_err(|err| TunnelError::Protocol(err.to_string()))?;
    let mut sender = tunnel.sender.clone();
    sender
        .ready()
        .await
        .map_err(|err| TunnelError::Protocol(format!("tunnel: {err}")))?;
    let response = sender.send_request(request);
    let mut opening = berth_router::proxy_v2::encode(client, local);
    opening.extend_from_slice(&first);
    let (from_client, mut to_client) = stream.into_split();
    let upload = async move {
        if body.send_data(Bytes::from(opening)).await.is_ok() {
            protocol::pump(from_client, &mut body).await;
        }
    };
    let download = async move {
        // The home server answers a stream at once; one that cannot open
        // (all its streams in use) is not left waiting with its socket.
        let response = tokio::time::timeout(protocol::HANDSHAKE_TIMEOUT, response)
            .await
            .map_err(|_| TunnelError::Protocol("the tunnel opened no stream within 10s".into()))?
            .map_err(|err| TunnelError::Protocol(format!("tunnel stream: {err}")))?;
        let mut incoming = response.into_body();
        while let Some(frame) = incoming.frame().await {
            let Ok(frame) = frame else { break };
            // A client that stops reading is dropped, and its stream with
            // it, freeing its share of the tunnel's window.
            if let Ok(data) = frame.into_data()
                && !protocol::write_unless_stalled(&mut to_client, &data).await
            {
                break;
            }
        }
        let _ = to_client.shutdown().await;
        Ok::<(), TunnelError>(())
    };
    let upload = tokio::spawn(upload);
    let outcome = download.await;
    upload.abort();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_removed_within_the_same_clock_tick_is_seen_gone() {
        let dir = tempfile::tempdir().unwrap();
        let relay = Relay::new(dir.path().to_path_buf());
        let mut tokens = RelayTokens::default();
        let secret = tokens.add("home", &["shop.example.com".into()]).unwrap();
        tokens.save(dir.path()).unwrap();
        let path = RelayTokens::path(dir.path());
        let saved_at = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(relay.tokens().by_secret(&secret).is_some());
        // Replaced by a token of the same length (name, domain and secret
        // alike), written back with the same time to the nanosecond as a
        // coarse file system clock would give it: only the inode differs.
        let mut other = RelayTokens::load(dir.path()).unwrap();
        assert!(other.remove("home"));
        other.add("homf", &["shoq.example.com".into()]).unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        other.save(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), before);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(saved_at)
            .unwrap();
        assert!(relay.tokens().by_secret(&secret).is_none());
    }

    #[test]
    fn a_token_holds_at_most_its_tunnels_and_gets_each_back() {
        let dir = tempfile::tempdir().unwrap();
        let relay = Arc::new(Relay::new(dir.path().to_path_buf()));
        let slots: Vec<TunnelSlot> = (0..protocol::MAX_TUNNELS_PER_TOKEN)
            .map(|_| TunnelSlot::take(&relay, "home").unwrap())
            .collect();
        assert!(TunnelSlot::take(&relay, "home").is_none());
        // Another token has its own places.
        assert!(TunnelSlot::take(&relay, "office").is_some());
        drop(slots);
        assert!(TunnelSlot::take(&relay, "home").is_some());
    }
}
