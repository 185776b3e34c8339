//! The CLI's side of the API over TLS: the server's CA is pinned at `berth
//! login` (trust on first use, as ssh does with host keys) and every later
//! connection must chain to it. The name in the URL is not checked against
//! the certificate — a server reached at a NATed address or a new name is
//! the same server — the pinned root is what proves who it is.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::TlsError;

fn crypto(err: impl std::fmt::Display) -> TlsError {
    TlsError::Crypto(err.to_string())
}

/// The SHA-256 fingerprint of a certificate, as `AB:CD:…`.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Verifies that the server's chain leads to one pinned root, whatever name
/// it was reached by.
#[derive(Debug)]
struct PinnedRoot {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for PinnedRoot {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client config that trusts only `root_pem`, by chain, not by name.
pub fn pinned_client_config(root_pem: &str) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(certificate.map_err(crypto)?).map_err(crypto)?;
    }
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(crypto)?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(crypto)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedRoot { inner }))
        .with_no_client_auth())
}

/// Verifies that the server's chain holds a CA certificate with one
/// pinned SHA-256 fingerprint and leads to it: how a home server checks
/// its tunnel relay, whose fingerprint comes with the tunnel token.
#[derive(Debug)]
struct PinnedFingerprint {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedFingerprint {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let root = intermediates
            .iter()
            .find(|der| fingerprint(der.as_ref()) == self.fingerprint)
            .ok_or(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(root.clone().into_owned())
            .map_err(|err| rustls::Error::General(err.to_string()))?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|err| rustls::Error::General(err.to_string()))?;
        PinnedRoot { inner }.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client config that trusts only a server whose chain holds the CA
/// certificate with SHA-256 `fingerprint` (hex, with or without colons),
/// by chain, not by name.
pub fn fingerprint_pinned_client_config(
    fingerprint_hex: &str,
) -> Result<rustls::ClientConfig, TlsError> {
    let digits: String = fingerprint_hex
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if digits.len() != 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(crypto("a SHA-256 fingerprint is 64 hex digits"));
    }
    let fingerprint = digits
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(crypto)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedFingerprint {
                fingerprint,
                provider,
            }))
            .with_no_client_auth(),
    )
}

/// Accepts any certificate and keeps the chain: only for the first
/// contact, whose root the user is shown and then pins.
#[derive(Debug)]
struct FirstUse {
    seen: Mutex<Vec<CertificateDer<'static>>>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for FirstUse {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.push(end_entity.clone().into_owned());
        seen.extend(intermediates.iter().map(|der| der.clone().into_owned()));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// The certificate chain the server at `host:port` presents (leaf first),
/// read without trusting it: the root it ends with is what `berth login`
/// shows and pins.
pub async fn first_contact_chain(
    host: &str,
    port: u16,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(FirstUse {
        seen: Mutex::new(Vec::new()),
        schemes: provider
            .signature_verification_algorithms
            .supported_schemes(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(crypto)?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(host.to_string()).map_err(crypto)?;
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|err| TlsError::Crypto(format!("cannot reach {host}:{port}: {err}")))?;
    connector
        .connect(name, tcp)
        .await
        .map_err(|err| TlsError::Crypto(format!("no TLS handshake with {host}:{port}: {err}")))?;
    let chain = verifier
        .seen
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    Ok(chain)
}

/// PEM text of a DER certificate.
pub fn certificate_pem(der: &[u8]) -> String {
    use std::fmt::Write;
    let encoded = base64_encode(der);
    let mut text = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        let _ = writeln!(text, "{}", String::from_utf8_lossy(line));
    }
    text.push_str("-----END CERTIFICATE-----\n");
    text
}

fn base64_encode(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (index, shift) in [18, 12, 6, 0].iter().enumerate() {
            if index <= chunk.len() {
                out.push(TABLE[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_round_trips_through_pem() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::LocalCa::open_or_create(dir.path()).unwrap();
        let der = CertificateDer::from_pem_slice(ca.root_pem().as_bytes()).unwrap();
        assert_eq!(certificate_pem(der.as_ref()), ca.root_pem());
        assert_eq!(fingerprint(der.as_ref()).len(), 32 * 3 - 1);
    }
}
