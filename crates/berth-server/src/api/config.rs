//! Scale, env vars and secrets: changes that make a new release or a new count.

use berth_spec::MAX_INSTANCES_PER_GROUP;
use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::Response;
use berth_proto::{ApiError, AppStatus, DeployProgress, EnvChange, ScaleRequest};
use tokio::sync::mpsc;

use super::apps::full_status;
use super::deploys::send_failure;
use super::error::{ApiFailure, ApiResult};
use super::state::ApiState;
use super::stream::ndjson;
use crate::deploy::DeployFailure;

/// Sets desired instance counts per process group.
#[utoipa::path(post, path = "/v1/apps/{app}/scale", params(("app" = String, Path)), request_body = ScaleRequest,
    responses((status = 200, body = AppStatus), (status = 404, body = ApiError)))]
pub(super) async fn scale(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Json(request): Json<ScaleRequest>,
) -> ApiResult<Json<AppStatus>> {
    if request.counts.is_empty() && request.min.is_none() && request.max.is_none() {
        return Err(ApiFailure::BadRequest(
            "name at least one process group, as in web=3, or give --min/--max".into(),
        ));
    }
    if let (Some(min), Some(max)) = (request.min, request.max)
        && min > max
    {
        return Err(ApiFailure::BadRequest(format!(
            "--min {min} is above --max {max}"
        )));
    }
    if request.max == Some(0) {
        return Err(ApiFailure::BadRequest(
            "--max must be at least 1 (scale to zero is --min 0 with auto_stop_machines)".into(),
        ));
    }
    if let Some((name, count)) = request
        .min
        .into_iter()
        .chain(request.max)
        .map(|count| ("the bound", count))
        .find(|(_, count)| *count > MAX_INSTANCES_PER_GROUP)
    {
        return Err(ApiFailure::BadRequest(format!(
            "{name} {count} is more than the {MAX_INSTANCES_PER_GROUP} instances a group may have"
        )));
    }
    if let Some((name, count)) = request
        .counts
        .iter()
        .find(|(_, count)| **count > MAX_INSTANCES_PER_GROUP)
    {
        return Err(ApiFailure::BadRequest(format!(
            "{name}={count} is more than the {MAX_INSTANCES_PER_GROUP} instances a group may have"
        )));
    }
    if let Some(version) = state.store.app(&app)?.target_release {
        let release = state.store.release(&app, version)?;
        let spec = crate::stored_spec::spec_of(&release)
            .map_err(|err| ApiFailure::Internal(err.to_string()))?;
        let fits = |name: &str| {
            crate::reconciler::instance_ceiling(&spec, name, state.resources.isolated())
        };
        if let Some(port) = spec.http.internal_port
            && let Some((name, count)) = request
                .counts
                .iter()
                .find(|(name, count)| fits(name).is_some_and(|ceiling| **count > ceiling))
        {
            return Err(ApiFailure::BadRequest(format!(
                "{name}={count}: the app listens on the fixed internal_port {port}, and without root (or with --no-isolation) instances share one network namespace, so one instance of `{name}` fits; run berth as root to give each instance its own, or listen on $PORT"
            )));
        }
    }
    if !request.counts.is_empty() {
        state.store.set_counts(&app, &request.counts)?;
    }
    if request.min.is_some() || request.max.is_some() {
        let group = match request.process {
            Some(group) => group,
            None => http_group(&state, &app)?,
        };
        state
            .store
            .set_scale_bounds(&app, &group, request.min, request.max)?;
    }
    state.reconciler.nudge();
    full_status(&state, &app).await.map(Json)
}

/// The process group of `app` that serves HTTP (where `--min/--max` go by default).
pub(super) fn http_group(state: &ApiState, app: &str) -> ApiResult<String> {
    let version = state.store.app(app)?.target_release.ok_or_else(|| {
        ApiFailure::BadRequest(format!("app `{app}` has no release yet; deploy it first"))
    })?;
    let release = state.store.release(app, version)?;
    let spec = crate::stored_spec::spec_of(&release)
        .map_err(|err| ApiFailure::Internal(err.to_string()))?;
    release
        .processes
        .keys()
        .find(|group| spec.serves_http(group))
        .cloned()
        .ok_or_else(|| {
            ApiFailure::BadRequest(format!(
                "app `{app}` has no process group that serves HTTP; name one with --process"
            ))
        })
}

