//! Log drains: list, add, remove.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_proto::{AddDrain, ApiError, DrainInfo};

use super::error::{ApiFailure, ApiResult};
use super::state::ApiState;
use crate::drains::DrainError;

impl From<DrainError> for ApiFailure {
    fn from(err: DrainError) -> Self {
        match err {
            DrainError::Invalid(message) => ApiFailure::BadRequest(message),
            DrainError::Store(err) => err.into(),
            DrainError::Logs(message) => ApiFailure::Internal(message),
        }
    }
}

/// The app's log drains, with what each delivered and dropped.
#[utoipa::path(get, path = "/v1/apps/{app}/drains", params(("app" = String, Path)),
    responses((status = 200, body = [DrainInfo]), (status = 404, body = ApiError)))]
pub(super) async fn list_drains(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<DrainInfo>>> {
    Ok(Json(state.drains.list(&app)?))
}

/// Adds a log drain: the app's lines stored from now on are sent to it.
#[utoipa::path(post, path = "/v1/apps/{app}/drains", params(("app" = String, Path)),
    request_body = AddDrain,
    responses((status = 201, body = DrainInfo), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn add_drain(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Json(request): Json<AddDrain>,
) -> ApiResult<(StatusCode, Json<DrainInfo>)> {
    Ok((StatusCode::CREATED, Json(state.drains.add(&app, &request)?)))
}

/// Removes a log drain.
#[utoipa::path(delete, path = "/v1/apps/{app}/drains/{id}", params(("app" = String, Path), ("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ApiError)))]
pub(super) async fn remove_drain(
    State(state): State<ApiState>,
    Path((app, id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    state.drains.remove(&app, id)?;
    Ok(StatusCode::NO_CONTENT)
}
