//! What the dashboard's forms do: scale a group, roll back, run a job,
//! resume an app its budget stopped.
//! Each checks the form's CSRF token first, then does what the API's own
//! route does, and sends the browser back to the app's page.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form, Json};
use serde::Deserialize;

use super::sessions::refuse_forged;
use crate::api::state::ApiState;
use crate::sessions::Session;

fn back_to(app: &str) -> Response {
    Redirect::to(&format!("/ui/apps/{app}")).into_response()
}

#[derive(Deserialize)]
pub(super) struct ScaleForm {
    #[serde(default)]
    csrf: String,
    process: String,
    count: u32,
}

/// Scales one process group to a count.
pub(super) async fn scale(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(app): Path<String>,
    Form(form): Form<ScaleForm>,
) -> Response {
    if let Some(refused) = refuse_forged(&session, &form.csrf) {
        return refused;
    }
    let request = berth_proto::ScaleRequest {
        counts: BTreeMap::from([(form.process, form.count)]),
        ..berth_proto::ScaleRequest::default()
    };
    match crate::api::config::scale(State(state), Path(app.clone()), Json(request)).await {
        Ok(_) => back_to(&app),
        Err(err) => err.into_response(),
    }
}

#[derive(Deserialize)]
pub(super) struct RollbackForm {
    #[serde(default)]
    csrf: String,
    version: u64,
}

/// Rolls back to a release; the roll-out goes on after the answer.
pub(super) async fn rollback(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(app): Path<String>,
    Form(form): Form<RollbackForm>,
) -> Response {
    if let Some(refused) = refuse_forged(&session, &form.csrf) {
        return refused;
    }
    if let Err(err) = state.store.release(&app, form.version) {
        return crate::api::error::ApiFailure::from(err).into_response();
    }
    let (progress, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let deployer = state.deployer.clone();
    let target = app.clone();
    tokio::spawn(async move {
        if let Err(failure) = deployer
            .rollback(target.clone(), Some(form.version), progress)
            .await
        {
            tracing::warn!(app = %target, error = %failure.message, "a rollback from the dashboard failed");
        }
    });
    // Its progress is in the event log; nobody reads it here.
    tokio::spawn(async move { while receiver.recv().await.is_some() {} });
    back_to(&app)
}

#[derive(Deserialize)]
pub(super) struct RunForm {
    #[serde(default)]
    csrf: String,
}

/// Starts an execution of a job.
pub(super) async fn run_job(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path((app, job)): Path<(String, String)>,
    Form(form): Form<RunForm>,
) -> Response {
    if let Some(refused) = refuse_forged(&session, &form.csrf) {
        return refused;
    }
    let started = state.jobs.run(
        &app,
        &job,
        crate::jobs::RunOptions {
            trigger: berth_proto::Trigger::Manual,
            tasks: None,
            env: Vec::new(),
            terminal: None,
        },
    );
    match started {
        Ok(_) => back_to(&app),
        Err(err) => crate::api::error::ApiFailure::from(err).into_response(),
    }
}

#[derive(Deserialize)]
pub(super) struct ResumeForm {
    #[serde(default)]
    csrf: String,
}

/// Lifts the app's budget action for the rest of the month.
pub(super) async fn resume(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(app): Path<String>,
    Form(form): Form<ResumeForm>,
) -> Response {
    if let Some(refused) = refuse_forged(&session, &form.csrf) {
        return refused;
    }
    match crate::api::usage::resume_budget(State(state), Path(app.clone())).await {
        Ok(_) => back_to(&app),
        Err(err) => err.into_response(),
    }
}
