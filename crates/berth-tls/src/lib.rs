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

mod ca;
mod resolver;

pub use ca::LocalCa;
pub use resolver::{Certificates, NameFilter, server_config};

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
