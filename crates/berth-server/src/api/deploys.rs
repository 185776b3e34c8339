//! Deploys, releases, the running spec and rollbacks.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use berth_proto::{ApiError, DeployProgress, ReleaseInfo, ReleaseStatus, RollbackRequest};
use berth_store::ReleaseRow;
use tokio::sync::mpsc;

use super::error::{ApiFailure, ApiResult};
use super::state::ApiState;
use super::stream::ndjson;
use crate::deploy::DeployFailure;

pub(super) fn release_info(row: &ReleaseRow) -> ReleaseInfo {
    ReleaseInfo {
        version: row.version,
        status: ReleaseStatus::from(row.status.as_str()),
        cause: row.cause.clone(),
        slug: row.slug.clone(),
        created_at: row.created_at.clone(),
        processes: row.processes.clone(),
    }
}

/// Uploads a source tarball (zstd-compressed tar), builds and deploys it;
/// with `?image=REF`, deploys that image from berth's registry instead,
/// configured by the tarball's spec if it has one. Answers with NDJSON
/// `DeployProgress` lines.
#[utoipa::path(post, path = "/v1/apps/{app}/deploy", params(("app" = String, Path), ("image" = Option<String>, Query)),
    request_body(content = Vec<u8>, content_type = "application/zstd"),
    responses((status = 200, body = DeployProgress, content_type = "application/x-ndjson"), (status = 404, body = ApiError), (status = 413, body = ApiError)))]
pub(super) async fn deploy(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let image = query.get("image").cloned();
    let too_large = |size: Option<u64>| {
        let size = size
            .map(|size| format!("{} MiB", size.div_ceil(1024 * 1024)))
            .unwrap_or_else(|| "larger".into());
        ApiFailure::TooLarge(format!(
            "the upload is {size}; this server takes at most {} MiB (add large files to .gitignore, or start the server with a larger --max-upload-mib)",
            state.max_upload_bytes / (1024 * 1024)
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(size) = declared.filter(|size| *size > state.max_upload_bytes) {
        // Read (and drop) a body up to 4x the limit before answering, so the
        // client is not cut off mid-upload and sees this answer, not a reset.
        if size <= state.max_upload_bytes.saturating_mul(4) {
            let _ = axum::body::to_bytes(body, size as usize).await;
        }
        return Err(too_large(declared));
    }
    state.store.app(&app)?;
    let upload = state
        .deployer
        .receive_upload(body.into_data_stream(), state.max_upload_bytes)
        .await
        .map_err(|err| match err {
            Some(reason) => ApiFailure::BadRequest(reason),
            None => too_large(None),
        })?;
    let (progress, receiver) = mpsc::unbounded_channel();
    let deployer = state.deployer.clone();
    tokio::spawn(async move {
        if let Err(failure) = deployer
            .deploy_upload(app, upload, image, progress.clone())
            .await
        {
            send_failure(&progress, failure);
        }
    });
    Ok(ndjson(receiver))
}

pub(super) fn send_failure(
    progress: &mpsc::UnboundedSender<DeployProgress>,
    failure: DeployFailure,
) {
    let _ = progress.send(DeployProgress::Failed {
        message: failure.message,
        release: failure.release,
    });
}

/// An app's releases, newest first.
#[utoipa::path(get, path = "/v1/apps/{app}/releases", params(("app" = String, Path)),
    responses((status = 200, body = [ReleaseInfo]), (status = 404, body = ApiError)))]
pub(super) async fn releases(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<ReleaseInfo>>> {
    Ok(Json(
        state
            .store
            .releases(&app)?
            .iter()
            .map(release_info)
            .collect(),
    ))
}

/// The model of the app's target release (what `berth export --app` writes out).
#[utoipa::path(get, path = "/v1/apps/{app}/spec", params(("app" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ApiError)))]
pub(super) async fn app_spec(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let version = state.store.app(&app)?.target_release.ok_or_else(|| {
        ApiFailure::NotFound(format!("app `{app}` has no release yet; deploy it first"))
    })?;
    let release = state.store.release(&app, version)?;
    let spec: serde_json::Value = serde_json::from_str(&release.spec_json)
        .map_err(|err| ApiFailure::Internal(format!("the stored spec is unreadable: {err}")))?;
    Ok(Json(spec))
}

/// Rolls back to an earlier release without building. Answers with NDJSON.
#[utoipa::path(post, path = "/v1/apps/{app}/rollback", params(("app" = String, Path)), request_body = RollbackRequest,
    responses((status = 200, body = DeployProgress, content_type = "application/x-ndjson"), (status = 404, body = ApiError)))]
pub(super) async fn rollback(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Json(request): Json<RollbackRequest>,
) -> ApiResult<Response> {
    state.store.app(&app)?;
    let (progress, receiver) = mpsc::unbounded_channel();
    let deployer = state.deployer.clone();
    tokio::spawn(async move {
        if let Err(failure) = deployer
            .rollback(app, request.version, progress.clone())
            .await
        {
            send_failure(&progress, failure);
        }
    });
    Ok(ndjson(receiver))
}
