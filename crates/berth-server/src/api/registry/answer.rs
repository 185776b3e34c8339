//! The registry's answers: its error bodies (`{"errors":[…]}`) and the
//! headers every answer carries.

use std::collections::HashMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_registry::RegistryError;

/// An error answer in the distribution spec's shape.
pub(super) fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{"code": code, "message": message, "detail": {}}]
    });
    let mut answer = (status, axum::Json(body)).into_response();
    answer.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    answer
}

/// A storage failure as an answer.
pub(super) fn failure(err: RegistryError) -> Response {
    if let RegistryError::Io(io) = &err {
        tracing::error!(error = %io, "registry storage");
    }
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut answer = error_response(status, err.code(), &err.to_string());
    if let RegistryError::RangeInvalid { at, .. } = err {
        let range = format!("0-{}", at.saturating_sub(1));
        if let Ok(value) = HeaderValue::from_str(&range) {
            answer.headers_mut().insert(header::RANGE, value);
        }
    }
    answer
}

/// An answer with `status`, `headers` and `body`.
pub(super) fn answer(
    status: StatusCode,
    headers: &[(&str, String)],
    body: axum::body::Body,
) -> Response {
    let mut answer = Response::new(body);
    *answer.status_mut() = status;
    let map = answer.headers_mut();
    map.insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.insert(name, value);
        }
    }
    answer
}

/// A 400 for a request the registry cannot make sense of.
pub(super) fn bad_request(code: &str, message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, code, message)
}

/// `n` and `last` of a paginated list (`_catalog`, `tags/list`): the
/// page of `all` (sorted) and whether more follow.
pub(super) fn page(all: Vec<String>, query: &HashMap<String, String>) -> (Vec<String>, bool) {
    let after: Vec<String> = match query.get("last") {
        Some(last) => all.into_iter().filter(|item| item > last).collect(),
        None => all,
    };
    match query.get("n").and_then(|n| n.parse::<usize>().ok()) {
        // Nothing asked for: nothing, and no next page to loop on.
        Some(0) => (Vec::new(), false),
        Some(n) if n < after.len() => (after.into_iter().take(n).collect(), true),
        _ => (after, false),
    }
}
