//! berth's certificates.
//!
//! [`LocalCa`] is berth's own certificate authority (`tls internal`): made
//! once in the data dir, it signs certificates for names a public CA cannot
//! serve (`APP.localhost`, LAN names); `berth certs root` prints its
//! certificate for a browser or system to trust. [`Certificates`] is what
//! the router's HTTPS asks for each handshake: the certificate for the name
//! the client sent (SNI), issued by the local CA on first use — and only
//! for a name berth serves, so a stranger cannot make berth mint
//! certificates for anything it likes.

mod acme;
mod ari;
mod ca;
mod pinning;
mod resolver;

pub use acme::{
    ACME_TLS_ALPN, AcmeClient, AcmeFailure, AcmeSettings, Challenges, Issued, LETS_ENCRYPT,
};
pub use ari::{MAX_CHECK_INTERVAL, MIN_CHECK_INTERVAL, RenewalWindow, renewal_time};
pub use ca::LocalCa;
pub use ca::write_private;
pub use pinning::{
    certificate_pem, fingerprint, fingerprint_pinned_client_config, first_contact_chain,
    pinned_client_config,
};
pub use resolver::{
    Certificates, NameFilter, PublicCertificate, server_config, single_cert_config,
};

/// Why a certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file of the CA could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A key or certificate could not be made or read.
    #[error("{0}")]
    Crypto(String),
}

/// A short, stable name for `text` (file names of per-directory state).
pub(crate) fn short_hash(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
