//! Apps: list, create, status, destroy; the server's health.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use berth_proto::{ApiError, AppStatus, AppSummary, CreateApp, ServerHealth, validate_app_name};
use serde::Deserialize;

use super::deploys::release_info;
use super::error::{ApiFailure, ApiResult};
use super::state::ApiState;

/// Server health (no token needed).
#[utoipa::path(get, path = "/v1/health", responses((status = 200, body = ServerHealth)), security(()))]
pub(super) async fn health(State(state): State<ApiState>) -> Json<ServerHealth> {
    Json(ServerHealth {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        router_url: state.router_url.clone(),
    })
}

/// The tunnel to a relay: `null` when the server keeps none.
#[utoipa::path(get, path = "/v1/tunnel", responses((status = 200, body = Option<berth_proto::TunnelStatus>)))]
pub(super) async fn tunnel(
    State(state): State<ApiState>,
) -> Json<Option<berth_proto::TunnelStatus>> {
    Json(state.tunnel.as_ref().map(|(relay, current)| {
        let unix = |time: std::time::SystemTime| {
            time.duration_since(std::time::UNIX_EPOCH)
                .map(|since| since.as_secs())
                .unwrap_or_default()
        };
        let mut status = berth_proto::TunnelStatus {
            relay: relay.clone(),
            state: "connecting".into(),
            since: None,
            domains: Vec::new(),
            error: None,
        };
        match &*current.borrow() {
            berth_tunnel::TunnelState::Connecting => {}
            berth_tunnel::TunnelState::Connected { since, domains } => {
                status.state = "connected".into();
                status.since = Some(unix(*since));
                status.domains = domains.clone();
            }
            berth_tunnel::TunnelState::Retrying { error } => {
                status.state = "retrying".into();
                status.error = Some(error.clone());
            }
        }
        status
    }))
}

/// Every app.
#[utoipa::path(get, path = "/v1/apps", responses((status = 200, body = [AppSummary])))]
pub(super) async fn list_apps(State(state): State<ApiState>) -> ApiResult<Json<Vec<AppSummary>>> {
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
pub(super) async fn create_app(
    State(state): State<ApiState>,
    Json(request): Json<CreateApp>,
) -> ApiResult<(StatusCode, Json<AppSummary>)> {
    validate_app_name(&request.name).map_err(ApiFailure::BadRequest)?;
    if let Some(why) = state.deployer.app_name_held_by_a_domain(&request.name) {
        return Err(ApiFailure::Conflict(why));
    }
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
pub(super) async fn app_status(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<AppStatus>> {
    full_status(&state, &app).await.map(Json)
}

/// [`status_of`] with the disk the app's logs take.
pub(super) async fn full_status(state: &ApiState, app: &str) -> ApiResult<AppStatus> {
    let mut status = status_of(state, app)?;
    status.logs.bytes = state.logs.app_bytes(app).await.unwrap_or(0);
    Ok(status)
}

pub(super) fn status_of(state: &ApiState, app: &str) -> ApiResult<AppStatus> {
    let row = state.store.app(app)?;
    let release = match row.target_release {
        Some(version) => Some(release_info(&state.store.release(app, version)?)),
        None => None,
    };
    let snapshot = state.reconciler.snapshot();
    let mut actual = snapshot.apps.get(app).cloned().unwrap_or_default();
    // Uptimes as of now, not as of the last reconciler pass.
    let age = snapshot
        .published
        .map(|at| at.elapsed().as_millis() as u64)
        .unwrap_or_default();
    for instance in &mut actual.instances {
        instance.uptime_ms += age;
        instance.uptime_secs = instance.uptime_ms / 1000;
    }
    let spec: Option<berth_spec::AppSpec> = match row.target_release {
        Some(version) => serde_json::from_str(&state.store.release(app, version)?.spec_json).ok(),
        None => None,
    };
    let log_spec = spec.as_ref().map(|spec| spec.logs).unwrap_or_default();
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
        edge: actual.edge,
        domains: state
            .certs
            .as_ref()
            .and_then(|certs| certs.acme_app_name(app))
            .into_iter()
            .chain(
                state
                    .store
                    .domains(Some(app))?
                    .into_iter()
                    .map(|row| row.name),
            )
            .map(|name| super::domains::certificate_of(state, &name))
            .collect(),
        logs: berth_proto::LogUsage {
            bytes: 0,
            max_bytes: log_spec.max_bytes_or_default(),
            retain_secs: log_spec.retain_or_default().as_secs(),
        },
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct DestroyParams {
    /// Required: `true` confirms the app and its releases go.
    #[serde(default)]
    confirm: bool,
}

/// Destroys an app: stops its instances and deletes its releases.
#[utoipa::path(delete, path = "/v1/apps/{app}", params(("app" = String, Path), DestroyParams),
    responses((status = 204), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn destroy_app(
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
    // Its drains stop: a new app of the same name must not feed them.
    state.drains.stop_app(&app);
    state.deployer.collect_slugs();
    tracing::info!(%app, "app destroyed");
    if let Err(err) = state.logs.forget_app(&app).await {
        tracing::warn!(%app, error = %err, "cannot delete the destroyed app's logs");
    }
    state.reconciler.nudge();
    Ok(StatusCode::NO_CONTENT)
}
