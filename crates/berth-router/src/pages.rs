//! The router's own answers: clear pages for unknown, down and failing apps,
//! in any body that a page's bytes convert into.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;

fn page<B: From<Full<Bytes>>>(status: StatusCode, text: String) -> Response<B> {
    let mut response = Response::new(B::from(Full::new(Bytes::from(text))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    headers.insert("x-berth-error", header::HeaderValue::from_static("1"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

/// 404: the host names no app.
pub fn unknown_app<B: From<Full<Bytes>>>(host: &str) -> Response<B> {
    page(
        StatusCode::NOT_FOUND,
        format!(
            "404 Not Found\n\nberth has no app for the host `{host}`.\nApps are served at http://APP.localhost:PORT/ ; `berth apps` lists them.\n"
        ),
    )
}

/// `status` with a short text body: a static site's 404 and 405, a
/// redirect's body.
pub fn status<B: From<Full<Bytes>>>(status: StatusCode, text: String) -> Response<B> {
    page(status, text)
}

/// 200 with `text` as the body: what the router answers itself (an ACME
/// challenge's key authorization).
pub fn text<B: From<Full<Bytes>>>(text: String) -> Response<B> {
    page(StatusCode::OK, text)
}

/// 308 to `location` (`force_https`): the method and body are kept.
pub fn redirect<B: From<Full<Bytes>>>(location: header::HeaderValue) -> Response<B> {
    let mut response = page(
        StatusCode::PERMANENT_REDIRECT,
        format!(
            "308 Permanent Redirect\n\n{}\n",
            location.to_str().unwrap_or("")
        ),
    );
    response.headers_mut().insert(header::LOCATION, location);
    response
}

/// 403: the app's `[edge]` rules do not let this client in.
pub fn forbidden<B: From<Full<Bytes>>>(app: &str) -> Response<B> {
    page(
        StatusCode::FORBIDDEN,
        format!("403 Forbidden\n\n{app} does not take requests from your address.\n"),
    )
}

/// 429 with `Retry-After`: the client is over one of the app's rate limits.
pub fn too_many<B: From<Full<Bytes>>>(app: &str, retry_after: u64) -> Response<B> {
    let mut response = page(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "429 Too Many Requests\n\n{app} limits how often one address may ask; try again in {retry_after} s.\n"
        ),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
    response
}

/// 413: the body is larger than the app takes.
pub fn too_large<B: From<Full<Bytes>>>(app: &str, limit: Option<u64>) -> Response<B> {
    page(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "413 Content Too Large\n\n{app} takes request bodies of at most {} bytes.\n",
            limit.unwrap_or(0)
        ),
    )
}

/// 411: a body of unknown length to an app with a body limit.
pub fn length_required<B: From<Full<Bytes>>>(app: &str) -> Response<B> {
    page(
        StatusCode::LENGTH_REQUIRED,
        format!("411 Length Required\n\n{app} limits body sizes: send Content-Length.\n"),
    )
}

/// 400: a request the router will not pass on, and why.
pub fn bad_request<B: From<Full<Bytes>>>(why: &str) -> Response<B> {
    page(
        StatusCode::BAD_REQUEST,
        format!("400 Bad Request\n\n{why}.\n"),
    )
}

/// 421: a name this connection may not ask for (a tunnel's connection
/// naming what its token does not serve).
pub fn misdirected<B: From<Full<Bytes>>>(host: &str) -> Response<B> {
    page(
        StatusCode::MISDIRECTED_REQUEST,
        format!("421 Misdirected Request\n\n{host} is not served on this connection.\n"),
    )
}

/// 404: no host at all.
pub fn no_host<B: From<Full<Bytes>>>() -> Response<B> {
    page(
        StatusCode::NOT_FOUND,
        "404 Not Found\n\nThe request names no app: send it to http://APP.localhost:PORT/ or set the Host header.\n".into(),
    )
}

/// 503: the app exists but no instance is healthy.
pub fn unavailable<B: From<Full<Bytes>>>(app: &str, reason: Option<&str>) -> Response<B> {
    let reason = reason.unwrap_or("no instance is running");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "503 Service Unavailable\n\nThe app `{app}` cannot answer right now: {reason}.\nSee `berth status --app {app}` and `berth logs --app {app}`.\n"
        ),
    )
}

/// 503: the app was asked to start for this request and did not.
pub fn start_failed<B: From<Full<Bytes>>>(app: &str, reason: Option<&str>) -> Response<B> {
    let reason = reason.unwrap_or("its instance did not start");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "503 Service Unavailable\n\nThe app `{app}` was scaled to zero and could not start: {reason}.\nSee `berth status --app {app}` and `berth logs --app {app}`.\n"
        ),
    )
}

/// 503 with Retry-After: every instance is at its hard limit.
pub fn busy<B: From<Full<Bytes>>>(app: &str, reason: &str) -> Response<B> {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "503 Service Unavailable\n\nThe app `{app}` is at capacity: {reason}. Retry shortly.\n"
        ),
    )
}

/// 502: the instance failed to answer.
pub fn bad_gateway<B: From<Full<Bytes>>>(app: &str, instance: &str, error: &str) -> Response<B> {
    page(
        StatusCode::BAD_GATEWAY,
        format!(
            "502 Bad Gateway\n\nThe app `{app}` did not answer (instance {instance}: {error}).\nSee `berth logs --app {app}`.\n"
        ),
    )
}

/// 504: the app did not answer within its `[edge] request_timeout`.
pub fn timed_out<B: From<Full<Bytes>>>(app: &str, limit: std::time::Duration) -> Response<B> {
    page(
        StatusCode::GATEWAY_TIMEOUT,
        format!(
            "504 Gateway Timeout\n\n{app} did not answer within {} (its [edge] request_timeout).\n",
            berth_proto::format_duration(limit)
        ),
    )
}

/// 431: the request's headers are larger than the app's `[edge] max_header`.
pub fn headers_too_large<B: From<Full<Bytes>>>(app: &str, limit: Option<u64>) -> Response<B> {
    page(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        format!(
            "431 Request Header Fields Too Large\n\n{app} takes headers of at most {} bytes.\n",
            limit.unwrap_or_default()
        ),
    )
}

/// 429 and `Connection: close`: the client already holds as many
/// connections to the app as its `[edge] max_connections` allows.
pub fn too_many_connections<B: From<Full<Bytes>>>(app: &str, limit: u32) -> Response<B> {
    let mut response = page(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "429 Too Many Requests\n\n{app} takes at most {limit} connections from one address; close one and retry.\n"
        ),
    );
    let headers = response.headers_mut();
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}
