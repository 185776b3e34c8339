//! examples/hello: the small axum app berth's tests and benchmarks deploy.
//!
//! It listens on 127.0.0.1:$PORT and answers:
//! `/` a greeting, `/instance` the berth instance id, `/env/{KEY}` an env var,
//! `/slow?ms=N` after a delay, `/healthz` "ok", `/ws` a WebSocket echo.
//! With `HELLO_CRASH_ON_START=1` it exits at once, for crash-on-start tests.

use std::time::Duration;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const GREETING: &str = "Hello from berth!";

#[derive(serde::Deserialize)]
struct Slow {
    ms: Option<u64>,
}

async fn root() -> String {
    format!("{GREETING}\n")
}

async fn instance() -> String {
    std::env::var("BERTH_INSTANCE").unwrap_or_else(|_| "unknown".into())
}

async fn env_var(Path(key): Path<String>) -> impl IntoResponse {
    match std::env::var(&key) {
        Ok(value) => (StatusCode::OK, value),
        Err(_) => (StatusCode::NOT_FOUND, format!("{key} is not set")),
    }
}

async fn slow(Query(slow): Query<Slow>) -> String {
    let ms = slow.ms.unwrap_or(100);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("slept {ms}ms\n")
}

async fn ws(upgrade: WebSocketUpgrade) -> impl IntoResponse {
    upgrade.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            if socket.send(message).await.is_err() {
                break;
            }
        }
    })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[tokio::main]
async fn main() {
    if std::env::var("HELLO_CRASH_ON_START").as_deref() == Ok("1") {
        eprintln!("HELLO_CRASH_ON_START=1: exiting before listening");
        std::process::exit(1);
    }
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let app = Router::new()
        .route("/", get(root))
        .route("/instance", get(instance))
        .route("/env/{key}", get(env_var))
        .route("/slow", get(slow))
        .route("/healthz", get(|| async { "ok" }))
        .route("/ws", get(ws));
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .expect("bind 127.0.0.1:$PORT");
    println!(
        "{{\"level\":\"INFO\",\"fields\":{{\"message\":\"listening\",\"port\":{port}}},\"target\":\"hello\"}}"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .expect("serve");
}
