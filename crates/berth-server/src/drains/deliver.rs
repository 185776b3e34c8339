//! Sending a batch to a drain: HTTP POSTs (NDJSON or OTLP), or syslog
//! frames over a TCP or TLS connection kept open between batches.

use std::sync::Arc;
use std::time::Duration;

use berth_logs::StoredLine;
use berth_proto::{DrainKind, DrainTarget};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::format;

/// How long one delivery may take before it counts as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS a drain trusts: the system's roots, and its own CA if it gave one.
pub fn tls_config(ca_pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(certificate);
    }
    if let Some(pem) = ca_pem {
        let mut added = 0;
        for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let certificate =
                certificate.map_err(|err| format!("the CA certificate does not read: {err}"))?;
            roots
                .add(certificate)
                .map_err(|err| format!("the CA certificate is not usable: {err}"))?;
            added += 1;
        }
        if added == 0 {
            return Err("the CA file holds no PEM certificate".into());
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth another try (down, timed out, 5xx, 401, 403, 404, 408, 429).
    Retry(String),
    /// The receiver refused these lines for good (another 4xx): trying
    /// again would block the drain, so they are dropped.
    Refused(String),
}

/// A connection to one drain.
pub struct Sender {
    target: DrainTarget,
    app: String,
    host_name: String,
    tls: Arc<rustls::ClientConfig>,
    http: Option<reqwest::Client>,
    syslog: Option<Box<dyn Connection + Send + Sync + Unpin>>,
}

impl Sender {
    /// A sender to `target` for `app`'s lines.
    pub fn new(target: DrainTarget, app: &str, ca_pem: Option<&str>) -> Result<Sender, String> {
        let tls = tls_config(ca_pem)?;
        let http = match target.kind {
            DrainKind::Http | DrainKind::Otlp => Some(
                reqwest::Client::builder()
                    .use_preconfigured_tls((*tls).clone())
                    .no_proxy()
                    // A redirect would turn the POST into a GET without
                    // the lines, and count them delivered.
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(DELIVERY_TIMEOUT)
                    .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|err| err.to_string())?,
            ),
            _ => None,
        };
        let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_string())
            .unwrap_or_else(|_| "berth".into());
        Ok(Sender {
            target,
            app: app.to_string(),
            host_name,
            tls,
            http,
            syslog: None,
        })
    }

    /// Delivers `batch`; an error says why it did not arrive.
    pub async fn send(&mut self, batch: &[StoredLine]) -> Result<(), Failure> {
        match self.target.kind {
            DrainKind::Http => {
                self.post(format::ndjson(batch), "application/x-ndjson")
                    .await
            }
            DrainKind::Otlp => {
                self.post(format::otlp(&self.app, batch), "application/json")
                    .await
            }
            DrainKind::SyslogTcp | DrainKind::SyslogTls => {
                let frames = format::syslog_frames(&self.host_name, batch);
                let written = tokio::time::timeout(DELIVERY_TIMEOUT, self.write_syslog(&frames))
                    .await
                    .unwrap_or_else(|_| Err("timed out".into()));
                if written.is_err() {
                    // A fresh connection next time.
                    self.syslog = None;
                }
                written.map_err(Failure::Retry)
            }
        }
    }

    async fn post(&self, body: Vec<u8>, content_type: &str) -> Result<(), Failure> {
        let Some(http) = &self.http else {
            return Err(Failure::Retry("no HTTP client".into()));
        };
        let response = http
            .post(&self.target.address)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(|err| Failure::Retry(describe(&err.without_url())))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let why = format!("the drain answered {status}");
        // 401, 403 and 404 say the drain's URL or token is wrong (an
        // expired token, a moved endpoint), not that these lines are: they
        // wait for it to be fixed, within the drain's buffer.
        let again = status.is_server_error()
            || status.is_redirection()
            || matches!(status.as_u16(), 401 | 403 | 404 | 408 | 429);
        Err(if again {
            Failure::Retry(why)
        } else {
            Failure::Refused(why)
        })
    }

    async fn write_syslog(&mut self, frames: &[u8]) -> Result<(), String> {
        // A receiver that closed the connection (it restarted, say) still
        // takes a write: the lines would be lost. Ask first.
        if let Some(connection) = self.syslog.as_mut()
            && peer_closed(connection.as_mut())
        {
            self.syslog = None;
        }
        if self.syslog.is_none() {
            let stream = TcpStream::connect(&self.target.address)
                .await
                .map_err(|err| format!("cannot connect to {}: {err}", self.target.address))?;
            let _ = stream.set_nodelay(true);
            self.syslog = Some(if self.target.tls {
                let name = ServerName::try_from(self.target.host.clone())
                    .map_err(|err| format!("`{}`: {err}", self.target.host))?;
                let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|err| format!("TLS with {}: {err}", self.target.address))?;
                Box::new(tls)
            } else {
                Box::new(stream)
            });
        }
        let connection = self.syslog.as_mut().expect("connected above");
        connection
            .write_all(frames)
            .await
            .map_err(|err| format!("writing to {}: {err}", self.target.address))?;
        connection
            .flush()
            .await
            .map_err(|err| format!("writing to {}: {err}", self.target.address))
    }
}

/// Whether the other end closed `connection` (a read would end now).
/// Syslog receivers send nothing, so anything readable means closed.
fn peer_closed(connection: &mut (dyn Connection + Send + Sync + Unpin)) -> bool {
    use futures_util::FutureExt;
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    match connection.read(&mut byte).now_or_never() {
        None => false,
        Some(Ok(_)) | Some(Err(_)) => true,
    }
}

/// A connection a syslog drain writes to, and reads only to see it closed.
pub trait Connection: tokio::io::AsyncRead + tokio::io::AsyncWrite {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite> Connection for T {}

/// A request error with its cause (reqwest's own message names only the URL).
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
