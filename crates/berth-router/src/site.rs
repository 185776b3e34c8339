//! A static site (Render's `runtime: static`): the router answers every
//! request from the release's files and no instance runs. A path that names
//! a file (or a folder's `index.html`) is served; else the first rule that
//! matches rewrites it to another file or redirects; else the site's
//! `404.html` answers 404 (or a plain 404 page). Headers whose path matches
//! are added to every answer. Only GET and HEAD.

use std::path::PathBuf;

use berth_proto::{SiteHeader, SiteRule};
use http::{Method, Response, StatusCode, header};

use crate::pages;
use crate::statics::{self, StaticDir};
use crate::upstream::ProxyBody;

/// A site's files and rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The release's slug: nothing outside it is opened.
    pub root: PathBuf,
    /// The folder of the slug served at `/`.
    pub dir: PathBuf,
    /// Rewrites and redirects, in order.
    pub rules: Vec<SiteRule>,
    /// Headers for matching paths.
    pub headers: Vec<SiteHeader>,
}

/// The answer to `method path` (with a `Range` header's value, if any).
pub async fn answer(
    site: &Site,
    method: &Method,
    path: &str,
    range: Option<&str>,
) -> Response<ProxyBody> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = pages::status(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 Method Not Allowed\n\nA static site answers GET and HEAD.\n".into(),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let files = [StaticDir {
        prefix: "/".into(),
        root: site.root.clone(),
        dir: site.dir.clone(),
    }];
    let mut response = match statics::serve_part(&files, method, path, range).await {
        Some(found) => found,
        None => by_rule(site, &files, method, path).await,
    };
    for header in &site.headers {
        if berth_proto::match_path(&header.path, path).is_some()
            && let (Ok(name), Ok(value)) = (
                header::HeaderName::from_bytes(header.name.as_bytes()),
                header::HeaderValue::from_str(&header.value),
            )
        {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

async fn by_rule(
    site: &Site,
    files: &[StaticDir],
    method: &Method,
    path: &str,
) -> Response<ProxyBody> {
    let Some((rule, to)) = site
        .rules
        .iter()
        .find_map(|rule| Some((rule, rule.destination_for(path)?)))
    else {
        return not_found(files, method).await;
    };
    match rule.redirect {
        Some(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            let Ok(location) = header::HeaderValue::from_str(&to) else {
                return not_found(files, method).await;
            };
            let mut response = pages::status(status, format!("{status}\n\n{to}\n"));
            response.headers_mut().insert(header::LOCATION, location);
            response
        }
        None => match statics::serve(files, method, &to).await {
            Some(found) => found,
            None => not_found(files, method).await,
        },
    }
}

/// The site's own `404.html` with status 404, else a plain page.
async fn not_found(files: &[StaticDir], method: &Method) -> Response<ProxyBody> {
    if let Some(mut page) = statics::serve(files, method, "/404.html").await {
        *page.status_mut() = StatusCode::NOT_FOUND;
        return page;
    }
    pages::status(
        StatusCode::NOT_FOUND,
        "404 Not Found\n\nThis site has no such page.\n".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response<ProxyBody>) -> (u16, String, Option<String>) {
        use http_body_util::BodyExt;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|value| value.to_str().unwrap().to_string());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            String::from_utf8_lossy(&bytes).into_owned(),
            location,
        )
    }

    #[tokio::test]
    async fn files_then_rules_then_the_sites_own_404_with_headers_on_each() {
        let slug = tempfile::tempdir().unwrap();
        let dist = slug.path().join("dist");
        std::fs::create_dir_all(dist.join("assets")).unwrap();
        std::fs::write(dist.join("index.html"), "home").unwrap();
        std::fs::write(dist.join("assets/app.js"), "js").unwrap();
        std::fs::write(slug.path().join("secret"), "no").unwrap();
        let mut site = Site {
            root: slug.path().to_path_buf(),
            dir: PathBuf::from("dist"),
            rules: vec![
                SiteRule {
                    source: "/old/*".into(),
                    destination: "/new/*".into(),
                    redirect: Some(301),
                },
                SiteRule {
                    source: "/app/*".into(),
                    destination: "/index.html".into(),
                    redirect: None,
                },
            ],
            headers: vec![SiteHeader {
                path: "/*".into(),
                name: "X-Frame-Options".into(),
                value: "sameorigin".into(),
            }],
        };
        let get = Method::GET;
        assert_eq!(body(answer(&site, &get, "/", None).await).await.1, "home");
        assert_eq!(
            body(answer(&site, &get, "/assets/app.js", None).await)
                .await
                .1,
            "js"
        );
        assert_eq!(
            body(answer(&site, &get, "/app/deep/link", None).await)
                .await
                .1,
            "home"
        );
        let moved = body(answer(&site, &get, "/old/page", None).await).await;
        assert_eq!((moved.0, moved.2.as_deref()), (301, Some("/new/page")));
        assert_eq!(
            body(answer(&site, &get, "/missing", None).await).await.0,
            404
        );
        assert_eq!(
            body(answer(&site, &get, "/../secret", None).await).await.0,
            404
        );
        let headers = answer(&site, &get, "/", None).await;
        assert_eq!(headers.headers()["x-frame-options"], "sameorigin");
        assert_eq!(
            body(answer(&site, &Method::POST, "/", None).await).await.0,
            405
        );
        // Its own 404 page, with status 404.
        std::fs::write(dist.join("404.html"), "lost").unwrap();
        site.rules.clear();
        let missing = body(answer(&site, &get, "/missing", None).await).await;
        assert_eq!((missing.0, missing.1.as_str()), (404, "lost"));
    }
}
