//! The dashboard's scripts and styles, embedded in the binary (no CDN:
//! it works offline): htmx (vendored from npm, 0BSD), berth's own small
//! script for live logs, and its stylesheet.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const HTMX: &[u8] = include_bytes!("../../../assets/htmx.min.js");
const SCRIPT: &[u8] = include_bytes!("../../../assets/dashboard.js");
const STYLE: &[u8] = include_bytes!("../../../assets/dashboard.css");

/// `/ui/assets/{name}`.
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    let (body, content_type) = match name.as_str() {
        "htmx.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        "dashboard.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "dashboard.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}
