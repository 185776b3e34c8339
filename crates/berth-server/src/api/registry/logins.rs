//! `berth registry login|logout|logins`: the other registries berth pulls
//! images from (see `crate::remote_registry`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_proto::{RegistryLogin, RegistryLoginInfo};

use crate::api::error::{ApiFailure, ApiResult};
use crate::api::state::ApiState;

/// `GET /v1/registry/logins`: the registries berth signs in to.
#[utoipa::path(get, path = "/v1/registry/logins", responses((status = 200, body = [RegistryLoginInfo])))]
pub(crate) async fn list_logins(
    State(state): State<ApiState>,
) -> ApiResult<Json<Vec<RegistryLoginInfo>>> {
    state
        .deployer
        .registry_logins
        .list()
        .map(Json)
        .map_err(ApiFailure::Internal)
}

/// `POST /v1/registry/logins`: checks the credentials against the
/// registry, then keeps them.
#[utoipa::path(post, path = "/v1/registry/logins", request_body = RegistryLogin,
    responses((status = 204), (status = 400, body = berth_proto::ApiError)))]
pub(crate) async fn add_login(
    State(state): State<ApiState>,
    Json(login): Json<RegistryLogin>,
) -> ApiResult<StatusCode> {
    state
        .deployer
        .registry_logins
        .add(login)
        .await
        .map_err(ApiFailure::BadRequest)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/registry/logins/{host}`: forgets a registry.
#[utoipa::path(delete, path = "/v1/registry/logins/{host}", params(("host" = String, Path)),
    responses((status = 204), (status = 404, body = berth_proto::ApiError)))]
pub(crate) async fn remove_login(
    State(state): State<ApiState>,
    Path(host): Path<String>,
) -> ApiResult<StatusCode> {
    match state.deployer.registry_logins.remove(&host) {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ApiFailure::NotFound(format!(
            "berth does not sign in to {host}"
        ))),
        Err(err) => Err(ApiFailure::Internal(err)),
    }
}
