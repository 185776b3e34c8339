//! An HTTPS client for tests: one GET over TLS to an address, with the
//! name to send (SNI and `Host`) and the only root to trust, HTTP/2 when
//! the server offers it.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// What an HTTPS request got.
#[derive(Debug)]
pub struct HttpsAnswer {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: String,
    /// The protocol ALPN chose (`h2`, `http/1.1`), if any.
    pub alpn: Option<String>,
    /// The headers of the answer.
    pub headers: http::HeaderMap,
    /// The server's certificate (DER), as it presented it.
    pub certificate: Vec<u8>,
}

/// GETs `https://NAME/PATH` from `addr`, trusting only `root_pem`. A
/// handshake the server refuses, or a certificate that does not verify,
/// is an error.
pub async fn https_get(
    addr: SocketAddr,
    name: &str,
    path: &str,
    root_pem: &str,
) -> std::io::Result<HttpsAnswer> {
    let stream = tls_connect(addr, name, root_pem, &[b"h2", b"http/1.1"]).await?;
    https_get_over(stream, name, path).await
}

/// A TLS connection to `addr` as `name` (SNI), trusting only `root_pem`,
/// offering `alpn`.
pub async fn tls_connect(
    addr: SocketAddr,
    name: &str,
    root_pem: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        let certificate = certificate.map_err(std::io::Error::other)?;
        roots.add(certificate).map_err(std::io::Error::other)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server_name = ServerName::try_from(name.to_string()).map_err(std::io::Error::other)?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    connector.connect(server_name, tcp).await
}

async fn https_get_over(
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    name: &str,
    path: &str,
) -> std::io::Result<HttpsAnswer> {
    let alpn = stream
        .get_ref()
        .1
        .alpn_protocol()
        .map(|protocol| String::from_utf8_lossy(protocol).into_owned());
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.as_ref().to_vec())
        .unwrap_or_default();
    let request = http::Request::get(format!("https://{name}{path}"))
        .header(http::header::HOST, name)
        .body(Empty::<Bytes>::new())
        .map_err(std::io::Error::other)?;
    let io = TokioIo::new(stream);
    let response = if alpn.as_deref() == Some("h2") {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        sender
            .send_request(request)
            .await
            .map_err(std::io::Error::other)?
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        sender
            .send_request(request)
            .await
            .map_err(std::io::Error::other)?
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok(HttpsAnswer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        alpn,
        headers,
        certificate,
    })
}
