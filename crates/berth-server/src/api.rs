//! The HTTP/JSON API under `/v1`, with bearer-token auth and an OpenAPI document.
//!
//! Handlers only translate: they read the store and the reconciler's
//! snapshot, or hand work to the [`Deployer`], and choose status codes. Long
//! operations (deploys, env changes, rollbacks, followed logs) answer with an
//! NDJSON stream so the CLI can show progress as it happens.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_logs::{LogQuery, LogStore};
use berth_proto::{
    ApiError, AppStatus, AppSummary, CreateApp, DeployProgress, EnvChange, EventInfo, InstanceInfo,
    LogLine, ProcessGroupStatus, ReleaseInfo, ReleaseStatus, RollbackRequest, ScaleRequest,
    ServerHealth, validate_app_name,
};
use berth_store::{ReleaseRow, Store, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::OpenApi;

use crate::deploy::{DeployFailure, Deployer};
use crate::reconciler::ReconcilerHandle;

/// What handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) store: Arc<Store>,
    pub(crate) logs: Arc<LogStore>,
    pub(crate) deployer: Arc<Deployer>,
    pub(crate) resources: Arc<crate::resources::Resources>,
    pub(crate) jobs: Arc<crate::jobs::JobRunner>,
    pub(crate) reconciler: ReconcilerHandle,
    pub(crate) token: Arc<String>,
    pub(crate) router_url: String,
    pub(crate) max_upload_bytes: u64,
}

impl ApiState {
    fn url(&self, app: &str) -> String {
        (self.deployer.url_for)(app)
    }
}

/// An API failure; the status code is chosen here and nowhere else.
#[derive(Debug)]
pub enum ApiFailure {
    /// 400.
    BadRequest(String),
    /// 401.
    Unauthorized,
    /// 404.
    NotFound(String),
    /// 409.
    Conflict(String),
    /// 413.
    TooLarge(String),
    /// 500.
    Internal(String),
}

impl From<StoreError> for ApiFailure {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => ApiFailure::NotFound(format!("{what} not found")),
            StoreError::Conflict(message) => ApiFailure::Conflict(message),
            other => {
                let source = std::error::Error::source(&other)
                    .map(|source| format!(": {source}"))
                    .unwrap_or_default();
                ApiFailure::Internal(format!("{other}{source}"))
            }
        }
    }
}

impl From<crate::jobs::JobError> for ApiFailure {
    fn from(err: crate::jobs::JobError) -> Self {
        match err {
            crate::jobs::JobError::NotFound(message) => ApiFailure::NotFound(message),
            crate::jobs::JobError::Invalid(message) => ApiFailure::BadRequest(message),
            crate::jobs::JobError::Store(err) => err.into(),
        }
    }
}

