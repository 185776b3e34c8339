//! Blobs and their uploads: monolithic (`POST …/uploads/?digest=`, or
//! `POST` then one `PUT`), chunked (`PATCH`es with `Content-Range`, then
//! `PUT ?digest=`), cross-repository mounts, and reads.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use berth_registry::{Digest, RegistryError, RepoName, UploadClaim};
use futures_util::StreamExt;

use super::answer::{answer, bad_request, error_response, failure};
use super::offload::offload;
use crate::api::state::ApiState;

/// How much of an upload is gathered before it is written to disk.
const WRITE_BUFFER: usize = 1024 * 1024;

/// How much of a blob is read from disk at a time for a pull.
const READ_CHUNK: usize = 256 * 1024;

/// The disk is checked again after this many bytes of one upload.
const DISK_CHECK_EVERY: u64 = 64 * 1024 * 1024;

/// Writes `buffer` to `file` on the blocking pool, holding `claim` until
/// the write is done: if the request goes away meanwhile, the upload stays
/// claimed until no write of its is in flight.
async fn write_out(
    file: &mut Option<std::fs::File>,
    buffer: &mut Vec<u8>,
    claim: &Arc<UploadClaim>,
) -> std::io::Result<()> {
    use std::io::Write;
    let (Some(mut open), data, held) = (file.take(), std::mem::take(buffer), claim.clone()) else {
        return Err(std::io::Error::other("the upload file is gone"));
    };
    let (open, mut data, written) = tokio::task::spawn_blocking(move || {
        let _held = held;
        let written = open.write_all(&data);
        (open, data, written)
    })
    .await
    .map_err(|err| std::io::Error::other(err.to_string()))?;
    *file = Some(open);
    // The buffer comes back for the next bytes, its room kept.
    data.clear();
    *buffer = data;
    written
}

/// Appends `body` to the upload file `path`, under `claim`; the bytes
/// written. The disk reserve is checked as it goes, so an endless upload
/// stops before the disk fills (what came stays in the upload, which the
/// collector removes).
async fn append_body(
    state: &ApiState,
    path: &Path,
    body: Body,
    claim: &Arc<UploadClaim>,
) -> Result<u64, Box<Response>> {
    let storage = |err: std::io::Error| Box::new(failure(RegistryError::Io(err)));
    // Gathered into a large buffer: each write is a trip to the blocking
    // pool, and request frames are small.
    let mut file = Some(
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(storage)?,
    );
    let mut buffer = Vec::with_capacity(WRITE_BUFFER);
    let mut stream = body.into_data_stream();
    let (mut written, mut since_check) = (0u64, 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| {
            Box::new(bad_request(
                "BLOB_UPLOAD_INVALID",
                &format!("the upload stopped: {err}"),
            ))
        })?;
        buffer.extend_from_slice(&chunk);
        if buffer.len() >= WRITE_BUFFER {
            write_out(&mut file, &mut buffer, claim)
                .await
                .map_err(storage)?;
        }
        written += chunk.len() as u64;
        since_check += chunk.len() as u64;
        if since_check >= DISK_CHECK_EVERY {
            since_check = 0;
            if let Err(why) = state.disk.check() {
                return Err(Box::new(error_response(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "DENIED",
                    &why.to_string(),
                )));
            }
        }
    }
    write_out(&mut file, &mut buffer, claim)
        .await
        .map_err(storage)?;
    Ok(written)
}

fn upload_location(repo: &RepoName, id: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

/// The answer to an upload still open at `size` bytes.
fn in_progress(status: StatusCode, repo: &RepoName, id: &str, size: u64) -> Response {
    answer(
        status,
        &[
            ("Location", upload_location(repo, id)),
            ("Range", format!("0-{}", size.saturating_sub(1))),
            ("Docker-Upload-UUID", id.to_string()),
            ("Content-Length", "0".into()),
        ],
        Body::empty(),
    )
}

fn created(repo: &RepoName, digest: &Digest) -> Response {
    answer(
        StatusCode::CREATED,
        &[
            ("Location", format!("/v2/{repo}/blobs/{digest}")),
            ("Docker-Content-Digest", digest.to_string()),
            ("Content-Length", "0".into()),
        ],
        Body::empty(),
    )
}

/// Completes upload `id` as `digest` off the async threads (it hashes
/// the whole blob).
async fn finish(
    state: &ApiState,
    repo: &RepoName,
    id: &str,
    digest: &Digest,
    claim: &Arc<UploadClaim>,
) -> Response {
    let (owned_repo, id, owned_digest) = (repo.clone(), id.to_string(), digest.clone());
    // The claim goes with the work: hashing and the move into the store
    // finish under it even if the request is gone.
    let held = claim.clone();
    let finished = offload(&state.registry, move |registry| {
        let _held = held;
        registry.finish_upload(&owned_repo, &id, &owned_digest)
    })
    .await;
    match finished {
        Ok(_) => created(repo, digest),
        Err(err) => failure(err),
    }
}

/// `POST /v2/NAME/blobs/uploads/`: a mount, a monolithic upload, or a
/// new session.
pub(super) async fn start_upload(
    state: &ApiState,
    repo: &RepoName,
    query: &HashMap<String, String>,
    body: Body,
) -> Response {
    if let (Some(mount), Some(from)) = (query.get("mount"), query.get("from")) {
        // A mount that cannot be made falls back to a new upload, as the
        // spec says.
        if let (Ok(digest), Ok(from)) = (Digest::parse(mount), RepoName::parse(from)) {
            let (to, wanted) = (repo.clone(), digest.clone());
            let mounted = offload(&state.registry, move |registry| {
                registry.mount(&to, &from, &wanted)
            })
            .await;
            match mounted {
                Ok(true) => return created(repo, &digest),
                Ok(false) => {}
                Err(err) => return failure(err),
            }
        }
    }
    let id = match state.registry.start_upload(repo) {
        Ok(id) => id,
        Err(err) => return failure(err),
    };
    let Some(wanted) = query.get("digest") else {
        return in_progress(StatusCode::ACCEPTED, repo, &id, 0);
    };
    let digest = match Digest::parse(wanted) {
        Ok(digest) => digest,
        Err(err) => {
            let _ = state.registry.cancel_upload(repo, &id);
            return failure(err);
        }
    };
    let claim = match state.registry.claim_upload(repo, &id) {
        Ok(claim) => claim,
        Err(err) => return failure(err),
    };
    let (path, _) = match state.registry.upload(repo, &id) {
        Ok(found) => found,
        Err(err) => return failure(err),
    };
    if let Err(answer) = append_body(state, &path, body, &claim).await {
        let _ = state.registry.cancel_upload(repo, &id);
        return *answer;
    }
    finish(state, repo, &id, &digest, &claim).await
}

/// `Content-Range: START-END` (also `bytes START-END/…`): its start.
fn chunk_start(headers: &HeaderMap) -> Result<Option<u64>, RegistryError> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    let range = text
        .trim_start_matches("bytes")
        .trim_start_matches([' ', '=']);
    range
        .split(['-', '/'])
        .next()
        .and_then(|start| start.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| RegistryError::UploadInvalid(format!("bad Content-Range {text:?}")))
}

