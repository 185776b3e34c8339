//! The dashboard's pages: the apps, one app (traffic, groups, instances,
//! releases, jobs, logs, events, config names), the instances fragment
//! htmx refreshes, and live logs as server-sent events.

use std::convert::Infallible;
use std::sync::OnceLock;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use berth_logs::LogQuery;
use futures_util::Stream;
use minijinja::{Environment, context};
use serde::{Deserialize, Serialize};

use crate::api::state::ApiState;
use crate::sessions::Session;
use crate::traffic_history::RANGES;

/// The templates, parsed once.
fn templates() -> &'static Environment<'static> {
    static TEMPLATES: OnceLock<Environment<'static>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let mut env = Environment::new();
        for (name, text) in [
            ("base.html", include_str!("templates/base.html")),
            ("login.html", include_str!("templates/login.html")),
            ("apps.html", include_str!("templates/apps.html")),
            ("app.html", include_str!("templates/app.html")),
            ("instances.html", include_str!("templates/instances.html")),
        ] {
            if let Err(err) = env.add_template(name, text) {
                tracing::error!(template = name, error = %err, "a dashboard template does not parse");
            }
        }
        env
    })
}

/// `name` rendered with `context`, as an HTML answer.
pub(super) fn render(name: &str, context: minijinja::Value) -> Response {
    let rendered = templates()
        .get_template(name)
        .and_then(|template| template.render(context));
    match rendered {
        Ok(text) => Html(text).into_response(),
        Err(err) => {
            tracing::error!(template = name, error = %err, "cannot render a dashboard page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page cannot be rendered",
            )
                .into_response()
        }
    }
}

fn failure(err: crate::api::error::ApiFailure) -> Response {
    err.into_response()
}

/// One row of the apps page.
#[derive(Serialize)]
struct AppRow {
    name: String,
    url: String,
    release: Option<u64>,
    running: u32,
    desired: u32,
    state: &'static str,
    state_class: &'static str,
}

/// `/ui`: every app with its state, URL, release and instances.
pub(super) async fn apps(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
) -> Response {
    let rows = match state.store.apps() {
        Ok(rows) => rows,
        Err(err) => return failure(err.into()),
    };
    let snapshot = state.reconciler.snapshot();
    let apps: Vec<AppRow> = rows
        .into_iter()
        .map(|row| {
            let actual = snapshot.apps.get(&row.name);
            let running = actual.map_or(0, |actual| actual.groups.iter().map(|g| g.running).sum());
            let desired = actual.map_or(0, |actual| actual.groups.iter().map(|g| g.desired).sum());
            let (state_text, class) = match (running, desired) {
                (_, 0) => ("idle", "muted"),
                (running, desired) if running >= desired => ("running", "ok"),
                (0, _) => ("starting", "warn"),
                _ => ("degraded", "warn"),
            };
            AppRow {
                url: state.url(&row.name),
                release: row.target_release,
                name: row.name,
                running,
                desired,
                state: state_text,
                state_class: class,
            }
        })
        .collect();
    render("apps.html", context! { apps, csrf => session.csrf })
}

#[derive(Deserialize)]
pub(super) struct AppParams {
    range: Option<String>,
}

