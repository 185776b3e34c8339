//! Custom domains (`berth domains add|list|remove`) and their
//! certificates (`berth certs root`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use berth_proto::{AddDomain, ApiError, DomainInfo};
use berth_store::DomainRow;

use super::error::{ApiFailure, ApiResult};
use super::state::ApiState;

fn info(row: DomainRow) -> DomainInfo {
    DomainInfo {
        name: row.name,
        app: row.app,
        from_spec: row.from_spec,
        created_at: row.created_at,
        tls_internal: row.tls_internal,
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
    state.store.app(&app)?;
    if let Some(why) = state.deployer.domain_names_another_app(&app, &name) {
        return Err(ApiFailure::Conflict(why));
    }
    let row = state.store.add_domain(&app, &name, body.tls_internal)?;
    let _ = state.store.record_event(
        &app,
        berth_store::EventKind::DomainAdded,
        &format!("domain {name} added"),
    );
    state
        .reconciler
        .nudge_and_wait(std::time::Duration::from_secs(2))
        .await;
    if let Some(certs) = &state.certs {
        certs.wake.notify_one();
    }
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

/// Whether a custom domain can be served over HTTPS, and if not, why: where
/// the name points, its certificate, the CA's last answer.
#[utoipa::path(get, path = "/v1/domains/{name}/check", params(("name" = String, Path)),
    responses((status = 200, body = berth_proto::DomainCheck), (status = 404, body = ApiError)))]
pub(super) async fn check_domain(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<berth_proto::DomainCheck>> {
    let name = berth_proto::validate_domain(&name).map_err(ApiFailure::BadRequest)?;
    let custom = state
        .store
        .domains(None)?
        .into_iter()
        .find(|row| row.name == name)
        .map(|row| row.app);
    // An app's own name (`APP.SUFFIX`) is checked like a custom domain.
    let own = || {
        let certs = state.certs.as_ref()?;
        let app = name.strip_suffix(&format!(".{}", certs.suffix))?;
        state.store.app(app).ok().map(|row| row.name)
    };
    let app = custom
        .or_else(own)
        .ok_or_else(|| ApiFailure::NotFound(format!("domain `{name}` is not served by any app")))?;
    let resolved: Vec<std::net::IpAddr> = tokio::net::lookup_host((name.as_str(), 443))
        .await
        .map(|found| found.map(|addr| addr.ip()).collect())
        .unwrap_or_default();
    let own = berth_runtime::netns::host_addresses();
    let points_here = resolved
        .iter()
        .any(|ip| ip.is_loopback() || own.contains(ip));
    let mut check = berth_proto::DomainCheck {
        name: name.clone(),
        app,
        resolves_to: resolved.iter().map(ToString::to_string).collect(),
        points_here,
        issuer: "none (the server has no --https)".into(),
        expires: None,
        renews: None,
        problem: None,
        next_attempt: None,
    };
    let certificate = certificate_of(&state, &name);
    check.issuer = certificate.issuer;
    check.expires = certificate.expires;
    check.renews = certificate.renews;
    check.problem = certificate.problem;
    check.next_attempt = state
        .certs
        .as_ref()
        .and_then(|certs| certs.status_of(&name).next_attempt)
        .map(crate::edge::certs::humantime_date);
    if !points_here && check.expires.is_none() {
        let shown = if check.resolves_to.is_empty() {
            "does not resolve".to_string()
        } else {
            format!("resolves to {}", check.resolves_to.join(", "))
        };
        check.problem = Some(format!(
            "{name} {shown}, not to this machine: point its A/AAAA record here so the CA can reach it{}",
            check
                .problem
                .as_ref()
                .map(|why| format!(" ({why})"))
                .unwrap_or_default()
        ));
    }
    Ok(Json(check))
}

/// Where the certificate of the custom domain `name` stands.
pub(super) fn certificate_of(state: &ApiState, name: &str) -> berth_proto::DomainCertificate {
    let mut certificate = berth_proto::DomainCertificate {
        name: name.to_string(),
        issuer: "none (the server has no --https)".into(),
        ..Default::default()
    };
    let Some(certs) = &state.certs else {
        return certificate;
    };
    let Some(directory) = &certs.directory else {
        certificate.issuer = "berth's own CA (no --acme-directory or --acme-email)".into();
        return certificate;
    };
    if !(certs.public)(name) {
        certificate.issuer = if berth_proto::publicly_certifiable(name) {
            "berth's own CA (tls internal)".into()
        } else {
            "berth's own CA (no public CA issues for this name)".into()
        };
        return certificate;
    }
    certificate.issuer = format!("acme ({directory})");
    certificate.expires = certs
        .certificates
        .public_certificate(name)
        .map(|issued| crate::edge::certs::humantime_date(issued.not_after));
    certificate.renews = certs.renewal_plan(name);
    certificate.problem = certs.status_of(name).last_error;
    if certificate.expires.is_none() && certificate.problem.is_none() {
        certificate.problem = Some("being issued now".into());
    }
    certificate
}
