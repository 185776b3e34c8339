//! The certificate for each handshake, by the name the client sent: the
//! CA's certificate for a public name once it is issued (never a
//! self-signed stand-in meanwhile), the local CA's for any other name
//! berth serves, the TLS-ALPN-01 validation certificate to a CA that asks
//! for `acme-tls/1`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::{Challenges, Issued, LocalCa, TlsError};

/// Whether a name passes a test (berth serves it; it is public).
pub type NameFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Sessions kept for resumption without a ticket.
const SESSION_CACHE: usize = 16_384;

/// A local-CA certificate is made again after this long (of its 90 days).
const REISSUE_AFTER: Duration = Duration::from_secs(60 * 24 * 3600);

/// A certificate from the ACME CA, as served.
#[derive(Clone)]
pub struct PublicCertificate {
    /// The chain and key, for rustls.
    pub key: Arc<CertifiedKey>,
    /// When it became valid.
    pub not_before: SystemTime,
    /// When it expires.
    pub not_after: SystemTime,
}

/// The certificates the router's HTTPS serves.
pub struct Certificates {
    ca: LocalCa,
    serves: NameFilter,
    public: NameFilter,
    challenges: Arc<Challenges>,
    dir: PathBuf,
    issued: RwLock<HashMap<String, (Arc<CertifiedKey>, Instant)>>,
    from_ca: RwLock<HashMap<String, PublicCertificate>>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates").finish_non_exhaustive()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Certificates {
    /// Certificates for the names `serves` accepts: from `ca`, but for the
    /// names `public` accepts, which get only what an ACME CA issued (kept
    /// in `dir`, loaded now).
    pub fn new(
        ca: LocalCa,
        serves: NameFilter,
        public: NameFilter,
        challenges: Arc<Challenges>,
        dir: &Path,
    ) -> Certificates {
        let certificates = Certificates {
            ca,
            serves,
            public,
            challenges,
            dir: dir.to_path_buf(),
            issued: RwLock::new(HashMap::new()),
            from_ca: RwLock::new(HashMap::new()),
        };
        certificates.load();
        certificates
    }

    /// The local CA.
    pub fn local_ca(&self) -> &LocalCa {
        &self.ca
    }

    fn load(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.strip_suffix(".pem"))
            else {
                continue;
            };
            let key_path = self.dir.join(format!("{name}.key"));
            let loaded = std::fs::read_to_string(&path)
                .and_then(|chain| std::fs::read_to_string(&key_path).map(|key| (chain, key)));
            match loaded
                .map_err(|err| TlsError::Crypto(err.to_string()))
                .and_then(|(chain_pem, key_pem)| public_certificate(&chain_pem, &key_pem))
            {
                Ok(certificate) => {
                    write(&self.from_ca).insert(name.to_string(), certificate);
                }
                Err(err) => {
                    tracing::warn!(name, error = %err, "a stored certificate is unreadable")
                }
            }
        }
    }

    /// Keeps and serves what the CA issued for `name` (files in the
    /// certificates folder, the key 0600).
    pub fn install(&self, name: &str, issued: &Issued) -> Result<PublicCertificate, TlsError> {
        let certificate = public_certificate(&issued.chain_pem, &issued.key_pem)?;
        let io = |path: PathBuf| {
            move |source| TlsError::Io {
                what: "cannot write",
                path,
                source,
            }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(self.dir.clone()))?;
        let key_path = self.dir.join(format!("{name}.key"));
        crate::ca::write_private(&key_path, &issued.key_pem).map_err(io(key_path))?;
        let chain_path = self.dir.join(format!("{name}.pem"));
        std::fs::write(&chain_path, &issued.chain_pem).map_err(io(chain_path))?;
        write(&self.from_ca).insert(name.to_string(), certificate.clone());
        Ok(certificate)
    }

    /// What the CA issued for `name`, if anything.
    pub fn public_certificate(&self, name: &str) -> Option<PublicCertificate> {
        read(&self.from_ca).get(name).cloned()
    }

    /// The certificate for `name` (lowercase): the CA's for a public name,
    /// else the local CA's, made when there is none yet or it is old;
    /// `None` for a name berth does not serve.
    pub fn for_name(&self, name: &str) -> Result<Option<Arc<CertifiedKey>>, TlsError> {
        if !(self.serves)(name) {
            return Ok(None);
        }
        if (self.public)(name) {
            return Ok(read(&self.from_ca).get(name).map(|found| found.key.clone()));
        }
        if let Some((key, made)) = read(&self.issued).get(name)
            && made.elapsed() < REISSUE_AFTER
        {
            return Ok(Some(key.clone()));
        }
        let key = self.ca.issue(name)?;
        write(&self.issued).insert(name.to_string(), (key.clone(), Instant::now()));
        Ok(Some(key))
    }
}

