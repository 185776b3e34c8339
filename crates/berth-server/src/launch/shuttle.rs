//! The variables a Shuttle project's runtime expects from its platform
//! (its API, served by berth under [`API_PREFIX`], is in `crate::api`).

use crate::services::Resources;

/// The purpose the app token is derived for.
pub(crate) const TOKEN_PURPOSE: &str = "shuttle-runtime-api";

/// The path the API is served under.
pub const API_PREFIX: &str = "/shuttle";

/// The variables Shuttle's platform gave a deployment, for instance `app`
/// listening on `port`. `SHUTTLE_ENV` is `production`: the spelling
/// shuttle-runtime parses as its `Deployment` environment (which provisions
/// resources through the API rather than locally). `SHUTTLE` stays unset: it
/// would make the runtime ask a sidecar to shut down.
pub fn runtime_env(resources: &Resources, app: &str, port: Option<&str>) -> Vec<(String, String)> {
    [
        ("SHUTTLE_ENV", "production".to_string()),
        ("SHUTTLE_PROJECT_ID", app.to_string()),
        ("SHUTTLE_PROJECT_NAME", app.to_string()),
        ("SHUTTLE_RUNTIME_IP", "127.0.0.1".to_string()),
        ("SHUTTLE_RUNTIME_PORT", port.unwrap_or("0").to_string()),
        (
            "SHUTTLE_API",
            format!("{}{API_PREFIX}", resources.api_url()),
        ),
        ("SHUTTLE_API_KEY", resources.app_token(app, TOKEN_PURPOSE)),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect()
}