/// `PATCH`, `PUT`, `GET` and `DELETE` of `/v2/NAME/blobs/uploads/ID`.
pub(super) async fn upload(
    state: &ApiState,
    repo: &RepoName,
    id: &str,
    method: Method,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    // Everything but a look is one request at a time, from its range
    // check to its last byte or the blob's move into the store.
    let claim = match method {
        Method::GET => None,
        _ => match state.registry.claim_upload(repo, id) {
            Ok(claim) => Some(claim),
            Err(err) => return failure(err),
        },
    };
    let (path, size) = match state.registry.upload(repo, id) {
        Ok(found) => found,
        Err(err) => return failure(err),
    };
    match method {
        Method::GET => in_progress(StatusCode::NO_CONTENT, repo, id, size),
        Method::DELETE => match state.registry.cancel_upload(repo, id) {
            Ok(()) => answer(StatusCode::NO_CONTENT, &[], Body::empty()),
            Err(err) => failure(err),
        },
        Method::PATCH => {
            let start = match chunk_start(headers) {
                Ok(start) => start,
                Err(err) => return failure(err),
            };
            if let Err(err) = state.registry.check_chunk(repo, id, start) {
                return failure(err);
            }
            let claim = claim.expect("claimed for all but GET");
            match append_body(state, &path, body, &claim).await {
                Ok(written) => in_progress(StatusCode::ACCEPTED, repo, id, size + written),
                Err(answer) => *answer,
            }
        }
        Method::PUT => {
            let Some(wanted) = query.get("digest") else {
                return bad_request("DIGEST_INVALID", "PUT needs ?digest= to complete an upload");
            };
            let digest = match Digest::parse(wanted) {
                Ok(digest) => digest,
                Err(err) => return failure(err),
            };
            let claim = claim.expect("claimed for all but GET");
            if let Err(answer) = append_body(state, &path, body, &claim).await {
                return *answer;
            }
            finish(state, repo, id, &digest, &claim).await
        }
        _ => bad_request("UNSUPPORTED", "uploads take GET, PATCH, PUT and DELETE"),
    }
}

/// `GET`, `HEAD` and `DELETE` of `/v2/NAME/blobs/DIGEST`.
pub(super) async fn blob(
    state: &ApiState,
    repo: &RepoName,
    digest: &Digest,
    method: Method,
) -> Response {
    if method == Method::DELETE {
        let (owned_repo, owned_digest) = (repo.clone(), digest.clone());
        let deleted = offload(&state.registry, move |registry| {
            registry.delete_blob(&owned_repo, &owned_digest)
        })
        .await;
        return match deleted {
            Ok(()) => answer(StatusCode::ACCEPTED, &[], Body::empty()),
            Err(err) => failure(err),
        };
    }
    let (path, size) = match state.registry.blob(repo, digest) {
        Ok(found) => found,
        Err(err) => return failure(err),
    };
    let headers = [
        ("Content-Type", "application/octet-stream".to_string()),
        ("Content-Length", size.to_string()),
        ("Docker-Content-Digest", digest.to_string()),
    ];
    match method {
        Method::HEAD => {
            // The client skips uploading what it finds: the manifest naming
            // it comes next, and the collector must wait for it.
            state.registry.touch(repo, digest);
            answer(StatusCode::OK, &headers, Body::empty())
        }
        Method::GET => match tokio::fs::File::open(&path).await {
            Ok(file) => answer(
                StatusCode::OK,
                &headers,
                Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
                    file, READ_CHUNK,
                )),
            ),
            Err(err) => failure(RegistryError::Io(err)),
        },
        _ => bad_request("UNSUPPORTED", "blobs take GET, HEAD and DELETE"),
    }
}
