//! `POST /v1/apps/{app}/image`: the app's running release as an image in
//! berth's registry (`berth image build`).

use axum::Json;
use axum::extract::{Path, State};
use berth_proto::{ApiError, BuildImage, BuiltImage};

use super::error::{ApiFailure, ApiResult};
use super::state::ApiState;

/// Stores the app's active release as `APP:TAG` in berth's registry.
#[utoipa::path(post, path = "/v1/apps/{app}/image", params(("app" = String, Path)),
    request_body = BuildImage,
    responses((status = 200, body = BuiltImage), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn build_image(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Json(request): Json<BuildImage>,
) -> ApiResult<Json<BuiltImage>> {
    state.store.app(&app)?;
    let release = state.store.active_release(&app)?.ok_or_else(|| {
        ApiFailure::Conflict(format!("{app} has no release yet: deploy it first"))
    })?;
    let tag = request
        .tag
        .unwrap_or_else(|| format!("v{}", release.version));
    if !berth_registry::valid_tag(&tag) {
        return Err(ApiFailure::BadRequest(format!(
            "{tag:?} is not a tag: [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}"
        )));
    }
    let spec = crate::stored_spec::spec_of(&release)
        .map_err(|err| ApiFailure::Conflict(err.to_string()))?;
    let web = release
        .processes
        .iter()
        .find(|(group, _)| spec.serves_http(group))
        .or_else(|| release.processes.iter().next())
        .map(|(_, command)| command.clone())
        .ok_or_else(|| {
            ApiFailure::Conflict(format!("v{} of {app} runs no process", release.version))
        })?;
    let slug_dir = state.deployer.launcher.slug_dir(&release);
    let registry = state.registry.clone();
    let (name, stored_tag) = (app.clone(), tag.clone());
    let digest = tokio::task::spawn_blocking(move || {
        crate::image_build::build_image(&registry, &name, &stored_tag, &slug_dir, &spec, &web)
    })
    .await
    .map_err(|err| ApiFailure::Internal(err.to_string()))?
    .map_err(ApiFailure::Conflict)?;
    Ok(Json(BuiltImage {
        repository: app,
        tag,
        digest: digest.to_string(),
    }))
}
