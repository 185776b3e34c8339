//! Manifests (and image indexes), tags, the catalog and referrers.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use berth_registry::{Digest, RepoName};

use super::answer::{answer, bad_request, failure, page};
use super::offload::offload;
use crate::api::state::ApiState;

/// A JSON answer, with a `Link` to the next page when there is one.
fn json_page(body: serde_json::Value, next: Option<String>) -> Response {
    let mut headers = vec![("Content-Type", "application/json".to_string())];
    if let Some(next) = next {
        headers.push(("Link", format!("<{next}>; rel=\"next\"")));
    }
    answer(StatusCode::OK, &headers, Body::from(body.to_string()))
}

/// `GET /v2/_catalog?n=&last=`.
pub(super) async fn catalog(state: &ApiState, query: &HashMap<String, String>) -> Response {
    let all = offload(&state.registry, |registry| {
        Ok(registry
            .catalog()
            .into_iter()
            .map(|repo| repo.to_string())
            .collect())
    })
    .await
    .unwrap_or_default();
    let (page, more) = page(all, query);
    let next = more.then(|| {
        format!(
            "/v2/_catalog?n={}&last={}",
            page.len(),
            page.last().cloned().unwrap_or_default()
        )
    });
    json_page(serde_json::json!({ "repositories": page }), next)
}

/// `GET /v2/NAME/tags/list?n=&last=`.
pub(super) fn tags(state: &ApiState, repo: &RepoName, query: &HashMap<String, String>) -> Response {
    let all = match state.registry.tags(repo) {
        Ok(all) => all,
        Err(err) => return failure(err),
    };
    let (page, more) = page(all, query);
    let next = more.then(|| {
        format!(
            "/v2/{repo}/tags/list?n={}&last={}",
            page.len(),
            page.last().cloned().unwrap_or_default()
        )
    });
    json_page(
        serde_json::json!({ "name": repo.as_str(), "tags": page }),
        next,
    )
}

/// `GET`, `HEAD`, `PUT` and `DELETE` of `/v2/NAME/manifests/REFERENCE`.
pub(super) async fn manifest(
    state: &ApiState,
    repo: &RepoName,
    reference: &str,
    method: Method,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    match method {
        Method::GET | Method::HEAD => {
            let found = match state.registry.manifest(repo, reference) {
                Ok(found) => found,
                Err(err) => return failure(err),
            };
            let headers = [
                ("Content-Type", found.media_type.clone()),
                ("Content-Length", found.bytes.len().to_string()),
                ("Docker-Content-Digest", found.digest.to_string()),
            ];
            let body = match method {
                Method::HEAD => Body::empty(),
                _ => Body::from(found.bytes),
            };
            answer(StatusCode::OK, &headers, body)
        }
        Method::PUT => {
            let bytes = match axum::body::to_bytes(body, berth_registry::MAX_MANIFEST + 1).await {
                Ok(bytes) => bytes,
                Err(_) => {
                    return bad_request(
                        "MANIFEST_INVALID",
                        &format!(
                            "a manifest is at most {} bytes",
                            berth_registry::MAX_MANIFEST
                        ),
                    );
                }
            };
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .map(|value| {
                    value
                        .split(';')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                })
                .filter(|value| !value.is_empty() && value != "application/json");
            // Without a Content-Type, the body's own mediaType.
            let media_type = content_type.or_else(|| {
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()?
                    .get("mediaType")?
                    .as_str()
                    .map(str::to_string)
            });
            let Some(media_type) = media_type else {
                return bad_request("MANIFEST_INVALID", "no Content-Type and no mediaType");
            };
            // It waits for the collector's lock and syncs to disk.
            let (owned_repo, owned_reference) = (repo.clone(), reference.to_string());
            let stored = offload(&state.registry, move |registry| {
                registry.put_manifest(&owned_repo, &owned_reference, &media_type, &bytes)
            })
            .await;
            match stored {
                Ok(stored) => {
                    let mut headers = vec![
                        (
                            "Location",
                            format!("/v2/{repo}/manifests/{}", stored.digest),
                        ),
                        ("Docker-Content-Digest", stored.digest.to_string()),
                        ("Content-Length", "0".to_string()),
                    ];
                    if let Some(subject) = stored.subject {
                        headers.push(("OCI-Subject", subject.to_string()));
                    }
                    answer(StatusCode::CREATED, &headers, Body::empty())
                }
                Err(err) => failure(err),
            }
        }
        Method::DELETE => match offload(&state.registry, {
            let (repo, reference) = (repo.clone(), reference.to_string());
            move |registry| registry.delete_manifest(&repo, &reference)
        })
        .await
        {
            Ok(()) => answer(StatusCode::ACCEPTED, &[], Body::empty()),
            Err(err) => failure(err),
        },
        _ => bad_request("UNSUPPORTED", "manifests take GET, HEAD, PUT and DELETE"),
    }
}

/// `GET /v2/NAME/referrers/DIGEST?artifactType=`: an image index of the
/// manifests whose subject is DIGEST (empty when there are none).
pub(super) fn referrers(
    state: &ApiState,
    repo: &RepoName,
    subject: &Digest,
    query: &HashMap<String, String>,
) -> Response {
    let filter = query.get("artifactType").map(String::as_str);
    let manifests = state.registry.referrers(repo, subject, filter);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let mut headers = vec![(
        "Content-Type",
        "application/vnd.oci.image.index.v1+json".to_string(),
    )];
    if filter.is_some() {
        headers.push(("OCI-Filters-Applied", "artifactType".to_string()));
    }
    answer(StatusCode::OK, &headers, Body::from(index.to_string()))
}
