//! PostgreSQL, Redis, backups and volumes of an app.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use berth_proto::{ApiError, DeployProgress};
use tokio::sync::mpsc;

use super::config::report;
use super::error::ApiResult;
use super::state::ApiState;
use super::stream::ndjson;

/// How to reach the app's database, password included (for its owner).
#[utoipa::path(get, path = "/v1/apps/{app}/postgres", params(("app" = String, Path)),
    responses((status = 200, body = berth_proto::PostgresInfo), (status = 404, body = ApiError)))]
pub(super) async fn postgres_info(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<berth_proto::PostgresInfo>> {
    state.store.app(&app)?;
    let database = state.resources.postgres_database(&app).await?;
    let connections = state.resources.postgres_connections(&app).await?;
    Ok(Json(berth_proto::PostgresInfo {
        url: database.url(),
        port: database.port,
        database: database.name,
        connections,
        connection_limit: berth_resources::postgres::ROLE_CONNECTION_LIMIT,
    }))
}

/// Gives the app a database of its own and a release with `DATABASE_URL`.
/// Answers with NDJSON.
#[utoipa::path(post, path = "/v1/apps/{app}/postgres", params(("app" = String, Path)),
    responses((status = 200, body = DeployProgress, content_type = "application/x-ndjson"), (status = 404, body = ApiError)))]
pub(super) async fn attach_postgres(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Response> {
    attach(state, app, berth_store::ResourceKind::Postgres).await
}

/// Gives the app a Redis of its own and a release with `REDIS_URL`.
/// Answers with NDJSON.
#[utoipa::path(post, path = "/v1/apps/{app}/redis", params(("app" = String, Path)),
    responses((status = 200, body = DeployProgress, content_type = "application/x-ndjson"), (status = 404, body = ApiError)))]
pub(super) async fn attach_redis(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Response> {
    attach(state, app, berth_store::ResourceKind::Redis).await
}

pub(super) async fn attach(
    state: ApiState,
    app: String,
    kind: berth_store::ResourceKind,
) -> ApiResult<Response> {
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
pub(super) async fn list_backups(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<berth_proto::BackupInfo>>> {
    Ok(Json(state.resources.backups(&app)?))
}

/// Takes a backup of the app's database (pg_dump, custom format).
#[utoipa::path(post, path = "/v1/apps/{app}/postgres/backups", params(("app" = String, Path)),
    responses((status = 200, body = berth_proto::BackupInfo), (status = 404, body = ApiError)))]
pub(super) async fn take_backup(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<berth_proto::BackupInfo>> {
    state.store.app(&app)?;
    Ok(Json(state.resources.backup(&app).await?))
}

/// Applies the `migrations/` of the app's running release to its database,
/// keeping sqlx's `_sqlx_migrations` table.
#[utoipa::path(post, path = "/v1/apps/{app}/postgres/migrate", params(("app" = String, Path)),
    responses((status = 200, body = berth_proto::MigrateResult), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn migrate(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<berth_proto::MigrateResult>> {
    state.store.app(&app)?;
    Ok(Json(state.resources.migrate(&app).await?))
}

/// Restores a backup (the newest unless named) over the app's database.
#[utoipa::path(post, path = "/v1/apps/{app}/postgres/restore", params(("app" = String, Path)),
    request_body = berth_proto::RestoreRequest,
    responses((status = 200, body = berth_proto::BackupInfo), (status = 404, body = ApiError)))]
pub(super) async fn restore_backup(
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
pub(super) async fn redis_info(
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
pub(super) async fn list_volumes(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<berth_proto::VolumeInfo>>> {
    Ok(Json(state.resources.volumes(&app)?))
}

/// Deletes a volume and its files (refused while the active release mounts it).
#[utoipa::path(delete, path = "/v1/apps/{app}/volumes/{name}", params(("app" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn destroy_volume(
    State(state): State<ApiState>,
    Path((app, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    state.resources.destroy_volume(&app, &name)?;
    Ok(StatusCode::NO_CONTENT)
}
