//! Notes in SQLite on a volume (`BERTH_VOLUME_DATA`), written in batches:
//! `POST /notes` (body: the text) is acknowledged at once and committed
//! with the next batch (every 200 ms) or when SIGTERM arrives; `GET /count`
//! answers how many notes are stored; `GET /healthz`.
//!
//! The database is opened with `locking_mode = EXCLUSIVE`: this process is
//! its only writer. A second instance started on the same volume while
//! this one runs takes the lock, and this one's last batch cannot be
//! committed — the data loss berth's stop-first replacement prevents.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use rusqlite::Connection;

struct Notes {
    db: Mutex<Connection>,
    pending: Mutex<Vec<String>>,
}

impl Notes {
    /// Commits the pending notes; on failure they stay pending.
    fn commit(&self) -> Result<usize, String> {
        let batch: Vec<String> = std::mem::take(&mut *self.pending.lock().unwrap());
        if batch.is_empty() {
            return Ok(0);
        }
        let mut db = self.db.lock().unwrap();
        let written = (|| {
            let tx = db.transaction()?;
            for text in &batch {
                tx.execute("INSERT INTO notes (text) VALUES (?1)", [text])?;
            }
            tx.commit()
        })();
        match written {
            Ok(()) => Ok(batch.len()),
            Err(err) => {
                let count = batch.len();
                self.pending.lock().unwrap().extend(batch);
                Err(format!("{count} notes not committed: {err}"))
            }
        }
    }
}

fn open() -> Result<Connection, String> {
    let dir = std::env::var("BERTH_VOLUME_DATA").unwrap_or_else(|_| "/data".into());
    let path = std::path::Path::new(&dir).join("notes.db");
    let db = Connection::open(&path).map_err(|err| format!("open {}: {err}", path.display()))?;
    db.busy_timeout(Duration::from_millis(100))
        .map_err(|err| err.to_string())?;
    db.execute_batch(
        "PRAGMA locking_mode = EXCLUSIVE;
         PRAGMA journal_mode = WAL;
         CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL);",
    )
    .map_err(|err| format!("prepare {}: {err}", path.display()))?;
    Ok(db)
}

async fn add(State(notes): State<Arc<Notes>>, text: String) -> StatusCode {
    notes.pending.lock().unwrap().push(text);
    StatusCode::OK
}

async fn count(State(notes): State<Arc<Notes>>) -> Result<String, (StatusCode, String)> {
    let db = notes.db.lock().unwrap();
    let stored: i64 = db
        .query_row("SELECT count(*) FROM notes", [], |row| row.get(0))
        .map_err(|err| (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
    Ok(format!("{stored}\n"))
}

#[tokio::main]
async fn main() {
    let db = match open() {
        Ok(db) => db,
        Err(err) => {
            eprintln!("notes: {err}");
            std::process::exit(1);
        }
    };
    let notes = Arc::new(Notes {
        db: Mutex::new(db),
        pending: Mutex::new(Vec::new()),
    });
    let batches = notes.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Err(err) = batches.commit() {
                eprintln!("notes: {err}");
            }
        }
    });
    let app = Router::new()
        .route("/notes", post(add))
        .route("/count", get(count))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(notes.clone());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let listener = tokio::net::TcpListener::bind(format!("0.0.0.0:{port}"))
        .await
        .expect("bind");
    println!("notes: listening on {port}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            term.recv().await;
        })
        .await
        .expect("serve");
    // The last batch: what was acknowledged is committed before exiting.
    match notes.commit() {
        Ok(count) => println!("notes: committed the last {count} notes; bye"),
        Err(err) => {
            eprintln!("notes: {err}");
            std::process::exit(1);
        }
    }
}
