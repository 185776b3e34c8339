//! Logs (queried or followed) and the event log.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use berth_logs::LogQuery;
use berth_proto::{ApiError, EventInfo, LogLine};
use serde::Deserialize;

use super::error::{ApiFailure, ApiResult};
use super::state::ApiState;
use super::stream::ndjson_stream;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct LogParams {
    /// Lines at or after this: RFC 3339, or a duration back from now (`10m`, `2h`).
    since: Option<String>,
    /// Only this process group.
    process: Option<String>,
    /// Only this instance.
    instance: Option<String>,
    /// Only the tasks of this job execution.
    execution: Option<i64>,
    /// Only this level or more severe.
    level: Option<String>,
    /// Lines before this: RFC 3339, or a duration back from now.
    until: Option<String>,
    /// Only lines whose message or fields match this regular expression.
    grep: Option<String>,
    /// Only lines where these conditions hold: `level>=warn user_id=42 path~/api`.
    #[serde(rename = "where")]
    #[param(rename = "where")]
    filter: Option<String>,
    /// Only lines with these words (FTS5 syntax: words, "a phrase", prefix*, AND, OR, NOT).
    search: Option<String>,
    /// At most this many past lines (default 200).
    limit: Option<u32>,
    /// Keep the answer open and stream new lines (NDJSON).
    #[serde(default)]
    follow: bool,
}

/// An app's logs: JSON array, or NDJSON with `follow=true`.
#[utoipa::path(get, path = "/v1/apps/{app}/logs", params(("app" = String, Path), LogParams),
    responses((status = 200, body = [LogLine]), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn logs(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Query(params): Query<LogParams>,
) -> ApiResult<Response> {
    state.store.app(&app)?;
    let bad = |err: berth_logs::LogError| ApiFailure::BadRequest(err.to_string());
    let since_micros = params
        .since
        .as_deref()
        .map(berth_logs::parse_since)
        .transpose()
        .map_err(bad)?;
    let until_micros = params
        .until
        .as_deref()
        .map(berth_logs::parse_since)
        .transpose()
        .map_err(bad)?;
    let grep = params
        .grep
        .as_deref()
        .filter(|grep| !grep.is_empty())
        .map(berth_logs::Grep::new)
        .transpose()
        .map_err(bad)?;
    let conditions = match params.filter.as_deref() {
        Some(text) if !text.trim().is_empty() => berth_logs::parse_where(text).map_err(bad)?,
        _ => Vec::new(),
    };
    if params.follow && params.search.is_some() {
        return Err(ApiFailure::BadRequest(
            "search looks through stored lines only: use grep or where to follow".into(),
        ));
    }
    let mut query = LogQuery {
        app,
        since_micros,
        until_micros,
        process: params.process,
        instance: params.instance,
        instance_prefix: params.execution.map(|id| format!("exec-{id}-task-")),
        min_level: params.level,
        grep,
        conditions,
        search: params.search.filter(|search| !search.trim().is_empty()),
        after_id: None,
        oldest: false,
        limit: params.limit.unwrap_or(200).min(10_000),
    };
    let mut live = params.follow.then(|| state.logs.subscribe());
    let past = state
        .logs
        .query(&query)
        .map_err(|err| ApiFailure::BadRequest(err.to_string()))?;
    let Some(live) = live.take() else {
        return Ok(Json(
            past.into_iter()
                .map(|stored| stored.line)
                .collect::<Vec<_>>(),
        )
        .into_response());
    };
    // Pulled as the client reads: a client reading slower than the app
    // writes falls behind the broadcast and skips lines, holding none.
    query.after_id = past.last().map(|stored| stored.id);
    let past = futures_util::stream::iter(past.into_iter().map(|stored| stored.line));
    let later = futures_util::stream::unfold((live, query), |(mut live, query)| async move {
        loop {
            match live.recv().await {
                Ok(stored) if query.matches(&stored) => {
                    return Some((stored.line.clone(), (live, query)));
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(ndjson_stream(futures_util::StreamExt::chain(past, later)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(super) struct EventParams {
    /// Only events with an id above this.
    after: Option<i64>,
    /// At most this many (default 100).
    limit: Option<u32>,
    /// Keep the answer open and stream new events (NDJSON).
    #[serde(default)]
    follow: bool,
}

/// An app's event log: deploys, starts, exits and their causes, health changes, scaling.
#[utoipa::path(get, path = "/v1/apps/{app}/events", params(("app" = String, Path), EventParams),
    responses((status = 200, body = [EventInfo]), (status = 404, body = ApiError)))]
pub(super) async fn events(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Query(params): Query<EventParams>,
) -> ApiResult<Response> {
    state.store.app(&app)?;
    let limit = params.limit.unwrap_or(100).min(10_000);
    let past: Vec<EventInfo> = state
        .store
        .events(&app, params.after.unwrap_or(0), limit)?
        .into_iter()
        .map(event_info)
        .collect();
    if !params.follow {
        return Ok(Json(past).into_response());
    }
    let after = past
        .last()
        .map_or(params.after.unwrap_or(0), |event| event.id);
    // New events are looked for only while the client reads: what waits
    // for it is at most one look's worth.
    let later = futures_util::stream::unfold(
        (
            state.store.clone(),
            app,
            after,
            std::collections::VecDeque::new(),
        ),
        |(store, app, mut after, mut waiting)| async move {
            loop {
                if let Some(event) = waiting.pop_front() {
                    return Some((event, (store, app, after, waiting)));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                for row in store.events(&app, after, 1000).ok()? {
                    after = row.id;
                    waiting.push_back(event_info(row));
                }
            }
        },
    );
    Ok(ndjson_stream(futures_util::StreamExt::chain(
        futures_util::stream::iter(past),
        later,
    )))
}

fn event_info(row: berth_store::EventRow) -> EventInfo {
    EventInfo {
        id: row.id,
        at: row.at,
        app: row.app,
        kind: row.kind,
        message: row.message,
    }
}
