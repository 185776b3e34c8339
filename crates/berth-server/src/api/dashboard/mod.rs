//! The dashboard: server-rendered pages at `/ui` of the API address
//! (`/` redirects there), for a person with the API token.
//!
//! Sign-in takes the token once and gives a session cookie (HttpOnly,
//! SameSite=Strict, Secure when the API is served over TLS; eight hours).
//! Every form carries the session's CSRF token, checked before anything
//! changes; every page is sent with a strict Content-Security-Policy (only
//! the server's own scripts and styles, no frames). Pages read without
//! JavaScript; htmx (vendored from npm, embedded) refreshes the instances,
//! and a small script of berth's own follows live logs.

mod actions;
mod assets;
mod pages;
mod sessions;
mod usage;

use axum::Router;
use axum::routing::{get, post};

use super::state::ApiState;

/// The dashboard's routes (behind [`sessions::require_session`] but for
/// sign-in and the assets).
pub(super) fn routes(state: ApiState) -> Router<ApiState> {
    let signed_in = Router::new()
        .route("/ui", get(pages::apps))
        .route("/ui/apps/{app}", get(pages::app))
        .route("/ui/apps/{app}/instances", get(pages::instances))
        .route("/ui/apps/{app}/logs/live", get(pages::live_logs))
        .route("/ui/apps/{app}/scale", post(actions::scale))
        .route("/ui/apps/{app}/rollback", post(actions::rollback))
        .route("/ui/apps/{app}/jobs/{job}/run", post(actions::run_job))
        .route("/ui/apps/{app}/budget/resume", post(actions::resume))
        .route("/ui/logout", post(sessions::logout))
        // Like the API's: below the disk reserve, nothing new is made.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::disk::refuse_writes_when_full,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            sessions::require_session,
        ));
    Router::new()
        .route("/", get(|| async { axum::response::Redirect::to("/ui") }))
        .route("/ui/login", get(sessions::login_page).post(sessions::login))
        .route("/ui/assets/{name}", get(assets::asset))
        .merge(signed_in)
        .layer(axum::middleware::map_response(sessions::security_headers))
}
