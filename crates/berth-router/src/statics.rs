//! Files the router serves itself (fly's `[[statics]]`): a `GET` or `HEAD`
//! under a static prefix is answered from the release's folder without
//! reaching an instance (nor waking one). A path that names no file falls
//! through to the app. Paths with `..`, encoded bytes or links that leave
//! the folder are never served.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::Full;

use crate::upstream::ProxyBody;

/// Files larger than this go to the app.
const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// A URL prefix served from a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticDir {
    /// The URL path prefix (`/static`).
    pub prefix: String,
    /// The folder (inside a release's slug).
    pub dir: PathBuf,
}

/// The file `path` names under one of `statics`, if any.
fn locate(statics: &[StaticDir], path: &str) -> Option<PathBuf> {
    if path.contains("..") || path.contains('%') || path.contains('\\') {
        return None;
    }
    let entry = statics.iter().find(|entry| {
        let prefix = entry.prefix.trim_end_matches('/');
        path == prefix || path.starts_with(&format!("{prefix}/"))
    })?;
    let rest = path[entry.prefix.trim_end_matches('/').len()..].trim_start_matches('/');
    let mut file = entry.dir.join(rest);
    if rest.is_empty() || rest.ends_with('/') || file.is_dir() {
        file = file.join("index.html");
    }
    let root = entry.dir.canonicalize().ok()?;
    let real = file.canonicalize().ok()?;
    (real.starts_with(&root) && real.is_file()).then_some(real)
}

fn content_type(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|ext| ext.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("wasm") => "application/wasm",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("pdf") => "application/pdf",
        Some("xml") => "application/xml",
        _ => "application/octet-stream",
    }
}

/// Answers `method path` from `statics`, or `None` to pass it to the app.
pub async fn serve(
    statics: &[StaticDir],
    method: &Method,
    path: &str,
) -> Option<Response<ProxyBody>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let statics = statics.to_vec();
    let path = path.to_string();
    let file = tokio::task::spawn_blocking(move || locate(&statics, &path))
        .await
        .ok()??;
    let metadata = tokio::fs::metadata(&file).await.ok()?;
    if metadata.len() > MAX_FILE_BYTES {
        return None;
    }
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(tokio::fs::read(&file).await.ok()?)
    };
    let mut response = Response::new(ProxyBody::Page(Full::new(body)));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type(&file)),
    );
    headers.insert(
        header::CONTENT_LENGTH,
        header::HeaderValue::from(metadata.len()),
    );
    headers.insert("x-berth-static", header::HeaderValue::from_static("1"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_under_the_prefix_are_found_and_nothing_outside() {
        let dir = tempfile::tempdir().unwrap();
        let public = dir.path().join("public");
        std::fs::create_dir_all(public.join("css")).unwrap();
        std::fs::write(public.join("css/site.css"), "body{}").unwrap();
        std::fs::write(public.join("index.html"), "<h1>hi</h1>").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "no").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), public.join("link.txt")).unwrap();
        let statics = [StaticDir {
            prefix: "/static".into(),
            dir: public.clone(),
        }];
        let real = public.canonicalize().unwrap();
        assert_eq!(
            locate(&statics, "/static/css/site.css"),
            Some(real.join("css/site.css"))
        );
        assert_eq!(locate(&statics, "/static/"), Some(real.join("index.html")));
        assert_eq!(locate(&statics, "/static"), Some(real.join("index.html")));
        assert_eq!(locate(&statics, "/static/missing.css"), None);
        assert_eq!(locate(&statics, "/staticky/site.css"), None);
        assert_eq!(locate(&statics, "/static/../secret.txt"), None);
        assert_eq!(locate(&statics, "/static/%2e%2e/secret.txt"), None);
        assert_eq!(
            locate(&statics, "/static/link.txt"),
            None,
            "a link out of the folder"
        );
        assert_eq!(content_type(Path::new("a.css")), "text/css; charset=utf-8");
    }
}
