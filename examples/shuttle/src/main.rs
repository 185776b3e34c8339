//! A Shuttle-style notes service: a shared PostgreSQL pool and a secret store,
//! both handed over by `#[shuttle_runtime::main]`.

use axum::{extract::State, routing::get, Router};
use shuttle_runtime::SecretStore;
use sqlx::PgPool;

#[derive(Clone)]
struct AppState {
    pool: PgPool,
    greeting: String,
}

async fn hello(State(state): State<AppState>) -> String {
    state.greeting.clone()
}

async fn add_note(State(state): State<AppState>, body: String) -> Result<String, String> {
    let row: (i64,) = sqlx::query_as("INSERT INTO notes (body) VALUES ($1) RETURNING id")
        .bind(body)
        .fetch_one(&state.pool)
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.0.to_string())
}

async fn list_notes(State(state): State<AppState>) -> Result<String, String> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT body FROM notes ORDER BY id")
        .fetch_all(&state.pool)
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows.into_iter().map(|r| r.0 + "\n").collect())
}

#[shuttle_runtime::main]
async fn main(
    #[shuttle_shared_db::Postgres] pool: PgPool,
    #[shuttle_runtime::Secrets] secrets: SecretStore,
) -> shuttle_axum::ShuttleAxum {
    sqlx::query("CREATE TABLE IF NOT EXISTS notes (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&pool)
        .await
        .expect("create the notes table");
    let greeting = secrets.get("GREETING").unwrap_or_else(|| "no greeting".into());
    let router = Router::new()
        .route("/", get(hello))
        .route("/notes", get(list_notes).post(add_note))
        .with_state(AppState { pool, greeting });
    Ok(router.into())
}