/// The app's env vars.
#[utoipa::path(get, path = "/v1/apps/{app}/env", params(("app" = String, Path)),
    responses((status = 200, body = BTreeMap<String, String>), (status = 404, body = ApiError)))]
pub(super) async fn get_env(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<BTreeMap<String, String>>> {
    Ok(Json(state.store.env(&app)?))
}

/// Sets and unsets env vars; a change makes a new release. Answers with NDJSON.
#[utoipa::path(post, path = "/v1/apps/{app}/env", params(("app" = String, Path)), request_body = EnvChange,
    responses((status = 200, body = DeployProgress, content_type = "application/x-ndjson"), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn change_env(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Json(change): Json<EnvChange>,
) -> ApiResult<Response> {
    require_a_change(&change, "KEY")?;
    reconfigure(
        &state,
        app,
        crate::deploy::ConfigChange {
            env_set: change.set,
            env_unset: change.unset,
            ..Default::default()
        },
    )
}

/// Refuses a change that sets and unsets nothing.
pub(super) fn require_a_change(change: &EnvChange, word: &str) -> ApiResult<()> {
    if change.set.is_empty() && change.unset.is_empty() {
        return Err(ApiFailure::BadRequest(format!(
            "nothing to change: give {word}=VALUE to set or {word} to unset"
        )));
    }
    Ok(())
}

/// Validates `change` and runs it as a new release, answering with NDJSON.
pub(super) fn reconfigure(
    state: &ApiState,
    app: String,
    change: crate::deploy::ConfigChange,
) -> ApiResult<Response> {
    for key in change
        .env_set
        .keys()
        .chain(change.env_unset.iter())
        .chain(change.secrets_set.keys())
        .chain(change.secrets_unset.iter())
    {
        crate::launch::validate_env_key(key).map_err(ApiFailure::BadRequest)?;
    }
    state.store.app(&app)?;
    let (progress, receiver) = mpsc::unbounded_channel();
    let deployer = state.deployer.clone();
    tokio::spawn(async move {
        report(
            deployer.reconfigure(app, change, progress.clone()).await,
            &progress,
        );
    });
    Ok(ndjson(receiver))
}

pub(super) fn report(
    outcome: Result<Option<u64>, DeployFailure>,
    progress: &mpsc::UnboundedSender<DeployProgress>,
) {
    match outcome {
        Ok(Some(_)) => {}
        Ok(None) => {
            let _ = progress.send(DeployProgress::Done {
                release: 0,
                url: String::new(),
            });
        }
        Err(failure) => send_failure(progress, failure),
    }
}

/// An app's secrets: names, digests, when each changed. Never values.
#[utoipa::path(get, path = "/v1/apps/{app}/secrets", params(("app" = String, Path)),
    responses((status = 200, body = [berth_proto::SecretInfo]), (status = 404, body = ApiError)))]
pub(super) async fn list_secrets(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<berth_proto::SecretInfo>>> {
    Ok(Json(
        state
            .store
            .secret_list(&app)?
            .into_iter()
            .map(|row| berth_proto::SecretInfo {
                name: row.name,
                digest: row.digest,
                updated_at: row.updated_at,
            })
            .collect(),
    ))
}

/// Sets and unsets secrets (encrypted at rest, masked in logs); a change
/// makes a new release. Answers with NDJSON.
#[utoipa::path(post, path = "/v1/apps/{app}/secrets", params(("app" = String, Path)), request_body = EnvChange,
    responses((status = 200, body = DeployProgress, content_type = "application/x-ndjson"), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn change_secrets(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Json(change): Json<EnvChange>,
) -> ApiResult<Response> {
    require_a_change(&change, "NAME")?;
    reconfigure(
        &state,
        app,
        crate::deploy::ConfigChange {
            secrets_set: change.set,
            secrets_unset: change.unset,
            ..Default::default()
        },
    )
}
