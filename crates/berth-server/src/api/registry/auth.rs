//! Who may use the registry: the API token, presented the ways registry
//! clients present it — HTTP basic with the token as the password
//! (`skopeo --creds`, `docker login -p`), a bearer API token, or a
//! short-lived registry token from `/v2/token` (the dance docker does after
//! a `Bearer` challenge). Unauthenticated requests get that challenge.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};

use super::answer::error_response;
use crate::api::auth::constant_time_eq;
use crate::api::state::ApiState;

/// How long a registry token lasts.
const TOKEN_LIFETIME: u64 = 3600;

/// The prefix of registry tokens.
const TOKEN_PREFIX: &str = "berth-registry.";

fn signature(api_token: &str, expires: u64) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(api_token.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("registry:{expires}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A registry token valid until `expires` (unix seconds).
fn issue(api_token: &str, expires: u64) -> String {
    format!("{TOKEN_PREFIX}{expires}.{}", signature(api_token, expires))
}

/// Whether `presented` is a registry token of `api_token` still valid at `now`.
fn valid_token(api_token: &str, presented: &str, now: u64) -> bool {
    let Some((expires, signed)) = presented
        .strip_prefix(TOKEN_PREFIX)
        .and_then(|rest| rest.split_once('.'))
    else {
        return false;
    };
    let Ok(expires) = expires.parse::<u64>() else {
        return false;
    };
    now < expires && constant_time_eq(signature(api_token, expires).as_bytes(), signed.as_bytes())
}

/// Which credentials a request may present.
#[derive(Clone, Copy, PartialEq)]
enum Accept {
    /// The API token, or a registry token it signed.
    AnyToken,
    /// The API token only: what a registry token is minted with, so a
    /// leaked registry token cannot renew itself.
    ApiTokenOnly,
}

/// How a request authenticates, if it does.
fn authenticated(headers: &HeaderMap, api_token: &str, now: u64, accept: Accept) -> bool {
    let Some((scheme, credentials)) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
    else {
        return false;
    };
    let credentials = credentials.trim();
    let same = |presented: &str| constant_time_eq(presented.as_bytes(), api_token.as_bytes());
    if scheme.eq_ignore_ascii_case("basic") {
        base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()
            .and_then(|decoded| String::from_utf8(decoded).ok())
            .and_then(|pair| pair.split_once(':').map(|(_, password)| same(password)))
            .unwrap_or(false)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        same(credentials)
            || (accept == Accept::AnyToken && valid_token(api_token, credentials, now))
    } else {
        false
    }
}

fn now() -> u64 {
    berth_store::now_unix()
}

/// The challenge and error of an unauthenticated request.
fn challenge(headers: &HeaderMap, tls: bool) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("127.0.0.1");
    let scheme = if tls { "https" } else { "http" };
    let challenge = format!(r#"Bearer realm="{scheme}://{host}/v2/token",service="berth""#);
    let mut answer = error_response(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "authentication required: the API token, as the password (any user name)",
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        answer.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    answer
}

/// Lets authenticated requests through; challenges the others.
pub(super) async fn require_registry_auth(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    if authenticated(request.headers(), &state.token, now(), Accept::AnyToken) {
        next.run(request).await
    } else {
        challenge(request.headers(), state.api_is_tls)
    }
}

/// `GET /v2/token`: a registry token for credentials that authenticate.
pub(super) async fn token(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let now = now();
    if !authenticated(&headers, &state.token, now, Accept::ApiTokenOnly) {
        return challenge(&headers, state.api_is_tls);
    }
    let token = issue(&state.token, now + TOKEN_LIFETIME);
    let issued_at = crate::edge::certs::humantime_date(std::time::SystemTime::now());
    axum::Json(serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": TOKEN_LIFETIME,
        "issued_at": issued_at,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_api_token_authenticates_as_basic_bearer_or_a_registry_token() {
        let basic = |pair: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        };
        let any = |headers: &HeaderMap, key: &str, now: u64| {
            authenticated(headers, key, now, Accept::AnyToken)
        };
        assert!(any(&with(&basic("anyone:secret")), "secret", 0));
        assert!(!any(&with(&basic("secret:wrong")), "secret", 0));
        assert!(!any(&with("Basic !!!"), "secret", 0));
        assert!(any(&with("Bearer secret"), "secret", 0));
        let token = issue("secret", 100);
        assert!(any(&with(&format!("bearer {token}")), "secret", 99));
        // Expired, signed with another API token, or with its expiry changed.
        assert!(!any(&with(&format!("Bearer {token}")), "secret", 100));
        assert!(!any(&with(&format!("Bearer {token}")), "other", 99));
        let stretched = token.replace("registry.100.", "registry.999.");
        assert!(!any(&with(&format!("Bearer {stretched}")), "secret", 99));
        assert!(!any(&HeaderMap::new(), "secret", 0));
        // A registry token does not mint another.
        let minting = Accept::ApiTokenOnly;
        let bearer = with(&format!("Bearer {token}"));
        assert!(!authenticated(&bearer, "secret", 99, minting));
        assert!(authenticated(
            &with(&basic("me:secret")),
            "secret",
            99,
            minting
        ));
    }
}
