//! Shuttle's runtime API, served by berth, so Shuttle projects run unchanged.
//!
//! A binary built with `#[shuttle_runtime::main]` reads `SHUTTLE_*`
//! variables at start (see `crate::launch::shuttle`), then calls the platform's API
//! at `SHUTTLE_API` with `SHUTTLE_API_KEY` as a bearer token:
//!
//! - `GET  /projects/{project}/resources/secrets`: the project's secrets;
//! - `POST /projects/{project}/resources` with `{"type", "config"}`: provision
//!   a resource, answered with `{"type", "state", "config", "output"}`; the
//!   runtime polls while the state is `provisioning` and stops at `ready`.
//!
//! berth mounts these under `/shuttle`. The project is the app; the key is
//! an HMAC of the app's name under the server's vault key, so one app's
//! process cannot read another app's secrets. `database::shared::postgres`
//! is the app's database on berth's PostgreSQL (attached on first use);
//! every other resource type is answered with a clear 400 that the runtime
//! prints before it exits, instead of a hang.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::state::ApiState;
use crate::launch::shuttle::TOKEN_PURPOSE;

/// The resource type berth provides.
const SHARED_POSTGRES: &str = "database::shared::postgres";

/// The routes, to merge beside `/v1` (they carry their own per-app auth).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/shuttle/projects/{project}/resources/secrets",
            get(secrets),
        )
        .route("/shuttle/projects/{project}/resources", post(provision))
}

/// A failure in the shape shuttle's API client parses (`message`, `status_code`).
struct ShuttleFailure(StatusCode, String);

impl IntoResponse for ShuttleFailure {
    fn into_response(self) -> Response {
        let body = json!({ "message": self.1, "status_code": self.0.as_u16() });
        (self.0, Json(body)).into_response()
    }
}

type ShuttleResult = Result<Json<Value>, ShuttleFailure>;

/// Checks the bearer token against `project`'s and that the app exists.
fn authorize(state: &ApiState, project: &str, headers: &HeaderMap) -> Result<(), ShuttleFailure> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = state.resources.app_token(project, TOKEN_PURPOSE);
    if !super::auth::constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        return Err(ShuttleFailure(
            StatusCode::UNAUTHORIZED,
            "missing or wrong SHUTTLE_API_KEY for this project".into(),
        ));
    }
    state
        .store
        .app(project)
        .map_err(|err| ShuttleFailure(StatusCode::NOT_FOUND, format!("unknown project: {err}")))?;
    Ok(())
}

async fn secrets(
    State(state): State<ApiState>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> ShuttleResult {
    authorize(&state, &project, &headers)?;
    let secrets = state
        .resources
        .open_secrets(&project)
        .map_err(|err| ShuttleFailure(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
    Ok(Json(json!({
        "type": "secrets",
        "state": "ready",
        "config": {},
        "output": secrets,
    })))
}

#[derive(Deserialize)]
struct ProvisionRequest {
    r#type: String,
    #[serde(default)]
    config: Value,
}

async fn provision(
    State(state): State<ApiState>,
    Path(project): Path<String>,
    headers: HeaderMap,
    Json(request): Json<ProvisionRequest>,
) -> ShuttleResult {
    authorize(&state, &project, &headers)?;
    if request.r#type != SHARED_POSTGRES {
        return Err(ShuttleFailure(
            StatusCode::BAD_REQUEST,
            format!(
                "berth does not provide the Shuttle resource `{}`; it provides `{SHARED_POSTGRES}` (berth's managed PostgreSQL)",
                request.r#type
            ),
        ));
    }
    let failure = |err: crate::services::ResourcesError| {
        ShuttleFailure(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
    };
    let made = state
        .resources
        .attach_postgres(&project)
        .await
        .map_err(failure)?;
    if made {
        tracing::info!(app = %project, "made a database for the Shuttle runtime's request");
    }
    let database = state
        .resources
        .postgres_database(&project)
        .await
        .map_err(failure)?;
    Ok(Json(json!({
        "type": SHARED_POSTGRES,
        "state": "ready",
        "config": request.config,
        "output": database.url(),
    })))
}
