//! berth's tunnel, for a home server that cannot accept connections
//! (CGNAT, a blocked port 80): `berth relay` runs on any public host; the
//! home server dials it and keeps one TLS connection up, over which the
//! relay opens an HTTP/2 stream per client connection. HTTPS is forwarded
//! by SNI without being decrypted (certificates and keys stay at home) and
//! port 80 by `Host`, for HTTP-01 challenges and redirects; each stream
//! starts with a PROXY v2 header carrying the client's address. See
//! `protocol` for the wire, `tokens` for who may serve what.

pub mod home;
pub mod protocol;
pub mod relay;
pub mod tokens;

pub use home::{Destinations, TunnelState, Tunneled};
pub use relay::RelayConfig;
pub use tokens::{RelayTokens, TunnelToken};

/// What went wrong in the tunnel or the relay.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// A token, or the tokens file, is unusable.
    #[error("{0}")]
    Token(String),
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(String),
    /// The peer did not follow the protocol, or went away.
    #[error("{0}")]
    Protocol(String),
    /// A file or socket failed.
    #[error("{0}")]
    Io(String),
}
