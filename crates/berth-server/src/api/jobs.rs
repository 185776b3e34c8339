//! Jobs: list, run, executions, cancel.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use berth_proto::ApiError;
use serde::Deserialize;

use super::error::ApiResult;
use super::state::ApiState;

/// The jobs of the app's active release, with next runs and last executions.
#[utoipa::path(get, path = "/v1/apps/{app}/jobs", params(("app" = String, Path)),
    responses((status = 200, body = [berth_proto::JobInfo]), (status = 404, body = ApiError)))]
pub(super) async fn list_jobs(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<berth_proto::JobInfo>>> {
    Ok(Json(state.jobs.jobs(&app)?))
}

/// Starts a one-off command in a task of the app's active release (`berth
/// run`); answers at once with its execution.
#[utoipa::path(post, path = "/v1/apps/{app}/run", params(("app" = String, Path)),
    request_body = berth_proto::RunCommand,
    responses((status = 201, body = berth_proto::ExecutionInfo), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn run_command(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Json(request): Json<berth_proto::RunCommand>,
) -> ApiResult<(StatusCode, Json<berth_proto::ExecutionInfo>)> {
    let timeout = std::time::Duration::from_secs(request.timeout_secs.unwrap_or(3600).max(1));
    let command = state.jobs.one_off_command(&app, &request)?;
    let id = state.jobs.run_command(
        &app,
        &command,
        timeout,
        crate::jobs::RunOptions {
            trigger: berth_proto::Trigger::Manual,
            tasks: None,
            env: request.env.into_iter().collect(),
            terminal: None,
        },
    )?;
    let row = state.store.execution(&app, id)?;
    Ok((StatusCode::CREATED, Json(crate::jobs::execution_info(&row))))
}

/// Starts an execution of a job; answers at once with it.
#[utoipa::path(post, path = "/v1/apps/{app}/jobs/{job}/run", params(("app" = String, Path), ("job" = String, Path)),
    request_body = berth_proto::RunJob,
    responses((status = 201, body = berth_proto::ExecutionInfo), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn run_job(
    State(state): State<ApiState>,
    Path((app, job)): Path<(String, String)>,
    headers: HeaderMap,
    Json(request): Json<berth_proto::RunJob>,
) -> ApiResult<(StatusCode, Json<berth_proto::ExecutionInfo>)> {
    let trigger = if headers
        .get(header::USER_AGENT)
        .and_then(|agent| agent.to_str().ok())
        .is_some_and(|agent| agent.starts_with("berth-cli"))
    {
        berth_proto::Trigger::Manual
    } else {
        berth_proto::Trigger::Api
    };
    let id = state.jobs.run(
        &app,
        &job,
        crate::jobs::RunOptions {
            trigger,
            tasks: request.tasks,
            env: request.env.into_iter().collect(),
            terminal: None,
        },
    )?;
    let row = state.store.execution(&app, id)?;
    Ok((StatusCode::CREATED, Json(crate::jobs::execution_info(&row))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct HistoryParams {
    /// At most this many (default 20).
    limit: Option<u32>,
}

/// A job's executions, newest first.
#[utoipa::path(get, path = "/v1/apps/{app}/jobs/{job}/executions", params(("app" = String, Path), ("job" = String, Path), HistoryParams),
    responses((status = 200, body = [berth_proto::ExecutionInfo]), (status = 404, body = ApiError)))]
pub(super) async fn job_executions(
    State(state): State<ApiState>,
    Path((app, job)): Path<(String, String)>,
    Query(params): Query<HistoryParams>,
) -> ApiResult<Json<Vec<berth_proto::ExecutionInfo>>> {
    state.store.app(&app)?;
    let rows = state
        .store
        .executions(&app, Some(&job), params.limit.unwrap_or(20).min(1000))?;
    Ok(Json(rows.iter().map(crate::jobs::execution_info).collect()))
}

/// One execution with every task attempt.
#[utoipa::path(get, path = "/v1/apps/{app}/executions/{id}", params(("app" = String, Path), ("id" = i64, Path)),
    responses((status = 200, body = berth_proto::ExecutionInfo), (status = 404, body = ApiError)))]
pub(super) async fn execution(
    State(state): State<ApiState>,
    Path((app, id)): Path<(String, i64)>,
) -> ApiResult<Json<berth_proto::ExecutionInfo>> {
    Ok(Json(crate::jobs::execution_info(
        &state.store.execution(&app, id)?,
    )))
}

/// Cancels a running execution: its running tasks are stopped.
#[utoipa::path(post, path = "/v1/apps/{app}/executions/{id}/cancel", params(("app" = String, Path), ("id" = i64, Path)),
    responses((status = 200, body = berth_proto::ExecutionInfo), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn cancel_execution(
    State(state): State<ApiState>,
    Path((app, id)): Path<(String, i64)>,
) -> ApiResult<Json<berth_proto::ExecutionInfo>> {
    state.jobs.cancel(&app, id).await?;
    Ok(Json(crate::jobs::execution_info(
        &state.store.execution(&app, id)?,
    )))
}
