//! berth's built-in OCI registry over HTTP (the distribution spec v1.1)
//! at `/v2/` of the API address, behind the API token (see [`auth`]).
//! Repository names hold slashes, so one handler reads the path the way
//! the spec's routes do, from its end: `…/tags/list`, `…/manifests/REF`,
//! `…/referrers/DIGEST`, `…/blobs/uploads/[ID]`, `…/blobs/DIGEST`.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware;
use axum::response::Response;
use axum::routing::{any, get};
use berth_registry::{Digest, RegistryError, RepoName};

use super::state::ApiState;
#[cfg(test)]
use answer::page;
use answer::{answer, bad_request, failure};

mod answer;
mod auth;
mod blobs;
pub(super) mod collect;
pub(super) mod logins;
mod manifests;
mod offload;

pub(crate) use collect::{release_pins, spawn_collector};

/// What a `/v2/…` path names.
#[derive(Debug, PartialEq)]
enum Target {
    Base,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Referrers(String, String),
    UploadStart(String),
    Upload(String, String),
    Blob(String, String),
}

/// Reads `path` (after `/v2/`) from its end, as the spec's routes match.
fn target(path: &str) -> Option<Target> {
    let path = path.replace("%3A", ":").replace("%3a", ":");
    if path.is_empty() {
        return Some(Target::Base);
    }
    if path == "_catalog" {
        return Some(Target::Catalog);
    }
    if let Some(name) = path.strip_suffix("/tags/list") {
        return Some(Target::Tags(name.into()));
    }
    if let Some(name) = path
        .strip_suffix("/blobs/uploads/")
        .or_else(|| path.strip_suffix("/blobs/uploads"))
    {
        return Some(Target::UploadStart(name.into()));
    }
    for (separator, make) in [
        (
            "/manifests/",
            Target::Manifest as fn(String, String) -> Target,
        ),
        ("/referrers/", Target::Referrers),
        ("/blobs/uploads/", Target::Upload),
        ("/blobs/", Target::Blob),
    ] {
        if let Some((name, rest)) = path.rsplit_once(separator)
            && !rest.is_empty()
            && !rest.contains('/')
        {
            return Some(make(name.into(), rest.into()));
        }
    }
    None
}

/// The registry's routes.
pub(super) fn routes(state: ApiState) -> Router<ApiState> {
    let guarded = Router::new()
        .route("/v2/", any(dispatch))
        .route("/v2/{*path}", any(dispatch))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            super::disk::refuse_writes_when_full,
        ))
        .route_layer(middleware::from_fn_with_state(
            state,
            auth::require_registry_auth,
        ));
    // The token endpoint checks its own credentials.
    Router::new()
        .route("/v2/token", get(auth::token))
        .merge(guarded)
}

fn repo(name: &str) -> Result<RepoName, RegistryError> {
    RepoName::parse(name)
}

fn digest(text: &str) -> Result<Digest, RegistryError> {
    Digest::parse(text)
}

async fn dispatch(
    State(state): State<ApiState>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = uri.path().strip_prefix("/v2/").unwrap_or("");
    let Some(target) = target(path) else {
        return failure(berth_registry::RegistryError::NameUnknown(
            path.chars().take(300).collect(),
        ));
    };
    let outcome = match (target, method) {
        (Target::Base, Method::GET | Method::HEAD) => Ok(answer(
            StatusCode::OK,
            &[("Content-Type", "application/json".into())],
            Body::from("{}"),
        )),
        (Target::Catalog, Method::GET) => Ok(manifests::catalog(&state, &query).await),
        (Target::Tags(name), Method::GET) => {
            repo(&name).map(|name| manifests::tags(&state, &name, &query))
        }
        (Target::Manifest(name, reference), method) => match repo(&name) {
            Ok(name) => {
                Ok(manifests::manifest(&state, &name, &reference, method, &headers, body).await)
            }
            Err(err) => Err(err),
        },
        (Target::Referrers(name, subject), Method::GET) => repo(&name).and_then(|name| {
            Ok(manifests::referrers(
                &state,
                &name,
                &digest(&subject)?,
                &query,
            ))
        }),
        (Target::UploadStart(name), Method::POST) => match repo(&name) {
            Ok(name) => Ok(blobs::start_upload(&state, &name, &query, body).await),
            Err(err) => Err(err),
        },
        (Target::Upload(name, id), method) => match repo(&name) {
            Ok(name) => Ok(blobs::upload(&state, &name, &id, method, &query, &headers, body).await),
            Err(err) => Err(err),
        },
        (Target::Blob(name, blob), method) => match (repo(&name), digest(&blob)) {
            (Ok(name), Ok(blob)) => Ok(blobs::blob(&state, &name, &blob, method).await),
            (Err(err), _) | (_, Err(err)) => Err(err),
        },
        _ => {
            return bad_request("UNSUPPORTED", "this method is not allowed on this path");
        }
    };
    outcome.unwrap_or_else(failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_from_their_end() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(target(""), Some(Target::Base));
        assert_eq!(target("_catalog"), Some(Target::Catalog));
        assert_eq!(target("a/b/tags/list"), Some(Target::Tags("a/b".into())));
        assert_eq!(
            target("team/blobs/x/manifests/v1"),
            Some(Target::Manifest("team/blobs/x".into(), "v1".into()))
        );
        assert_eq!(
            target("shop/blobs/uploads/"),
            Some(Target::UploadStart("shop".into()))
        );
        assert_eq!(
            target("shop/blobs/uploads/abc"),
            Some(Target::Upload("shop".into(), "abc".into()))
        );
        assert_eq!(
            target(&format!("shop/blobs/{digest}")),
            Some(Target::Blob("shop".into(), digest.clone()))
        );
        assert_eq!(
            target(&format!("shop/referrers/{}", digest.replace(':', "%3A"))),
            Some(Target::Referrers("shop".into(), digest))
        );
        assert_eq!(target("shop/nothing"), None);
        assert_eq!(target("shop/manifests/"), None);
    }

    #[test]
    fn lists_page_after_the_last_item() {
        let all: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let query = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(
            page(all.clone(), &query(&[("n", "2")])),
            (vec!["a".into(), "b".into()], true)
        );
        assert_eq!(
            page(all.clone(), &query(&[("n", "2"), ("last", "b")])),
            (vec!["c".into(), "d".into()], false)
        );
        assert_eq!(page(all, &query(&[])).0.len(), 4);
    }
}
