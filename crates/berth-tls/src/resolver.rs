//! The certificate for each handshake, by the name the client sent.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::{LocalCa, TlsError};

/// Whether berth serves a name (so may have a certificate for it).
pub type NameFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A local-CA certificate is made again after this long (of its 90 days).
const REISSUE_AFTER: Duration = Duration::from_secs(60 * 24 * 3600);

/// The certificates the router's HTTPS serves.
pub struct Certificates {
    ca: LocalCa,
    serves: NameFilter,
    issued: RwLock<HashMap<String, (Arc<CertifiedKey>, Instant)>>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates").finish_non_exhaustive()
    }
}

impl Certificates {
    /// Certificates from `ca` for the names `serves` accepts.
    pub fn new(ca: LocalCa, serves: NameFilter) -> Certificates {
        Certificates {
            ca,
            serves,
            issued: RwLock::new(HashMap::new()),
        }
    }

    /// The local CA.
    pub fn local_ca(&self) -> &LocalCa {
        &self.ca
    }

    /// The certificate for `name` (lowercase), made by the local CA when
    /// there is none yet or it is old; `None` for a name berth does not serve.
    pub fn for_name(&self, name: &str) -> Result<Option<Arc<CertifiedKey>>, TlsError> {
        if !(self.serves)(name) {
            return Ok(None);
        }
        if let Some((key, made)) = self
            .issued
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            && made.elapsed() < REISSUE_AFTER
        {
            return Ok(Some(key.clone()));
        }
        let key = self.ca.issue(name)?;
        self.issued
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(name.to_string(), (key.clone(), Instant::now()));
        Ok(Some(key))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = client_hello.server_name()?.to_ascii_lowercase();
        match self.for_name(&name) {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(name, error = %err, "no certificate");
                None
            }
        }
    }
}

/// The router's TLS settings: TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by
/// ALPN, certificates from `certificates`.
pub fn server_config(
    certificates: Arc<Certificates>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Crypto(err.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_berth_serves_get_a_certificate_and_it_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::open_or_create(dir.path()).unwrap();
        let certificates =
            Certificates::new(ca, Arc::new(|name: &str| name.ends_with(".localhost")));
        let first = certificates.for_name("shop.localhost").unwrap().unwrap();
        let again = certificates.for_name("shop.localhost").unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert!(certificates.for_name("bank.example.com").unwrap().is_none());
    }
}
