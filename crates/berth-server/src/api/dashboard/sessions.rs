//! Dashboard sessions: sign-in with the API token, a session cookie, a
//! CSRF token per session, and the headers every page is sent with.

use axum::Form;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::super::auth::constant_time_eq;
use super::super::state::ApiState;
use super::pages::render;
use crate::sessions::{LIFETIME, Session};

/// The session cookie's name.
pub(super) const COOKIE: &str = "berth_session";

/// What pages may load and do.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The session cookie's value in `headers`, if any.
fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// Lets signed-in requests through, with their session as an extension;
/// pages without a session go to the sign-in, anything else gets 401.
pub(super) async fn require_session(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let session = cookie_of(request.headers()).and_then(|id| state.dashboard.get(&id));
    match session {
        Some(session) => {
            request.extensions_mut().insert(session);
            next.run(request).await
        }
        None if request.method() == axum::http::Method::GET
            && !request.uri().path().ends_with("/live")
            && !request.uri().path().ends_with("/instances") =>
        {
            Redirect::to("/ui/login").into_response()
        }
        None => (StatusCode::UNAUTHORIZED, "sign in at /ui/login").into_response(),
    }
}

/// The refusal of a form whose `csrf` is not the session's token (every
/// form handler asks first); `None` when it is.
pub(super) fn refuse_forged(session: &Session, csrf: &str) -> Option<Response> {
    if constant_time_eq(session.csrf.as_bytes(), csrf.as_bytes()) {
        None
    } else {
        Some(
            (
                StatusCode::FORBIDDEN,
                "this form did not come from the dashboard (no or a wrong CSRF token)",
            )
                .into_response(),
        )
    }
}

/// The sign-in page.
pub(super) async fn login_page() -> Response {
    render(
        "login.html",
        minijinja::context! { error => None::<String> },
    )
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

/// Signs in with the API token: a session cookie, then the apps.
pub(super) async fn login(State(state): State<ApiState>, Form(form): Form<LoginForm>) -> Response {
    if !constant_time_eq(form.token.trim().as_bytes(), state.token.as_bytes()) {
        let page = render(
            "login.html",
            minijinja::context! { error => Some("That is not this server's API token.") },
        );
        return (StatusCode::UNAUTHORIZED, page).into_response();
    }
    let (id, _) = state.dashboard.start();
    let secure = state.api_is_tls;
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let mut response = Redirect::to("/ui").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
pub(super) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// Signs out: the session ends, the cookie goes.
pub(super) async fn logout(
    State(state): State<ApiState>,
    headers: HeaderMap,
    axum::Extension(session): axum::Extension<Session>,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Some(refused) = refuse_forged(&session, &form.csrf) {
        return refused;
    }
    if let Some(id) = cookie_of(&headers) {
        state.dashboard.end(&id);
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("berth_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

/// The headers every dashboard answer carries.
pub(super) async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
