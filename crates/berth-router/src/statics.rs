//! Files the router serves itself (fly's `[[statics]]`): a `GET` or `HEAD`
//! under a static prefix is answered from the release's folder without
//! reaching an instance (nor waking one). A path that names no file falls
//! through to the app. Paths with `..`, encoded bytes or links that leave
//! the folder are never served. Small files are read whole; larger ones,
//! and byte ranges (`Range: bytes=…`, one range), stream from disk.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::Full;

use crate::file_body::FileBody;
use crate::upstream::ProxyBody;

/// Files up to this size are read whole; larger ones are streamed.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// How long reading one file may hold a blocking thread (a slow or stuck
/// disk): past it the request goes to the app.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A URL prefix served from a folder of a release's slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticDir {
    /// The URL path prefix (`/static`).
    pub prefix: String,
    /// The slug: nothing outside it is ever opened.
    pub root: PathBuf,
    /// The folder within the slug (`public`).
    pub dir: PathBuf,
}

/// `path` with its `%XX` escapes decoded (a file name with a space or an
/// accent), or `None` when one is malformed or decodes to `/`, `\\` or NUL.
fn percent_decoded(path: &str) -> Option<String> {
    if !path.contains('%') {
        return Some(path.to_string());
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
            let byte = u8::from_str_radix(hex, 16).ok()?;
            if matches!(byte, b'/' | b'\\' | 0) {
                return None;
            }
            out.push(byte);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The slug-relative path `path` names under one of `statics`, and the slug.
fn locate<'a>(statics: &'a [StaticDir], path: &str) -> Option<(&'a Path, PathBuf)> {
    let path = percent_decoded(path)?;
    let path = path.as_str();
    if path.contains("..") || path.contains('\\') {
        return None;
    }
    let entry = statics.iter().find(|entry| {
        let prefix = entry.prefix.trim_end_matches('/');
        path == prefix || path.starts_with(&format!("{prefix}/"))
    })?;
    let rest = path[entry.prefix.trim_end_matches('/').len()..].trim_start_matches('/');
    let mut relative = entry.dir.join(rest);
    if rest.is_empty() || rest.ends_with('/') {
        relative = relative.join("index.html");
    }
    Some((&entry.root, relative))
}

/// Opens the file (or a folder's `index.html`) without following links or
/// leaving the slug, which the app owns and may change at any time.
fn open(root: &Path, relative: &Path) -> Option<(std::fs::File, PathBuf)> {
    let file = berth_runtime::open_beneath(root, relative).ok()?;
    let metadata = file.metadata().ok()?;
    if metadata.is_dir() {
        let index = relative.join("index.html");
        let file = berth_runtime::open_beneath(root, &index).ok()?;
        return file.metadata().ok()?.is_file().then_some((file, index));
    }
    metadata.is_file().then(|| (file, relative.to_path_buf()))
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

/// A `Range` header's one byte range of a file of `length` bytes.
#[derive(Debug, PartialEq)]
enum Wanted {
    /// No range (or several, or one berth does not read): the whole file.
    Whole,
    /// `length` bytes from `start`.
    Part { start: u64, length: u64 },
    /// A range that starts past the end.
    Unsatisfiable,
}

fn wanted(range: Option<&str>, length: u64) -> Wanted {
    let Some(spec) = range.and_then(|value| {
        let value = value.trim();
        value
            .get(..6)
            .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
            .map(|_| &value[6..])
    }) else {
        return Wanted::Whole;
    };
    // Digits only (`u64::parse` would take `+5`).
    let number = |text: &str| {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u64>().ok())
            .flatten()
    };
    // Several ranges: the whole file, as RFC 9110 allows.
    let Some((first, last)) = spec.split_once('-').filter(|_| !spec.contains(',')) else {
        return Wanted::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return match number(last) {
            Some(0) => Wanted::Unsatisfiable,
            Some(_) if length == 0 => Wanted::Unsatisfiable,
            Some(suffix) => Wanted::Part {
                start: length - suffix.min(length),
                length: suffix.min(length),
            },
            None => Wanted::Whole,
        };
    }
    let Some(start) = number(first) else {
        return Wanted::Whole;
    };
    if start >= length {
        return Wanted::Unsatisfiable;
    }
    let end = match last {
        "" => length - 1,
        last => match number(last) {
            Some(end) if end >= start => end.min(length - 1),
            _ => return Wanted::Whole,
        },
    };
    Wanted::Part {
        start,
        length: end - start + 1,
    }
}

/// What is read of a file before answering.
enum Read {
    /// The whole file (or nothing, for `HEAD`).
    Whole(Vec<u8>),
    /// Streamed: `length` bytes from `start`.
    Stream {
        file: std::fs::File,
        start: u64,
        length: u64,
        part: bool,
    },
    /// `416`.
    Unsatisfiable,
}

/// The `Range` a request asks for, if it may be honoured: never with an
/// `If-Range` (berth sends no validator it could match, so RFC 9110 says
/// to send the whole file — a resumed download then never joins two
/// different files).
pub fn range_of(headers: &http::HeaderMap) -> Option<&str> {
    if headers.contains_key(header::IF_RANGE) {
        return None;
    }
    headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
}

/// Answers `method path` from `statics`, or `None` to pass it to the app.
pub async fn serve(
    statics: &[StaticDir],
    method: &Method,
    path: &str,
) -> Option<Response<ProxyBody>> {
    serve_part(statics, method, path, None).await
}

/// [`serve`], honouring a `GET`'s `Range` header (`range`).
pub async fn serve_part(
    statics: &[StaticDir],
    method: &Method,
    path: &str,
    range: Option<&str>,
) -> Option<Response<ProxyBody>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let (root, relative) = locate(statics, path)?;
    let (root, relative) = (root.to_path_buf(), relative);
    let head = method == Method::HEAD;
    let range = if head {
        None
    } else {
        range.map(str::to_string)
    };
    let read = tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Seek, SeekFrom};
        let (mut file, name) = open(&root, &relative)?;
        let length = file.metadata().ok()?.len();
        let read = match wanted(range.as_deref(), length) {
            Wanted::Unsatisfiable => Read::Unsatisfiable,
            Wanted::Whole if head => Read::Whole(Vec::new()),
            Wanted::Whole if length <= MAX_FILE_BYTES => {
                let mut body = Vec::new();
                file.take(MAX_FILE_BYTES).read_to_end(&mut body).ok()?;
                Read::Whole(body)
            }
            Wanted::Whole => Read::Stream {
                file,
                start: 0,
                length,
                part: false,
            },
            Wanted::Part { start, length } => {
                file.seek(SeekFrom::Start(start)).ok()?;
                Read::Stream {
                    file,
                    start,
                    length,
                    part: true,
                }
            }
        };
        Some((read, length, name))
    });
    let (read, total, name) = tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .ok()?
        .ok()??;
    let (body, status, length, content_range) = match read {
        Read::Whole(body) => {
            let length = if head { total } else { body.len() as u64 };
            let body = ProxyBody::Page(Full::new(Bytes::from(body)));
            (body, StatusCode::OK, length, None)
        }
        Read::Stream {
            file,
            start,
            length,
            part,
        } => {
            let file = tokio::fs::File::from_std(file);
            let body = ProxyBody::File(FileBody::new(file, length, READ_TIMEOUT));
            if part {
                let range = format!("bytes {start}-{}/{total}", start + length - 1);
                (body, StatusCode::PARTIAL_CONTENT, length, Some(range))
            } else {
                (body, StatusCode::OK, length, None)
            }
        }
        Read::Unsatisfiable => (
            ProxyBody::Empty,
            StatusCode::RANGE_NOT_SATISFIABLE,
            0,
            Some(format!("bytes */{total}")),
        ),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type(&name)),
    );
    headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(length));
    headers.insert(
        header::ACCEPT_RANGES,
        header::HeaderValue::from_static("bytes"),
    );
    if let Some(range) = content_range.and_then(|range| header::HeaderValue::from_str(&range).ok())
    {
        headers.insert(header::CONTENT_RANGE, range);
    }
    headers.insert("x-berth-static", header::HeaderValue::from_static("1"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_under_the_prefix_are_served_and_nothing_outside() {
        let slug = tempfile::tempdir().unwrap();
        let public = slug.path().join("public");
        std::fs::create_dir_all(public.join("css")).unwrap();
        std::fs::write(public.join("css/site.css"), "body{}").unwrap();
        std::fs::write(public.join("index.html"), "<h1>hi</h1>").unwrap();
        std::fs::write(slug.path().join("secret.txt"), "no").unwrap();
        std::os::unix::fs::symlink(slug.path().join("secret.txt"), public.join("link.txt"))
            .unwrap();
        let statics = [StaticDir {
            prefix: "/static".into(),
            root: slug.path().to_path_buf(),
            dir: PathBuf::from("public"),
        }];
        let body = |response: Option<Response<ProxyBody>>| async move {
            use http_body_util::BodyExt;
            let response = response?;
            let bytes = response.into_body().collect().await.ok()?.to_bytes();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        };
        let get = Method::GET;
        assert_eq!(
            body(serve(&statics, &get, "/static/css/site.css").await)
                .await
                .as_deref(),
            Some("body{}")
        );
        assert_eq!(
            body(serve(&statics, &get, "/static/").await)
                .await
                .as_deref(),
            Some("<h1>hi</h1>")
        );
        assert_eq!(body(serve(&statics, &get, "/static/css").await).await, None);
        assert!(serve(&statics, &get, "/static/missing.css").await.is_none());
        assert!(serve(&statics, &get, "/staticky/site.css").await.is_none());
        assert!(
            serve(&statics, &get, "/static/../secret.txt")
                .await
                .is_none()
        );
        assert!(
            serve(&statics, &get, "/static/%2e%2e/secret.txt")
                .await
                .is_none()
        );
        assert!(
            serve(&statics, &get, "/static/css%2fsite.css")
                .await
                .is_none()
        );
        assert!(serve(&statics, &get, "/static/%zz").await.is_none());
        std::fs::write(public.join("a file é.txt"), "spaced").unwrap();
        assert_eq!(
            body(serve(&statics, &get, "/static/a%20file%20%C3%A9.txt").await)
                .await
                .as_deref(),
            Some("spaced")
        );
        assert!(
            serve(&statics, &get, "/static/link.txt").await.is_none(),
            "a link out of the folder"
        );
        assert!(
            serve(&statics, &Method::POST, "/static/css/site.css")
                .await
                .is_none()
        );
        // The app swaps its static folder for a link to `/`: nothing is served.
        std::fs::rename(&public, slug.path().join("old")).unwrap();
        std::os::unix::fs::symlink("/", &public).unwrap();
        assert!(serve(&statics, &get, "/static/etc/passwd").await.is_none());
        assert_eq!(content_type(Path::new("a.css")), "text/css; charset=utf-8");
    }

    #[test]
    fn one_byte_range_is_read_and_others_mean_the_whole_file() {
        let part = |start, length| Wanted::Part { start, length };
        assert_eq!(wanted(None, 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=0-9"), 100), part(0, 10));
        assert_eq!(wanted(Some("bytes=90-"), 100), part(90, 10));
        assert_eq!(wanted(Some("bytes=90-500"), 100), part(90, 10));
        assert_eq!(wanted(Some("bytes=-30"), 100), part(70, 30));
        assert_eq!(wanted(Some("bytes=-300"), 100), part(0, 100));
        assert_eq!(wanted(Some("bytes=100-"), 100), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=-0"), 100), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=0-1,5-6"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=9-3"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("items=0-1"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=x-1"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=+5-9"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("Bytes=0-9"), 100), part(0, 10));
    }

    #[tokio::test]
    async fn a_large_file_streams_whole_and_by_range() {
        use http_body_util::BodyExt;
        let slug = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(slug.path().join("public")).unwrap();
        let bytes: Vec<u8> = (0..(MAX_FILE_BYTES as usize + 1000))
            .map(|index| (index % 251) as u8)
            .collect();
        std::fs::write(slug.path().join("public/big.bin"), &bytes).unwrap();
        let statics = [StaticDir {
            prefix: "/static".into(),
            root: slug.path().to_path_buf(),
            dir: PathBuf::from("public"),
        }];
        let whole = serve(&statics, &Method::GET, "/static/big.bin")
            .await
            .expect("a large file is served");
        assert_eq!(whole.status(), StatusCode::OK);
        assert_eq!(
            whole.headers()[header::CONTENT_LENGTH],
            bytes.len().to_string()
        );
        let body = whole.into_body().collect().await.unwrap().to_bytes();
        assert!(body == bytes, "the streamed file differs");

        let last = serve_part(
            &statics,
            &Method::GET,
            "/static/big.bin",
            Some("bytes=-1000"),
        )
        .await
        .unwrap();
        assert_eq!(last.status(), StatusCode::PARTIAL_CONTENT);
        let total = bytes.len();
        assert_eq!(
            last.headers()[header::CONTENT_RANGE],
            format!("bytes {}-{}/{total}", total - 1000, total - 1)
        );
        let body = last.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], &bytes[total - 1000..]);

        let past = serve_part(
            &statics,
            &Method::GET,
            "/static/big.bin",
            Some("bytes=999999999-"),
        )
        .await
        .unwrap();
        assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(
            past.headers()[header::CONTENT_RANGE],
            format!("bytes */{total}")
        );
    }

    #[tokio::test]
    async fn a_fifo_in_the_static_folder_is_passed_to_the_app_at_once() {
        let slug = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(slug.path().join("public")).unwrap();
        let fifo = slug.path().join("public/stuck");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let statics = [StaticDir {
            prefix: "/static".into(),
            root: slug.path().to_path_buf(),
            dir: PathBuf::from("public"),
        }];
        // Opening a FIFO for reading waits for a writer: that held a
        // blocking thread forever. Now it is refused as not a file, at once.
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            serve(&statics, &Method::GET, "/static/stuck"),
        )
        .await
        .expect("answered at once");
        assert!(answer.is_none(), "a FIFO is not served");
    }
}