impl From<crate::resources::ResourcesError> for ApiFailure {
    fn from(err: crate::resources::ResourcesError) -> Self {
        use crate::resources::ResourcesError;
        match err {
            ResourcesError::NotFound(message) => ApiFailure::NotFound(message),
            ResourcesError::Invalid(message) => ApiFailure::Conflict(message),
            ResourcesError::Store(err) => err.into(),
            other => ApiFailure::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiFailure::BadRequest(message) => (StatusCode::BAD_REQUEST, "bad_request", message),
            ApiFailure::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong token; the CLI reads it from the server's data dir, or pass --token".into(),
            ),
            ApiFailure::NotFound(message) => (StatusCode::NOT_FOUND, "not_found", message),
            ApiFailure::Conflict(message) => (StatusCode::CONFLICT, "conflict", message),
            ApiFailure::TooLarge(message) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", message),
            ApiFailure::Internal(message) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
        };
        (
            status,
            Json(ApiError {
                code: code.into(),
                message,
            }),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, ApiFailure>;

#[derive(OpenApi)]
#[openapi(
    info(title = "berth", description = "Host Rust apps on machines you own."),
    paths(health, list_apps, create_app, app_status, destroy_app, deploy, releases, app_spec, rollback, scale, get_env, change_env, list_secrets, change_secrets,
        postgres_info, attach_postgres, list_backups, take_backup, restore_backup, redis_info, attach_redis, list_volumes, destroy_volume, logs, events,
        list_jobs, run_job, job_executions, execution, cancel_execution),
    components(schemas(
        ApiError, AppStatus, AppSummary, CreateApp, DeployProgress, EnvChange, EventInfo, InstanceInfo, LogLine,
        ProcessGroupStatus, ReleaseInfo, RollbackRequest, ScaleRequest, ServerHealth,
        berth_proto::SecretInfo, berth_proto::PostgresInfo, berth_proto::RedisInfo, berth_proto::BackupInfo,
        berth_proto::RestoreRequest, berth_proto::VolumeInfo,
        berth_proto::JobInfo, berth_proto::ExecutionInfo, berth_proto::TaskAttemptInfo, berth_proto::RunJob
    )),
    modifiers(&BearerAuth),
    security(("token" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of this API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The API's routes.
pub fn routes(state: ApiState) -> Router {
    let authed = Router::new()
        .route("/v1/apps", get(list_apps).post(create_app))
        .route("/v1/apps/{app}", get(app_status).delete(destroy_app))
        .route(
            "/v1/apps/{app}/deploy",
            post(deploy).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/apps/{app}/releases", get(releases))
        .route("/v1/apps/{app}/spec", get(app_spec))
        .route("/v1/apps/{app}/rollback", post(rollback))
        .route("/v1/apps/{app}/scale", post(scale))
        .route("/v1/apps/{app}/env", get(get_env).post(change_env))
        .route(
            "/v1/apps/{app}/secrets",
            get(list_secrets).post(change_secrets),
        )
        .route(
            "/v1/apps/{app}/postgres",
            get(postgres_info).post(attach_postgres),
        )
        .route(
            "/v1/apps/{app}/postgres/backups",
            get(list_backups).post(take_backup),
        )
        .route("/v1/apps/{app}/postgres/restore", post(restore_backup))
        .route("/v1/apps/{app}/redis", get(redis_info).post(attach_redis))
        .route("/v1/apps/{app}/volumes", get(list_volumes))
        .route(
            "/v1/apps/{app}/volumes/{name}",
            axum::routing::delete(destroy_volume),
        )
        .route("/v1/apps/{app}/logs", get(logs))
        .route("/v1/apps/{app}/events", get(events))
        .route("/v1/apps/{app}/jobs", get(list_jobs))
        .route("/v1/apps/{app}/jobs/{job}/run", post(run_job))
        .route("/v1/apps/{app}/jobs/{job}/executions", get(job_executions))
        .route("/v1/apps/{app}/executions/{id}", get(execution))
        .route(
            "/v1/apps/{app}/executions/{id}/cancel",
            post(cancel_execution),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/v1/health", get(health))
        .route(
            "/v1/openapi.json",
            get(|| async { Json(openapi_document()) }),
        )
        .merge(authed)
        .merge(crate::shuttle::routes())
        .with_state(state)
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(presented.as_bytes(), state.token.as_bytes()) {
        next.run(request).await
    } else {
        ApiFailure::Unauthorized.into_response()
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn ndjson<T: Serialize + Send + 'static>(receiver: mpsc::UnboundedReceiver<T>) -> Response {
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let item = receiver.recv().await?;
        let mut line = serde_json::to_vec(&item).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(line)), receiver))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

fn release_info(row: &ReleaseRow) -> ReleaseInfo {
    ReleaseInfo {
        version: row.version,
        status: ReleaseStatus::from(row.status.as_str()),
        cause: row.cause.clone(),
        slug: row.slug.clone(),
        created_at: row.created_at.clone(),
        processes: row.processes.clone(),
    }
}

/// Server health (no token needed).
#[utoipa::path(get, path = "/v1/health", responses((status = 200, body = ServerHealth)), security(()))]
async fn health(State(state): State<ApiState>) -> Json<ServerHealth> {
    Json(ServerHealth {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        router_url: state.router_url.clone(),
    })
}

/// Every app.
#[utoipa::path(get, path = "/v1/apps", responses((status = 200, body = [AppSummary])))]
async fn list_apps(State(state): State<ApiState>) -> ApiResult<Json<Vec<AppSummary>>> {
    let snapshot = state.reconciler.snapshot();
    let apps = state.store.apps()?;
    let mut summaries = Vec::with_capacity(apps.len());
    for app in apps {
        let counts = state.store.counts(&app.name).unwrap_or_default();
        let actual = snapshot.apps.get(&app.name);
        summaries.push(AppSummary {
            url: state.url(&app.name),
            release: app.target_release,
            running: actual.map_or(0, |actual| {
                actual.groups.iter().map(|group| group.running).sum()
            }),
            desired: counts.values().sum(),
            created_at: app.created_at,
            name: app.name,
        });
    }
    Ok(Json(summaries))
}

/// Creates an app.
#[utoipa::path(post, path = "/v1/apps", request_body = CreateApp,
    responses((status = 201, body = AppSummary), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
async fn create_app(
    State(state): State<ApiState>,
    Json(request): Json<CreateApp>,
) -> ApiResult<(StatusCode, Json<AppSummary>)> {
    validate_app_name(&request.name).map_err(ApiFailure::BadRequest)?;
    let row = state.store.create_app(&request.name)?;
    Ok((
        StatusCode::CREATED,
        Json(AppSummary {
            url: state.url(&row.name),
            release: None,
            running: 0,
            desired: 0,
            created_at: row.created_at,
            name: row.name,
        }),
    ))
}

/// An app's release, process groups and instances.
#[utoipa::path(get, path = "/v1/apps/{app}", params(("app" = String, Path)),
    responses((status = 200, body = AppStatus), (status = 404, body = ApiError)))]
async fn app_status(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<AppStatus>> {
    status_of(&state, &app).map(Json)
}

fn status_of(state: &ApiState, app: &str) -> ApiResult<AppStatus> {
    let row = state.store.app(app)?;
    let release = match row.target_release {
        Some(version) => Some(release_info(&state.store.release(app, version)?)),
        None => None,
    };
    let snapshot = state.reconciler.snapshot();
    let mut actual = snapshot.apps.get(app).cloned().unwrap_or_default();
    let spec: Option<berth_spec::AppSpec> = match row.target_release {
        Some(version) => serde_json::from_str(&state.store.release(app, version)?.spec_json).ok(),
        None => None,
    };
    let scaling = state.store.scaling(app)?;
    for group in &mut actual.groups {
        let Some(stored) = scaling.get(&group.name) else {
            continue;
        };
        group.why = Some(stored.reason.clone().unwrap_or_else(|| "manual".into()));
        if let Some(spec) = &spec
            && spec.http.scaling.is_active()
            && spec.serves_http(&group.name)
        {
            let min = stored.min.unwrap_or(spec.http.scaling.min);
            group.autoscaled = true;
            group.min = Some(min);
            group.max = Some(
                stored
                    .max
                    .or(spec.http.scaling.max)
                    .unwrap_or(stored.manual)
                    .max(min)
                    .max(1),
            );
        } else if stored.scaled.is_none() {
            group.why = Some("manual".into());
        }
    }
    Ok(AppStatus {
        name: row.name,
        url: state.url(app),
        release,
        processes: actual.groups,
        instances: actual.instances,
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct DestroyParams {
    /// Required: `true` confirms the app and its releases go.
    #[serde(default)]
    confirm: bool,
}

/// Destroys an app: stops its instances and deletes its releases.
#[utoipa::path(delete, path = "/v1/apps/{app}", params(("app" = String, Path), DestroyParams),
    responses((status = 204), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn destroy_app(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Query(params): Query<DestroyParams>,
) -> ApiResult<StatusCode> {
    if !params.confirm {
        return Err(ApiFailure::BadRequest(
            "destroying an app needs ?confirm=true".into(),
        ));
    }
    state.store.app(&app)?;
    // Data first: if dropping the database fails, the app stays whole.
    state.resources.destroy_app(&app).await?;
    state.store.destroy_app(&app)?;
    state.reconciler.nudge();
    Ok(StatusCode::NO_CONTENT)
}

/// Uploads a source tarball (zstd-compressed tar), builds and deploys it.
/// Answers with NDJSON `DeployProgress` lines.
#[utoipa::path(post, path = "/v1/apps/{app}/deploy", params(("app" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/zstd"),
    responses((status = 200, body = DeployProgress, content_type = "application/x-ndjson"), (status = 404, body = ApiError), (status = 413, body = ApiError)))]
async fn deploy(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
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
    let body = axum::body::to_bytes(body, state.max_upload_bytes as usize)
        .await
        .map_err(|_| too_large(None))?;
    let (progress, receiver) = mpsc::unbounded_channel();
    let deployer = state.deployer.clone();
    tokio::spawn(async move {
        if let Err(failure) = deployer.deploy_upload(app, body, progress.clone()).await {
            send_failure(&progress, failure);
        }
    });
    Ok(ndjson(receiver))
}

fn send_failure(progress: &mpsc::UnboundedSender<DeployProgress>, failure: DeployFailure) {
    let _ = progress.send(DeployProgress::Failed {
        message: failure.message,
        release: failure.release,
    });
}

/// An app's releases, newest first.
#[utoipa::path(get, path = "/v1/apps/{app}/releases", params(("app" = String, Path)),
    responses((status = 200, body = [ReleaseInfo]), (status = 404, body = ApiError)))]
async fn releases(
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
async fn app_spec(
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
async fn rollback(
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

/// Sets desired instance counts per process group.
#[utoipa::path(post, path = "/v1/apps/{app}/scale", params(("app" = String, Path)), request_body = ScaleRequest,
    responses((status = 200, body = AppStatus), (status = 404, body = ApiError)))]
async fn scale(
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
        .find(|(_, count)| *count > 64)
    {
        return Err(ApiFailure::BadRequest(format!(
            "{name} {count} is more than the 64 instances a group may have"
        )));
    }
    if let Some((name, count)) = request.counts.iter().find(|(_, count)| **count > 64) {
        return Err(ApiFailure::BadRequest(format!(
            "{name}={count} is more than the 64 instances a group may have"
        )));
    }
    if let Some(version) = state.store.app(&app)?.target_release {
        let release = state.store.release(&app, version)?;
        let spec: berth_spec::AppSpec =
            serde_json::from_str(&release.spec_json).unwrap_or_default();
        if let Some(port) = spec.http.internal_port
            && !state.resources.isolated()
            && let Some((name, count)) = request
                .counts
                .iter()
                .find(|(name, count)| **count > 1 && spec.serves_http(name))
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
    status_of(&state, &app).map(Json)
}

/// The process group of `app` that serves HTTP (where `--min/--max` go by default).
fn http_group(state: &ApiState, app: &str) -> ApiResult<String> {
    let version = state.store.app(app)?.target_release.ok_or_else(|| {
        ApiFailure::BadRequest(format!("app `{app}` has no release yet; deploy it first"))
    })?;
    let release = state.store.release(app, version)?;
    let spec: berth_spec::AppSpec = serde_json::from_str(&release.spec_json).unwrap_or_default();
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
async fn get_env(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<BTreeMap<String, String>>> {
    Ok(Json(state.store.env(&app)?))
}

/// Sets and unsets env vars; a change makes a new release. Answers with NDJSON.
#[utoipa::path(post, path = "/v1/apps/{app}/env", params(("app" = String, Path)), request_body = EnvChange,
    responses((status = 200, body = DeployProgress, content_type = "application/x-ndjson"), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn change_env(
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
fn require_a_change(change: &EnvChange, word: &str) -> ApiResult<()> {
    if change.set.is_empty() && change.unset.is_empty() {
        return Err(ApiFailure::BadRequest(format!(
            "nothing to change: give {word}=VALUE to set or {word} to unset"
        )));
    }
    Ok(())
}

/// Validates `change` and runs it as a new release, answering with NDJSON.
fn reconfigure(
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
        crate::deploy::validate_env_key(key).map_err(ApiFailure::BadRequest)?;
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

fn report(
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
async fn list_secrets(
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
async fn change_secrets(
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

/// How to reach the app's database, password included (for its owner).
#[utoipa::path(get, path = "/v1/apps/{app}/postgres", params(("app" = String, Path)),
    responses((status = 200, body = berth_proto::PostgresInfo), (status = 404, body = ApiError)))]
async fn postgres_info(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<berth_proto::PostgresInfo>> {
    state.store.app(&app)?;
    let database = state.resources.postgres_database(&app).await?;
    Ok(Json(berth_proto::PostgresInfo {
        url: database.url(),
        port: database.port,
        database: database.name,
    }))
}

/// Gives the app a database of its own and a release with `DATABASE_URL`.
/// Answers with NDJSON.
#[utoipa::path(post, path = "/v1/apps/{app}/postgres", params(("app" = String, Path)),
    responses((status = 200, body = DeployProgress, content_type = "application/x-ndjson"), (status = 404, body = ApiError)))]
async fn attach_postgres(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Response> {
    attach(state, app, crate::resources::POSTGRES).await
}

/// Gives the app a Redis of its own and a release with `REDIS_URL`.
/// Answers with NDJSON.
#[utoipa::path(post, path = "/v1/apps/{app}/redis", params(("app" = String, Path)),
    responses((status = 200, body = DeployProgress, content_type = "application/x-ndjson"), (status = 404, body = ApiError)))]
async fn attach_redis(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Response> {
    attach(state, app, crate::resources::REDIS).await
}

async fn attach(state: ApiState, app: String, kind: &'static str) -> ApiResult<Response> {
    state.store.app(&app)?;
    let (progress, receiver) = mpsc::unbounded_channel();
    let deployer = state.deployer.clone();
    tokio::spawn(async move {
        report(
            deployer.attach(app, kind, progress.clone()).await,
            &progress,
        );
    });
    Ok(ndjson(receiver))
}

/// The app's database backups, newest first.
#[utoipa::path(get, path = "/v1/apps/{app}/postgres/backups", params(("app" = String, Path)),
    responses((status = 200, body = [berth_proto::BackupInfo]), (status = 404, body = ApiError)))]
async fn list_backups(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<berth_proto::BackupInfo>>> {
    Ok(Json(state.resources.backups(&app)?))
}

/// Takes a backup of the app's database (pg_dump, custom format).
#[utoipa::path(post, path = "/v1/apps/{app}/postgres/backups", params(("app" = String, Path)),
    responses((status = 200, body = berth_proto::BackupInfo), (status = 404, body = ApiError)))]
async fn take_backup(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<berth_proto::BackupInfo>> {
    state.store.app(&app)?;
    Ok(Json(state.resources.backup(&app).await?))
}

/// Restores a backup (the newest unless named) over the app's database.
#[utoipa::path(post, path = "/v1/apps/{app}/postgres/restore", params(("app" = String, Path)),
    request_body = berth_proto::RestoreRequest,
    responses((status = 200, body = berth_proto::BackupInfo), (status = 404, body = ApiError)))]
async fn restore_backup(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Json(request): Json<berth_proto::RestoreRequest>,
) -> ApiResult<Json<berth_proto::BackupInfo>> {
    state.store.app(&app)?;
    Ok(Json(
        state
            .resources
            .restore(&app, request.backup.as_deref())
            .await?,
    ))
}

/// How to reach the app's Redis, password included (for its owner).
#[utoipa::path(get, path = "/v1/apps/{app}/redis", params(("app" = String, Path)),
    responses((status = 200, body = berth_proto::RedisInfo), (status = 404, body = ApiError)))]
async fn redis_info(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<berth_proto::RedisInfo>> {
    state.store.app(&app)?;
    let (url, port) = state.resources.redis_url(&app).await?;
    Ok(Json(berth_proto::RedisInfo {
        url,
        port,
        max_memory_mib: berth_resources::redis::DEFAULT_MAX_MEMORY_MIB,
    }))
}

/// The app's volumes.
#[utoipa::path(get, path = "/v1/apps/{app}/volumes", params(("app" = String, Path)),
    responses((status = 200, body = [berth_proto::VolumeInfo]), (status = 404, body = ApiError)))]
async fn list_volumes(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<berth_proto::VolumeInfo>>> {
    Ok(Json(state.resources.volumes(&app)?))
}

/// Deletes a volume and its files (refused while the active release mounts it).
#[utoipa::path(delete, path = "/v1/apps/{app}/volumes/{name}", params(("app" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn destroy_volume(
    State(state): State<ApiState>,
    Path((app, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    state.resources.destroy_volume(&app, &name)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct LogParams {
    /// Lines at or after this: RFC 3339, or a duration back from now (`10m`, `2h`).
    since: Option<String>,
    /// Only this process group.
    process: Option<String>,
    /// Only this instance.
    instance: Option<String>,
    /// Only the tasks of this job execution.
    execution: Option<i64>,
    /// Only this level or more severe.
    level: Option<String>,
    /// Only lines containing this text.
    grep: Option<String>,
    /// At most this many past lines (default 200).
    limit: Option<u32>,
    /// Keep the answer open and stream new lines (NDJSON).
    #[serde(default)]
    follow: bool,
}

/// An app's logs: JSON array, or NDJSON with `follow=true`.
#[utoipa::path(get, path = "/v1/apps/{app}/logs", params(("app" = String, Path), LogParams),
    responses((status = 200, body = [LogLine]), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn logs(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Query(params): Query<LogParams>,
) -> ApiResult<Response> {
    state.store.app(&app)?;
    let since_micros = match &params.since {
        Some(since) => Some(
            berth_logs::parse_since(since)
                .map_err(|err| ApiFailure::BadRequest(err.to_string()))?,
        ),
        None => None,
    };
    let mut query = LogQuery {
        app,
        since_micros,
        process: params.process,
        instance: params.instance,
        instance_prefix: params.execution.map(|id| format!("exec-{id}-task-")),
        min_level: params.level,
        grep: params.grep,
        after_id: None,
        limit: params.limit.unwrap_or(200).min(10_000),
    };
    let mut live = params.follow.then(|| state.logs.subscribe());
    let past = state
        .logs
        .query(&query)
        .map_err(|err| ApiFailure::BadRequest(err.to_string()))?;
    let Some(mut live) = live.take() else {
        return Ok(Json(
            past.into_iter()
                .map(|stored| stored.line)
                .collect::<Vec<_>>(),
        )
        .into_response());
    };
    let (sender, receiver) = mpsc::unbounded_channel();
    query.after_id = past.last().map(|stored| stored.id);
    for stored in past {
        let _ = sender.send(stored.line);
    }
    tokio::spawn(async move {
        loop {
            match live.recv().await {
                Ok(stored) => {
                    if query.matches(&stored) && sender.send(stored.line.clone()).is_err() {
                        break;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
            if sender.is_closed() {
                break;
            }
        }
    });
    Ok(ndjson(receiver))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct EventParams {
    /// Only events with an id above this.
    after: Option<i64>,
    /// At most this many (default 100).
    limit: Option<u32>,
    /// Keep the answer open and stream new events (NDJSON).
    #[serde(default)]
    follow: bool,
}

/// An app's event log: deploys, starts, exits and their causes, health changes, scaling.
#[utoipa::path(get, path = "/v1/apps/{app}/events", params(("app" = String, Path), EventParams),
    responses((status = 200, body = [EventInfo]), (status = 404, body = ApiError)))]
async fn events(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Query(params): Query<EventParams>,
) -> ApiResult<Response> {
    state.store.app(&app)?;
    let limit = params.limit.unwrap_or(100).min(10_000);
    let to_info = |row: berth_store::EventRow| EventInfo {
        id: row.id,
        at: row.at,
        app: row.app,
        kind: row.kind,
        message: row.message,
    };
    let past: Vec<EventInfo> = state
        .store
        .events(&app, params.after.unwrap_or(0), limit)?
        .into_iter()
        .map(to_info)
        .collect();
    if !params.follow {
        return Ok(Json(past).into_response());
    }
    let (sender, receiver) = mpsc::unbounded_channel();
    let mut after = past
        .last()
        .map_or(params.after.unwrap_or(0), |event| event.id);
    for event in past {
        let _ = sender.send(event);
    }
    let store = state.store.clone();
    tokio::spawn(async move {
        while !sender.is_closed() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let Ok(new) = store.events(&app, after, 1000) else {
                break;
            };
            for row in new {
                after = row.id;
                if sender.send(to_info(row)).is_err() {
                    return;
                }
            }
        }
    });
    Ok(ndjson(receiver))
}

/// The jobs of the app's active release, with next runs and last executions.
#[utoipa::path(get, path = "/v1/apps/{app}/jobs", params(("app" = String, Path)),
    responses((status = 200, body = [berth_proto::JobInfo]), (status = 404, body = ApiError)))]
async fn list_jobs(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<berth_proto::JobInfo>>> {
    Ok(Json(state.jobs.jobs(&app)?))
}

/// Starts an execution of a job; answers at once with it.
#[utoipa::path(post, path = "/v1/apps/{app}/jobs/{job}/run", params(("app" = String, Path), ("job" = String, Path)),
    request_body = berth_proto::RunJob,
    responses((status = 201, body = berth_proto::ExecutionInfo), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn run_job(
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
        "manual"
    } else {
        "api"
    };
    let id = state.jobs.run(
        &app,
        &job,
        crate::jobs::RunOptions {
            trigger: trigger.into(),
            tasks: request.tasks,
            env: request.env.into_iter().collect(),
        },
    )?;
    let row = state.store.execution(&app, id)?;
    Ok((StatusCode::CREATED, Json(crate::jobs::execution_info(&row))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct HistoryParams {
    /// At most this many (default 20).
    limit: Option<u32>,
}

/// A job's executions, newest first.
#[utoipa::path(get, path = "/v1/apps/{app}/jobs/{job}/executions", params(("app" = String, Path), ("job" = String, Path), HistoryParams),
    responses((status = 200, body = [berth_proto::ExecutionInfo]), (status = 404, body = ApiError)))]
async fn job_executions(
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
async fn execution(
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
async fn cancel_execution(
    State(state): State<ApiState>,
    Path((app, id)): Path<(String, i64)>,
) -> ApiResult<Json<berth_proto::ExecutionInfo>> {
    state.jobs.cancel(&app, id).await?;
    Ok(Json(crate::jobs::execution_info(
        &state.store.execution(&app, id)?,
    )))
}
