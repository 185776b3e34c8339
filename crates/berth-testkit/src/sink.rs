//! Receivers on loopback that keep what they are sent: an HTTP endpoint
//! (each request's path and body) and a syslog listener over TCP or TLS
//! (each octet-counted message), for tests of log drains.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One request a sink kept.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its path.
    pub path: String,
    /// Its headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
}

impl Received {
    /// The value of header `name` (lower case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The requests a sink kept, in order.
type Kept = Arc<Mutex<Vec<Received>>>;

/// An HTTP/1.1 endpoint that answers every request with its status
/// (200 unless told otherwise) and keeps each request's path and body.
pub struct HttpSink {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Kept,
    status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpSink {
    /// Listens on a free loopback port.
    pub async fn start() -> HttpSink {
        HttpSink::start_at("127.0.0.1:0".parse().expect("an address")).await
    }

    /// Listens on `addr` (a port a test chose ahead, say).
    pub async fn start_at(addr: SocketAddr) -> HttpSink {
        let listener = TcpListener::bind(addr).await.expect("bind the sink");
        let addr = listener.local_addr().expect("its address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let (kept, answer) = (requests.clone(), status.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (kept, answer) = (kept.clone(), answer.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, kept, answer).await;
                });
            }
        });
        HttpSink {
            addr,
            requests,
            status,
            task,
        }
    }

    /// Answers with `status` from now on.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    /// The requests received so far, path and body, in order.
    pub fn requests(&self) -> Vec<(String, Vec<u8>)> {
        self.received()
            .into_iter()
            .map(|request| (request.path, request.body))
            .collect()
    }

    /// The requests received so far, headers included, in order.
    pub fn received(&self) -> Vec<Received> {
        self.requests.lock().expect("the sink's list").clone()
    }

    /// Stops listening.
    pub fn stop(self) {
        self.task.abort();
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    kept: Kept,
    answer: Arc<AtomicU16>,
) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if stream.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let mut length = 0usize;
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            stream.read_line(&mut header).await?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await?;
        let status = answer.load(Ordering::Relaxed);
        if status < 300 {
            kept.lock().expect("the sink's list").push(Received {
                path,
                headers,
                body,
            });
        }
        let reply = format!("HTTP/1.1 {status} Sink\r\ncontent-length: 0\r\n\r\n");
        stream.get_mut().write_all(reply.as_bytes()).await?;
    }
}

/// A syslog listener (RFC 6587 octet counting) over TCP, or TLS when made
/// with a certificate, keeping each message.
pub struct SyslogSink {
    /// Where it listens.
    pub addr: SocketAddr,
    messages: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SyslogSink {
    /// Listens on a free loopback port; with `tls` (certificate chain and
    /// key, PEM), speaks TLS.
    pub async fn start(tls: Option<(&str, &str)>) -> SyslogSink {
        let acceptor = tls.map(|(chain, key)| {
            use rustls::pki_types::pem::PemObject;
            use rustls::pki_types::{CertificateDer, PrivateKeyDer};
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<_, _>>()
                    .expect("the sink's certificate");
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("the sink's key");
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("the sink's TLS");
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the sink");
        let addr = listener.local_addr().expect("its address");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let kept = messages.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (kept, acceptor) = (kept.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = read_frames(stream, kept).await;
                            }
                        }
                        None => {
                            let _ = read_frames(stream, kept).await;
                        }
                    }
                });
            }
        });
        SyslogSink {
            addr,
            messages,
            task,
        }
    }

    /// The messages received so far, in order.
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().expect("the sink's list").clone()
    }

    /// Stops listening.
    pub fn stop(self) {
        self.task.abort();
    }
}

async fn read_frames<S: tokio::io::AsyncRead + Unpin>(
    stream: S,
    kept: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    loop {
        let mut length = Vec::new();
        if stream.read_until(b' ', &mut length).await? == 0 {
            return Ok(());
        }
        let length: usize = String::from_utf8_lossy(&length)
            .trim()
            .parse()
            .map_err(|_| std::io::Error::other("a frame without its length"))?;
        let mut message = vec![0u8; length];
        stream.read_exact(&mut message).await?;
        kept.lock()
            .expect("the sink's list")
            .push(String::from_utf8_lossy(&message).into_owned());
    }
}
