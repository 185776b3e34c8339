//! Usage, budgets and webhooks: `GET /v1/usage`, `/v1/budgets/{app}`
//! (`*`: the server's) with `resume`, and `/v1/notify`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use berth_proto::{
    AddNotifyChannel, ApiError, BudgetStatus, NOTIFY_EVENTS, NotifyChannel, NotifyDelivery,
    SetBudget, UsageReport, notify_event_matches,
};
use berth_store::{SERVER_BUDGET, now_unix, resolution_seconds};
use serde::Deserialize;

use super::error::{ApiFailure, ApiResult};
use super::state::ApiState;

/// The query of `GET /v1/usage`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct UsageQuery {
    /// One app; all when absent.
    app: Option<String>,
    /// The first second (unix); 30 days ago when absent.
    since: Option<u64>,
    /// The last second (unix); now when absent.
    until: Option<u64>,
    /// `minute`, `hour` or `day` (the default).
    by: Option<String>,
}

/// Metered usage per app, process group and size, by minute, hour or day.
#[utoipa::path(get, path = "/v1/usage", params(UsageQuery),
    responses((status = 200, body = UsageReport), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn usage(
    State(state): State<ApiState>,
    Query(query): Query<UsageQuery>,
) -> ApiResult<Json<UsageReport>> {
    let by = query.by.unwrap_or_else(|| "day".into());
    let step = resolution_seconds(&by)
        .ok_or_else(|| ApiFailure::BadRequest(format!("by = `{by}`: use minute, hour or day")))?;
    if let Some(app) = &query.app {
        state.store.app(app)?;
    }
    let until = query.until.unwrap_or_else(now_unix);
    let since = query.since.unwrap_or(until.saturating_sub(30 * 86_400));
    if since > until {
        return Err(ApiFailure::BadRequest("since is after until".into()));
    }
    if until > i64::MAX as u64 {
        return Err(ApiFailure::BadRequest(format!(
            "until {until} is past any time kept"
        )));
    }
    let store = state.store.clone();
    let rows = tokio::task::spawn_blocking(move || {
        store
            .usage(query.app.as_deref(), &by, since - since % step, until)
            .map(|rows| (by, rows))
    })
    .await
    .map_err(|err| ApiFailure::Internal(err.to_string()))??;
    Ok(Json(UsageReport {
        by: rows.0,
        since,
        until,
        rows: rows.1,
    }))
}

fn known_budget_key(state: &ApiState, app: &str) -> ApiResult<()> {
    if app != SERVER_BUDGET {
        state.store.app(app)?;
    }
    Ok(())
}

/// Where a budget stands this month (`*`: the server's).
#[utoipa::path(get, path = "/v1/budgets/{app}", params(("app" = String, Path)),
    responses((status = 200, body = BudgetStatus), (status = 404, body = ApiError)))]
pub(super) async fn get_budget(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<BudgetStatus>> {
    known_budget_key(&state, &app)?;
    let budgets = state.budgets.clone();
    let status = tokio::task::spawn_blocking(move || budgets.status(&app, now_unix()))
        .await
        .map_err(|err| ApiFailure::Internal(err.to_string()))?
        .map_err(ApiFailure::Internal)?;
    Ok(Json(status))
}

/// Sets (or removes) a budget by hand; raising it lifts its action.
#[utoipa::path(put, path = "/v1/budgets/{app}", params(("app" = String, Path)), request_body = SetBudget,
    responses((status = 200, body = BudgetStatus), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn set_budget(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Json(request): Json<SetBudget>,
) -> ApiResult<Json<BudgetStatus>> {
    known_budget_key(&state, &app)?;
    if let Some(settings) = &request.settings {
        state
            .budgets
            .check(settings)
            .map_err(ApiFailure::BadRequest)?;
    }
    let budgets = state.budgets.clone();
    let status = tokio::task::spawn_blocking(move || {
        budgets.set(&app, request.settings.as_ref(), now_unix())
    })
    .await
    .map_err(|err| ApiFailure::Internal(err.to_string()))?
    .map_err(ApiFailure::Internal)?;
    Ok(Json(status))
}

/// Lifts a budget's action for the rest of the month.
#[utoipa::path(post, path = "/v1/budgets/{app}/resume", params(("app" = String, Path)),
    responses((status = 200, body = BudgetStatus), (status = 404, body = ApiError)))]
