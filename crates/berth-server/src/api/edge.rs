//! `berth edge`: an app's edge rules set from the command line, on top of
//! the `[edge]` its berth.toml sets, applied from the next reconcile pass
//! without a deploy.

use axum::Json;
use axum::extract::{Path, State};
use berth_proto::{ApiError, AppEdge, EdgeRuleSet};

use super::ApiState;
use super::error::{ApiFailure, ApiResult};

/// The app's edge rules from both sources.
fn app_edge(state: &ApiState, app: &str) -> ApiResult<AppEdge> {
    let row = state.store.app(app)?;
    let from_spec = match row.target_release {
        Some(version) => {
            let release = state.store.release(app, version)?;
            crate::stored_spec::spec_of(&release)
                .map_err(|err| ApiFailure::Internal(err.to_string()))?
                .edge
                .to_rule_set()
        }
        None => EdgeRuleSet::default(),
    };
    let from_cli = state.store.edge_rules(app)?;
    Ok(AppEdge {
        app: app.to_string(),
        effective: from_spec.with(&from_cli),
        from_spec,
        from_cli,
    })
}

/// The app's edge rules: from its berth.toml, set with `berth edge`, and
/// both together.
#[utoipa::path(get, path = "/v1/apps/{app}/edge", params(("app" = String, Path)),
    responses((status = 200, body = AppEdge), (status = 404, body = ApiError)))]
pub(super) async fn get_edge(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<AppEdge>> {
    app_edge(&state, &app).map(Json)
}

/// Replaces the rules set with `berth edge` (empty rules clear them); the
/// router applies them within a reconcile pass.
#[utoipa::path(put, path = "/v1/apps/{app}/edge", params(("app" = String, Path)), request_body = EdgeRuleSet,
    responses((status = 200, body = AppEdge), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn set_edge(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Json(rules): Json<EdgeRuleSet>,
) -> ApiResult<Json<AppEdge>> {
    let problems = rules.problems();
    if !problems.is_empty() {
        return Err(ApiFailure::BadRequest(problems.join("; ")));
    }
    state.store.set_edge_rules(&app, &rules)?;
    let _ = state.store.record_event(
        &app,
        berth_store::EventKind::EdgeChanged,
        if rules.is_empty() {
            "edge rules set with `berth edge` cleared"
        } else {
            "edge rules set with `berth edge` changed"
        },
    );
    state
        .reconciler
        .nudge_and_wait(std::time::Duration::from_secs(2))
        .await;
    app_edge(&state, &app).map(Json)
}
