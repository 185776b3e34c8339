//! A to-do list that uses everything berth manages: PostgreSQL
//! (`DATABASE_URL`, migrated by `todo migrate` as the release command),
//! Redis (`REDIS_URL`, a visit counter), a volume (`BERTH_VOLUME_FILES`,
//! uploaded files) and secrets (plain env vars).
//!
//! Routes: `GET /todos` (one `id<TAB>title` line each), `POST /todos` (body:
//! the title), `DELETE /todos/{id}`, `POST /count` (INCR in Redis),
//! `PUT|GET /files/{name}`, `GET /env/{key}`, `POST /log/{key}` (prints the
//! env var, as careless code does), `GET /healthz`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::{Client, NoTls};

struct App {
    db: Client,
}

type Shared = State<Arc<App>>;

async fn database() -> Result<Client, String> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set".to_string())?;
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .map_err(|err| format!("cannot connect to the database: {err}"))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            eprintln!("database connection lost: {err}");
            std::process::exit(1);
        }
    });
    Ok(client)
}

async fn migrate() -> Result<(), String> {
    let db = database().await?;
    db.batch_execute(
        "CREATE TABLE IF NOT EXISTS todos (
            id BIGSERIAL PRIMARY KEY,
            title TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(|err| format!("migration failed: {err}"))?;
    println!("migrated: table todos is ready");
    Ok(())
}

fn internal(err: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
}

async fn list(State(app): Shared) -> Result<String, (StatusCode, String)> {
    let rows = app
        .db
        .query("SELECT id, title FROM todos ORDER BY id", &[])
        .await
        .map_err(internal)?;
    Ok(rows
        .iter()
        .map(|row| format!("{}\t{}\n", row.get::<_, i64>(0), row.get::<_, String>(1)))
        .collect())
}

async fn add(State(app): Shared, title: String) -> Result<(StatusCode, String), (StatusCode, String)> {
    let title = title.trim();
    if title.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "a to-do needs a title".into()));
    }
    let row = app
        .db
        .query_one("INSERT INTO todos (title) VALUES ($1) RETURNING id", &[&title])
        .await
        .map_err(internal)?;
    Ok((StatusCode::CREATED, row.get::<_, i64>(0).to_string()))
}

async fn remove(State(app): Shared, Path(id): Path<i64>) -> Result<StatusCode, (StatusCode, String)> {
    let deleted = app
        .db
        .execute("DELETE FROM todos WHERE id = $1", &[&id])
        .await
        .map_err(internal)?;
    Ok(if deleted == 0 { StatusCode::NOT_FOUND } else { StatusCode::NO_CONTENT })
}

/// `INCR visits` over RESP, with the password from `REDIS_URL`
/// (`redis://default:PASSWORD@HOST:PORT`).
async fn count() -> Result<String, (StatusCode, String)> {
    let url = std::env::var("REDIS_URL").map_err(|_| internal("REDIS_URL is not set"))?;
    let rest = url.strip_prefix("redis://").ok_or_else(|| internal("REDIS_URL is not redis://"))?;
    let (auth, address) = rest.rsplit_once('@').ok_or_else(|| internal("REDIS_URL has no password"))?;
    let password = auth.split_once(':').map_or(auth, |(_, password)| password);
    let address = address.split('/').next().unwrap_or(address);
    let mut stream = tokio::net::TcpStream::connect(address).await.map_err(internal)?;
    let command = format!(
        "*3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n${}\r\n{password}\r\n*2\r\n$4\r\nINCR\r\n$6\r\nvisits\r\n",
        password.len()
    );
    stream.write_all(command.as_bytes()).await.map_err(internal)?;
    let mut reply = Vec::new();
    let mut buffer = [0u8; 128];
    loop {
        let read = stream.read(&mut buffer).await.map_err(internal)?;
        if read == 0 {
            break;
        }
        reply.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&reply);
        if text.starts_with('-') {
            return Err(internal(text.trim()));
        }
        if let Some(number) = text.strip_prefix("+OK\r\n:").and_then(|rest| rest.strip_suffix("\r\n")) {
            return Ok(number.to_string());
        }
    }
    Err(internal(format!("unexpected reply {:?}", String::from_utf8_lossy(&reply))))
}

fn file_path(name: &str) -> Result<std::path::PathBuf, (StatusCode, String)> {
    if name.contains('/') || name.starts_with('.') {
        return Err((StatusCode::BAD_REQUEST, "a plain file name, please".into()));
    }
    let dir = std::env::var("BERTH_VOLUME_FILES").map_err(|_| internal("BERTH_VOLUME_FILES is not set"))?;
    Ok(std::path::Path::new(&dir).join(name))
}

async fn put_file(Path(name): Path<String>, body: String) -> Result<StatusCode, (StatusCode, String)> {
    tokio::fs::write(file_path(&name)?, body).await.map_err(internal)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_file(Path(name): Path<String>) -> Result<String, (StatusCode, String)> {
    tokio::fs::read_to_string(file_path(&name)?)
        .await
        .map_err(|err| (StatusCode::NOT_FOUND, err.to_string()))
}

async fn env(Path(key): Path<String>) -> Result<String, StatusCode> {
    std::env::var(&key).map_err(|_| StatusCode::NOT_FOUND)
}

async fn log_env(Path(key): Path<String>) -> StatusCode {
    println!("debug: {key}={}", std::env::var(&key).unwrap_or_default());
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("migrate") {
        if let Err(err) = migrate().await {
            eprintln!("{err}");
            std::process::exit(1);
        }
        return;
    }
    let db = match database().await {
        Ok(db) => db,
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(1);
        }
    };
    let app = Router::new()
        .route("/", get(|| async { "todo: GET /todos, POST /todos\n" }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/todos", get(list).post(add))
        .route("/todos/{id}", delete(remove))
        .route("/count", post(count))
        .route("/files/{name}", get(get_file).put(put_file))
        .route("/env/{key}", get(env))
        .route("/log/{key}", post(log_env))
        .with_state(Arc::new(App { db }));
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .expect("cannot listen on $PORT");
    println!("todo listening on 127.0.0.1:{port}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("server failed");
}