/// A chain and key of PEM text, with the leaf's validity.
fn public_certificate(chain_pem: &str, key_pem: &str) -> Result<PublicCertificate, TlsError> {
    let key = crate::ca::certified_key_from_pem(chain_pem, key_pem)?;
    let leaf = key
        .cert
        .first()
        .ok_or_else(|| TlsError::Crypto("an empty chain".into()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|err| TlsError::Crypto(format!("cannot read the certificate: {err}")))?;
    let at = |seconds: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64);
    Ok(PublicCertificate {
        not_before: at(parsed.validity().not_before.timestamp()),
        not_after: at(parsed.validity().not_after.timestamp()),
        key,
    })
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = client_hello.server_name()?.to_ascii_lowercase();
        let validation = client_hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|protocol| protocol == crate::ACME_TLS_ALPN));
        if validation {
            return self.challenges.alpn_certificate(&name);
        }
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
/// ALPN (and `acme-tls/1` for TLS-ALPN-01), certificates from
/// `certificates`.
pub fn server_config(
    certificates: Arc<Certificates>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(server_provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Crypto(err.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.ignore_client_order = true;
    config.alpn_protocols = vec![
        b"h2".to_vec(),
        b"http/1.1".to_vec(),
        crate::ACME_TLS_ALPN.to_vec(),
    ];
    // Returning clients resume instead of a full handshake: by ticket
    // (TLS 1.3 and 1.2) or from a cache big enough for a busy edge.
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    // One ticket, as Go sends: a client resumes from it; a second costs
    // every handshake for clients that open several connections at once.
    config.send_tls13_tickets = 1;
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
        .map_err(|err| TlsError::Crypto(err.to_string()))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_berth_serves_get_a_certificate_and_public_ones_none_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::open_or_create(dir.path()).unwrap();
        let certificates = Certificates::new(
            ca,
            Arc::new(|name: &str| name != "bank.example.com"),
            Arc::new(|name: &str| name.ends_with(".example.org")),
            Arc::new(Challenges::default()),
            &dir.path().join("certs"),
        );
        let first = certificates.for_name("shop.localhost").unwrap().unwrap();
        let again = certificates.for_name("shop.localhost").unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert!(certificates.for_name("bank.example.com").unwrap().is_none());
        assert!(
            certificates.for_name("www.example.org").unwrap().is_none(),
            "no self-signed stand-in for a public name"
        );
    }
}

/// TLS settings that present one certificate whatever the name (the API's).
pub fn single_cert_config(
    chain_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let key = crate::ca::certified_key_from_pem(chain_pem, key_pem)?;
    let mut config = rustls::ServerConfig::builder_with_provider(server_provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Crypto(err.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(OneCertificate(key)));
    config.ignore_client_order = true;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// aws-lc-rs with the SHA-256 suites first, chosen by the server's order:
/// as strong for these keys, and SHA-256 has CPU instructions (SHA-NI)
/// where SHA-384 often does not, which makes each handshake cheaper (the
/// order Go's and Caddy's TLS choose too).
fn server_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::cipher_suite::*;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_CHACHA20_POLY1305_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ];
    Arc::new(provider)
}

/// Presents one certificate to every client.
#[derive(Debug)]
struct OneCertificate(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
