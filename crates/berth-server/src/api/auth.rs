//! Bearer-token authentication of every `/v1` route but the health check,
//! and the check that a request names this machine (no DNS rebinding).

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiFailure;
use super::state::ApiState;

pub(super) async fn require_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim());
    if constant_time_eq(presented.as_bytes(), state.token.as_bytes()) {
        next.run(request).await
    } else {
        ApiFailure::Unauthorized.into_response()
    }
}

/// Refuses a request whose `Host` is a name other than `localhost`: a web
/// page on another site that made its name resolve to 127.0.0.1 (DNS
/// rebinding) sends its own name, and gets 421. Clients use the address
/// the server wrote in `server.json`, an IP literal.
pub(super) async fn require_local_host(request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if names_this_machine(host) {
        next.run(request).await
    } else {
        ApiFailure::MisdirectedHost(host.to_string()).into_response()
    }
}

/// Whether `host` (with or without a port) is an IP literal or `localhost`.
fn names_this_machine(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.is_empty()
        || name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok()
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::names_this_machine;

    #[test]
    fn only_addresses_and_localhost_name_this_machine() {
        for local in [
            "127.0.0.1:8079",
            "127.0.0.1",
            "[::1]:8079",
            "localhost:8079",
            "LOCALHOST",
            "10.0.0.5:80",
        ] {
            assert!(names_this_machine(local), "{local}");
        }
        for foreign in [
            "evil.example:8079",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
        ] {
            assert!(!names_this_machine(foreign), "{foreign}");
        }
    }
}
