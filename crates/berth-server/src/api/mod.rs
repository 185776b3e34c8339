//! The HTTP/JSON API under `/v1`, with bearer-token auth and an OpenAPI document.
//!
//! Handlers only translate: they read the store and the reconciler's
//! snapshot, or hand work to the [`Deployer`](crate::deploy::Deployer), and choose status codes. Long
//! operations (deploys, env changes, rollbacks, followed logs) answer with an
//! NDJSON stream so the CLI can show progress as it happens.

use axum::extract::DefaultBodyLimit;
use axum::middleware::{self};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_proto::{
    ApiError, AppStatus, AppSummary, CreateApp, DeployProgress, EnvChange, EventInfo, InstanceInfo,
    LogLine, ProcessGroupStatus, ReleaseInfo, RollbackRequest, ScaleRequest, ServerHealth,
};
use utoipa::OpenApi;

mod apps;
mod auth;
mod config;
mod dashboard;
mod deploys;
mod disk;
mod domains;
mod drains;
mod edge;
mod error;
mod images;
mod jobs;
mod logs;
mod metrics;
mod registry;
mod resources;
mod serve;
mod shuttle;
mod state;
mod stream;
mod terminal;
mod usage;

pub(crate) use metrics::serve_metrics;
pub(crate) use registry::{release_pins, spawn_collector as spawn_registry_collector};
pub(crate) use serve::serve;

pub use state::ApiState;

use apps::*;
use config::*;
use deploys::*;
use domains::*;
use edge::*;
use jobs::*;
use logs::*;
use resources::*;