/// `/ui/apps/{app}`: everything about one app.
pub(super) async fn app(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(app): Path<String>,
    Query(params): Query<AppParams>,
) -> Response {
    let status = match crate::api::apps::full_status(&state, &app).await {
        Ok(status) => status,
        Err(err) => return failure(err),
    };
    let releases: Vec<berth_proto::ReleaseInfo> = match state.store.releases(&app) {
        Ok(rows) => rows.iter().map(crate::api::deploys::release_info).collect(),
        Err(err) => return failure(err.into()),
    };
    let events: Vec<berth_proto::EventInfo> = state
        .store
        .events(&app, 0, 50)
        .unwrap_or_default()
        .into_iter()
        .rev()
        .map(|row| berth_proto::EventInfo {
            id: row.id,
            at: row.at,
            app: row.app,
            kind: row.kind,
            message: row.message,
        })
        .collect();
    let jobs = state.jobs.jobs(&app).unwrap_or_default();
    let env_names: Vec<String> = state
        .store
        .env(&app)
        .map(|env| env.into_keys().collect())
        .unwrap_or_default();
    let secret_names: Vec<String> = state
        .store
        .secret_list(&app)
        .map(|rows| rows.into_iter().map(|row| row.name).collect())
        .unwrap_or_default();
    let logs: Vec<berth_proto::LogLine> = state
        .logs
        .query(&LogQuery {
            app: app.clone(),
            limit: 100,
            ..LogQuery::default()
        })
        .map(|lines| lines.into_iter().map(|stored| stored.line).collect())
        .unwrap_or_default();
    let range = params
        .range
        .filter(|range| RANGES.iter().any(|(name, _)| name == range))
        .unwrap_or_else(|| "1h".into());
    let charts = state.history.charts(&app, &range);
    let month = {
        let (state, app) = (state.clone(), app.clone());
        tokio::task::spawn_blocking(move || super::usage::month_view(&state, &app))
            .await
            .unwrap_or_default()
    };
    let ranges: Vec<&str> = RANGES.iter().map(|(name, _)| *name).collect();
    render(
        "app.html",
        context! {
            log_bytes => super::usage::size(status.logs.bytes),
            log_max => super::usage::size(status.logs.max_bytes),
            instances => status.instances.clone(),
            status,
            releases,
            events,
            jobs,
            env_names,
            secret_names,
            logs,
            charts,
            month,
            ranges,
            range,
            csrf => session.csrf,
        },
    )
}

/// `/ui/apps/{app}/instances`: the instances table, for htmx to refresh.
pub(super) async fn instances(State(state): State<ApiState>, Path(app): Path<String>) -> Response {
    match crate::api::apps::status_of(&state, &app) {
        Ok(status) => render("instances.html", context! { instances => status.instances }),
        Err(err) => failure(err),
    }
}

#[derive(Deserialize)]
pub(super) struct LiveParams {
    level: Option<String>,
    process: Option<String>,
    instance: Option<String>,
    #[serde(rename = "where")]
    filter: Option<String>,
    grep: Option<String>,
}

/// `/ui/apps/{app}/logs/live`: new lines as server-sent events (JSON
/// `LogLine`s), with the filters of the form.
pub(super) async fn live_logs(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Query(params): Query<LiveParams>,
) -> Response {
    if let Err(err) = state.store.app(&app) {
        return failure(err.into());
    }
    let nonempty = |text: Option<String>| text.filter(|text| !text.trim().is_empty());
    let grep = match nonempty(params.grep)
        .map(|grep| berth_logs::Grep::new(&grep))
        .transpose()
    {
        Ok(grep) => grep,
        Err(err) => return (StatusCode::BAD_REQUEST, err.to_string()).into_response(),
    };
    let conditions = match nonempty(params.filter).map(|text| berth_logs::parse_where(&text)) {
        Some(Ok(conditions)) => conditions,
        Some(Err(err)) => return (StatusCode::BAD_REQUEST, err.to_string()).into_response(),
        None => Vec::new(),
    };
    let min_level = nonempty(params.level);
    if let Some(level) = &min_level
        && berth_logs::level_rank(level).is_none()
    {
        return (StatusCode::BAD_REQUEST, format!("unknown level `{level}`")).into_response();
    }
    let query = LogQuery {
        app,
        process: nonempty(params.process),
        instance: nonempty(params.instance),
        min_level,
        grep,
        conditions,
        limit: 1,
        ..LogQuery::default()
    };
    let live = state.logs.subscribe();
    Sse::new(follow(live, query))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The lines `query` takes, as events, until the client leaves.
fn follow(
    live: tokio::sync::broadcast::Receiver<std::sync::Arc<berth_logs::StoredLine>>,
    query: LogQuery,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold((live, query), |(mut live, query)| async move {
        loop {
            match live.recv().await {
                Ok(stored) if query.matches(&stored) => {
                    let data = serde_json::to_string(&stored.line).unwrap_or_default();
                    return Some((Ok(Event::default().data(data)), (live, query)));
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
