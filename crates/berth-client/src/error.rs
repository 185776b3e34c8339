//! What can go wrong talking to a server.

/// What can go wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No server answered at the address.
    #[error("cannot reach the berth server at {url}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable code such as `not_found`.
        code: String,
        /// What went wrong.
        message: String,
    },
    /// The answer was cut off or malformed.
    #[error("the server's answer could not be read")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A name that would not stay one path segment (`.`, `..`, empty).
    #[error("`{0}` is not a name berth uses")]
    BadName(String),
    /// The pinned certificate could not be used.
    #[error("the server's pinned certificate is unusable: {0}")]
    Pin(String),
}

impl ClientError {
    /// Whether the server was reached but its certificate was not the one
    /// pinned (or did not verify).
    pub fn is_certificate_refused(&self) -> bool {
        let ClientError::Unreachable { source, .. } = self else {
            return false;
        };
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(error) = cause {
            let text = error.to_string();
            if text.contains("certificate") || text.contains("UnknownIssuer") {
                return true;
            }
            cause = error.source();
        }
        false
    }
}