#[derive(OpenApi)]
#[openapi(
    info(title = "berth", description = "Host Rust apps on machines you own."),
    paths(health, tunnel, list_apps, create_app, app_status, destroy_app, deploy, releases, app_spec, rollback, scale, get_env, change_env, list_secrets, change_secrets,
        postgres_info, attach_postgres, list_backups, take_backup, restore_backup, migrate, redis_info, attach_redis, list_volumes, destroy_volume, logs, events,
        list_jobs, run_job, run_command, terminal::run_terminal, drains::list_drains, drains::add_drain, drains::remove_drain, job_executions, execution, cancel_execution, list_domains, add_domain, remove_domain, check_domain, certs_root,
        get_edge, set_edge, usage::usage, usage::get_budget, usage::set_budget, usage::resume_budget, usage::list_notify, usage::add_notify, usage::remove_notify, usage::notify_log, registry::collect::listing, registry::collect::gc_now, registry::logins::list_logins, registry::logins::add_login, registry::logins::remove_login, images::build_image),
    components(schemas(
        ApiError, AppStatus, AppSummary, CreateApp, DeployProgress, EnvChange, EventInfo, InstanceInfo, LogLine,
        ProcessGroupStatus, ReleaseInfo, RollbackRequest, ScaleRequest, ServerHealth,
        berth_proto::SecretInfo, berth_proto::PostgresInfo, berth_proto::RedisInfo, berth_proto::BackupInfo, berth_proto::MigrateResult,
        berth_proto::RestoreRequest, berth_proto::VolumeInfo,
        berth_proto::JobInfo, berth_proto::ExecutionInfo, berth_proto::TaskAttemptInfo, berth_proto::RunJob, berth_proto::RunCommand, berth_proto::TerminalSize, berth_proto::AddDrain, berth_proto::DrainInfo, berth_proto::DrainKind,
        berth_proto::DomainInfo, berth_proto::AddDomain, berth_proto::DomainCheck, berth_proto::EdgeCounts, berth_proto::DomainCertificate,
        berth_proto::AppEdge, berth_proto::EdgeRuleSet, berth_proto::RateLimit, berth_proto::TunnelStatus,
        berth_proto::UsageRow, berth_proto::UsageReport, berth_proto::BudgetStatus, berth_proto::BudgetSettings, berth_proto::BudgetHold, berth_proto::BudgetAction, berth_proto::SetBudget,
        berth_proto::AddNotifyChannel, berth_proto::NotifyChannel, berth_proto::NotifyDelivery, berth_proto::NotifyFormat,
        berth_proto::RegistryListing, berth_proto::RegistryRepo, berth_proto::RegistryTag, berth_proto::RegistryGc, berth_proto::BuildImage, berth_proto::BuiltImage, berth_proto::RegistryLogin, berth_proto::RegistryLoginInfo
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
        .route("/v1/tunnel", get(tunnel))
        .route("/v1/usage", get(usage::usage))
        .route(
            "/v1/budgets/{app}",
            get(usage::get_budget).put(usage::set_budget),
        )
        .route("/v1/budgets/{app}/resume", post(usage::resume_budget))
        .route(
            "/v1/notify",
            get(usage::list_notify).post(usage::add_notify),
        )
        .route("/v1/notify/log", get(usage::notify_log))
        .route("/v1/registry", get(registry::collect::listing))
        .route("/v1/registry/gc", post(registry::collect::gc_now))
        .route(
            "/v1/registry/logins",
            get(registry::logins::list_logins).post(registry::logins::add_login),
        )
        .route(
            "/v1/registry/logins/{host}",
            axum::routing::delete(registry::logins::remove_login),
        )
        .route("/v1/apps/{app}/image", post(images::build_image))
        .route(
            "/v1/notify/{id}",
            axum::routing::delete(usage::remove_notify),
        )
        .route("/metrics", get(metrics::metrics))
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
        .route("/v1/apps/{app}/postgres/migrate", post(migrate))
        .route("/v1/apps/{app}/redis", get(redis_info).post(attach_redis))
        .route("/v1/apps/{app}/volumes", get(list_volumes))
        .route(
            "/v1/apps/{app}/volumes/{name}",
            axum::routing::delete(destroy_volume),
        )
        .route("/v1/domains", get(list_domains))
        .route("/v1/domains/{name}/check", get(check_domain))
        .route("/v1/certs/root", get(certs_root))
        .route("/v1/apps/{app}/domains", post(add_domain))
        .route(
            "/v1/apps/{app}/domains/{name}",
            axum::routing::delete(remove_domain),
        )
        .route("/v1/apps/{app}/edge", get(get_edge).put(set_edge))
        .route("/v1/apps/{app}/logs", get(logs))
        .route(
            "/v1/apps/{app}/drains",
            get(drains::list_drains).post(drains::add_drain),
        )
        .route(
            "/v1/apps/{app}/drains/{id}",
            axum::routing::delete(drains::remove_drain),
        )
        .route("/v1/apps/{app}/events", get(events))
        .route("/v1/apps/{app}/jobs", get(list_jobs))
        .route("/v1/apps/{app}/jobs/{job}/run", post(run_job))
        .route("/v1/apps/{app}/run", post(run_command))
        .route("/v1/apps/{app}/run/terminal", post(terminal::run_terminal))
        .route("/v1/apps/{app}/jobs/{job}/executions", get(job_executions))
        .route("/v1/apps/{app}/executions/{id}", get(execution))
        .route(
            "/v1/apps/{app}/executions/{id}/cancel",
            post(cancel_execution),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            disk::refuse_writes_when_full,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/v1/health", get(health))
        .route(
            "/v1/openapi.json",
            get(|| async { Json(openapi_document()) }),
        )
        .merge(authed)
        .merge(registry::routes(state.clone()))
        .merge(dashboard::routes(state.clone()))
        .merge(shuttle::routes())
        .layer(middleware::map_request(serve::body_deadline))
        .layer(middleware::from_fn(auth::require_local_host))
        .with_state(state)
}

/// Only the Shuttle runtime API, for the plain loopback listener Shuttle
/// projects use when the API itself is served over TLS.
pub(crate) fn runtime_routes(state: ApiState) -> Router {
    Router::new()
        .merge(shuttle::routes())
        .layer(middleware::map_request(serve::body_deadline))
        .layer(middleware::from_fn(auth::require_local_host))
        .with_state(state)
}
