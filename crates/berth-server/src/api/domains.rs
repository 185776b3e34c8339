//! Custom domains (`berth domains add|list|remove`) and their
//! certificates (`berth certs root`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use berth_proto::{AddDomain, ApiError, DomainInfo};
use berth_store::DomainRow;

use super::ApiState;
use super::error::{ApiFailure, ApiResult};

fn info(row: DomainRow) -> DomainInfo {
    DomainInfo {
        name: row.name,
        app: row.app,
        from_spec: row.from_spec,
        created_at: row.created_at,
    }
}

/// Which domains to list.
#[derive(Debug, serde::Deserialize)]
pub(super) struct DomainFilter {
    app: Option<String>,
}

/// Every custom domain, or one app's (`?app=`).
#[utoipa::path(get, path = "/v1/domains", params(("app" = Option<String>, Query)),
    responses((status = 200, body = [DomainInfo])))]
pub(super) async fn list_domains(
    State(state): State<ApiState>,
    Query(filter): Query<DomainFilter>,
) -> ApiResult<Json<Vec<DomainInfo>>> {
    if let Some(app) = &filter.app {
        state.store.app(app)?;
    }
    let rows = state.store.domains(filter.app.as_deref())?;
    Ok(Json(rows.into_iter().map(info).collect()))
}

/// Gives a domain to the app: the router serves it for the app from the
/// next reconcile pass on.
#[utoipa::path(post, path = "/v1/apps/{app}/domains", params(("app" = String, Path)), request_body = AddDomain,
    responses((status = 201, body = DomainInfo), (status = 400, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError)))]
pub(super) async fn add_domain(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Json(body): Json<AddDomain>,
) -> ApiResult<(StatusCode, Json<DomainInfo>)> {
    let name = berth_proto::validate_domain(&body.name).map_err(ApiFailure::BadRequest)?;
    let row = state.store.add_domain(&app, &name)?;
    let _ = state.store.record_event(
        &app,
        berth_store::EventKind::DomainAdded,
        &format!("domain {name} added"),
    );
    state
        .reconciler
        .nudge_and_wait(std::time::Duration::from_secs(2))
        .await;
    Ok((StatusCode::CREATED, Json(info(row))))
}

/// Takes a domain from the app.
#[utoipa::path(delete, path = "/v1/apps/{app}/domains/{name}", params(("app" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = ApiError)))]
pub(super) async fn remove_domain(
    State(state): State<ApiState>,
    Path((app, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let name = berth_proto::validate_domain(&name).map_err(ApiFailure::BadRequest)?;
    state.store.remove_domain(&app, &name)?;
    let _ = state.store.record_event(
        &app,
        berth_store::EventKind::DomainRemoved,
        &format!("domain {name} removed"),
    );
    state
        .reconciler
        .nudge_and_wait(std::time::Duration::from_secs(2))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// berth's own CA certificate (PEM): what a client trusts to verify the
/// certificates berth makes for names a public CA cannot serve.
#[utoipa::path(get, path = "/v1/certs/root", responses((status = 200, body = String, content_type = "application/x-pem-file")))]
pub(super) async fn certs_root(State(state): State<ApiState>) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
        state.ca_root.as_str().to_string(),
    )
}