pub(super) async fn resume_budget(
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> ApiResult<Json<BudgetStatus>> {
    known_budget_key(&state, &app)?;
    let budgets = state.budgets.clone();
    let status = tokio::task::spawn_blocking(move || budgets.resume(&app, now_unix()))
        .await
        .map_err(|err| ApiFailure::Internal(err.to_string()))?
        .map_err(ApiFailure::Internal)?;
    state
        .reconciler
        .nudge_and_wait(std::time::Duration::from_secs(5))
        .await;
    Ok(Json(status))
}

fn channel_info(row: berth_store::NotifyRow, with_secret: bool) -> NotifyChannel {
    NotifyChannel {
        id: row.id,
        url: row.url,
        events: row.events,
        format: row.format,
        secret: with_secret.then_some(row.secret),
    }
}

/// The webhooks.
#[utoipa::path(get, path = "/v1/notify", responses((status = 200, body = [NotifyChannel])))]
pub(super) async fn list_notify(
    State(state): State<ApiState>,
) -> ApiResult<Json<Vec<NotifyChannel>>> {
    let rows = state.store.notify_channels()?;
    Ok(Json(
        rows.into_iter()
            .map(|row| channel_info(row, false))
            .collect(),
    ))
}

/// Checks a webhook's URL and event patterns.
fn check_channel(request: &AddNotifyChannel) -> Result<(), String> {
    if request.url.len() > 2048 {
        return Err("a webhook URL is at most 2048 bytes".into());
    }
    let url = reqwest::Url::parse(&request.url)
        .map_err(|err| format!("`{}` is not a URL: {err}", request.url))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "`{}`: a webhook is an http:// or https:// URL with a host",
            request.url
        ));
    }
    for pattern in &request.events {
        let matches_any = NOTIFY_EVENTS
            .iter()
            .any(|event| notify_event_matches(pattern, event));
        if !matches_any {
            return Err(format!(
                "`{pattern}` matches no event; events are {} (a trailing * matches a prefix)",
                NOTIFY_EVENTS.join(", ")
            ));
        }
    }
    Ok(())
}

/// Adds a webhook; the answer holds its signing secret, shown only here.
#[utoipa::path(post, path = "/v1/notify", request_body = AddNotifyChannel,
    responses((status = 201, body = NotifyChannel), (status = 400, body = ApiError)))]
pub(super) async fn add_notify(
    State(state): State<ApiState>,
    Json(request): Json<AddNotifyChannel>,
) -> ApiResult<(StatusCode, Json<NotifyChannel>)> {
    check_channel(&request).map_err(ApiFailure::BadRequest)?;
    let secret = format!("whsec_{}", hex::encode(rand::random::<[u8; 24]>()));
    let row =
        state
            .store
            .add_notify_channel(&request.url, &request.events, request.format, &secret)?;
    Ok((StatusCode::CREATED, Json(channel_info(row, true))))
}

/// Removes a webhook.
#[utoipa::path(delete, path = "/v1/notify/{id}", params(("id" = u64, Path)),
    responses((status = 204), (status = 404, body = ApiError)))]
pub(super) async fn remove_notify(
    State(state): State<ApiState>,
    Path(id): Path<u64>,
) -> ApiResult<StatusCode> {
    state.store.remove_notify_channel(id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The latest deliveries, newest first.
#[utoipa::path(get, path = "/v1/notify/log", responses((status = 200, body = [NotifyDelivery])))]
pub(super) async fn notify_log(
    State(state): State<ApiState>,
) -> ApiResult<Json<Vec<NotifyDelivery>>> {
    Ok(Json(state.store.notify_deliveries(100)?))
}
