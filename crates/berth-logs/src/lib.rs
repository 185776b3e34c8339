//! The log store: every line an instance writes, captured, parsed and kept.
//!
//! Lines arrive through [`LogStore::append`] with app, process, instance and
//! release. JSON lines (as `tracing-subscriber`'s json format writes them) and
//! logfmt lines are parsed into level, message and fields; anything else is
//! kept as text. A writer thread batches lines into their own SQLite file
//! (`logs.db`, so a chatty app never slows the state store) and then publishes
//! them to live followers. Queries filter by time, level, process and text.
//! This crate never decides what to log; it only keeps and answers.

mod ansi;
mod filter;
mod parse;
mod query;
mod writer;

pub use writer::{MAX_APP_BYTES, Retention};
use writer::{WriterCommand, write_loop};

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_proto::{LogLine, LogStream};
use rusqlite::Connection;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{broadcast, oneshot};

pub use ansi::strip_ansi;
pub use filter::{Condition, Field, Op, parse_where};
pub use parse::{ParsedLine, level_rank, parse_line};
pub use query::{Grep, LogQuery};

/// Errors of the log store.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// SQLite failed.
    #[error("log database error")]
    Sqlite(#[from] rusqlite::Error),
    /// The writer thread is gone (the server is shutting down), or the
    /// batch holding the request could not be written (its error is in
    /// the server's log).
    #[error("the log writer has stopped or could not write (see the server's log)")]
    WriterStopped,
    /// A query parameter is malformed.
    #[error("{0}")]
    BadQuery(String),
}

/// Where a line came from.
#[derive(Debug, Clone)]
pub struct LogSource {
    /// The app.
    pub app: String,
    /// The process group, or `build` / `deploy` for berth's own lines.
    pub process: String,
    /// The instance id.
    pub instance: String,
    /// The release version.
    pub release: u64,
}

/// A stored line with its id, as followers receive it.
#[derive(Debug, Clone)]
pub struct StoredLine {
    /// Increasing id.
    pub id: i64,
    /// The line.
    pub line: LogLine,
}

/// The log store. Share it behind an `Arc`.
pub struct LogStore {
    writer: mpsc::Sender<WriterCommand>,
    /// Commands sent to the writer and not yet taken.
    queued: Arc<AtomicUsize>,
    /// Lines stored since the server started.
    stored: Arc<AtomicU64>,
    /// Lines dropped since the server started: the writer was further
    /// behind than [`MAX_QUEUED`].
    dropped: AtomicU64,
    reader: Mutex<Connection>,
    live: broadcast::Sender<Arc<StoredLine>>,
    masks: std::sync::RwLock<std::collections::HashMap<String, Arc<Masks>>>,
}

/// Lines waiting for the writer past which new ones are dropped (and
/// counted): a flood never grows the server's memory without bound, and
/// never blocks the app that writes it.
pub const MAX_QUEUED: usize = 200_000;

/// What a stored line shows instead of a secret's value.
pub const MASK: &str = "[masked]";

/// Values shorter than this are not masked: a two-letter secret would
/// blank out every word that contains it, and guards nothing.
pub const MIN_MASKED_LEN: usize = 4;

/// The secret values of one app, longest first (so a value that contains
/// another is masked whole).
#[derive(Default)]
struct Masks {
    values: Vec<zeroize::Zeroizing<String>>,
}

impl Masks {
    fn apply<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        let mut text = std::borrow::Cow::Borrowed(text);
        for value in &self.values {
            if text.contains(value.as_str()) {
                text = std::borrow::Cow::Owned(text.replace(value.as_str(), MASK));
            }
        }
        text
    }
}

impl LogStore {
    /// Opens (creating if needed) the log database at `path` and starts its writer.
    pub fn open(path: &Path) -> Result<LogStore, LogError> {
        LogStore::open_with_cap(path, MAX_APP_BYTES)
    }

    /// [`LogStore::open`] with `max_app_bytes` of text kept per app.
    pub fn open_with_cap(path: &Path, max_app_bytes: u64) -> Result<LogStore, LogError> {
        let writer_conn = open_connection(path)?;
        writer_conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS logs (
                id INTEGER PRIMARY KEY,
                at INTEGER NOT NULL,
                app TEXT NOT NULL,
                process TEXT NOT NULL,
                instance TEXT NOT NULL,
                release INTEGER NOT NULL,
                stream TEXT NOT NULL,
                level TEXT,
                level_rank INTEGER,
                message TEXT NOT NULL,
                fields TEXT,
                colored TEXT
            );
            CREATE INDEX IF NOT EXISTS logs_by_app ON logs (app, id);
            CREATE INDEX IF NOT EXISTS logs_by_app_time ON logs (app, at);
            CREATE TABLE IF NOT EXISTS logs_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )?;
        add_missing_columns(&writer_conn)?;
        add_search_index(&writer_conn)?;
        let reader = open_connection(path)?;
        query::add_regexp(&reader)?;
        let (live, _) = broadcast::channel(4096);
        let (sender, receiver) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let stored = Arc::new(AtomicU64::new(0));
        let publisher = live.clone();
        thread::Builder::new()
            .name("berth-log-writer".into())
            .spawn({
                let (queued, stored) = (queued.clone(), stored.clone());
                move || {
                    write_loop(
                        writer_conn,
                        writer::Channel {
                            commands: receiver,
                            queued,
                            stored,
                        },
                        publisher,
                        max_app_bytes,
                    )
                }
            })
            .map_err(|err| LogError::BadQuery(format!("cannot start the log writer: {err}")))?;
        Ok(LogStore {
            writer: sender,
            queued,
            stored,
            dropped: AtomicU64::new(0),
            reader: Mutex::new(reader),
            live,
            masks: std::sync::RwLock::new(std::collections::HashMap::new()),
        })
    }

    /// Deletes every stored line of `app` (it was destroyed: a new app of
    /// the same name starts with none).
    pub async fn forget_app(&self, app: &str) -> Result<(), LogError> {
        let (done, wait) = oneshot::channel();
        self.send(WriterCommand::ForgetApp(app.to_string(), done))?;
        wait.await.map_err(|_| LogError::WriterStopped)
    }

    /// Keeps `app`'s lines within `retention` from now on; lines older
    /// than its age are deleted now (call it again, say every minute, for
    /// lines that age).
    pub fn retain(&self, app: &str, retention: Retention) -> Result<(), LogError> {
        self.send(WriterCommand::Retain(app.to_string(), retention))
    }

    /// The bytes `app`'s stored lines take (text, fields and colours).
    pub async fn app_bytes(&self, app: &str) -> Result<u64, LogError> {
        let (answer, wait) = oneshot::channel();
        self.send(WriterCommand::Size(app.to_string(), answer))?;
        wait.await.map_err(|_| LogError::WriterStopped)
    }

    fn send(&self, command: WriterCommand) -> Result<(), LogError> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.writer
            .send(command)
            .map_err(|_| LogError::WriterStopped)
    }

    /// Whether a line may be queued; if not, it is counted as dropped.
    fn room_for_a_line(&self) -> bool {
        if self.queued.load(Ordering::Relaxed) < MAX_QUEUED {
            return true;
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Whether the writer is far enough behind that producers who can wait
    /// (instances' output) should: half of [`MAX_QUEUED`].
    pub fn backlogged(&self) -> bool {
        self.queued.load(Ordering::Relaxed) >= MAX_QUEUED / 2
    }

    /// Lines stored and lines dropped since the server started.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.stored.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }

    /// Stores a line already parsed (the router's access log), masked like
    /// any; dropped (and counted) when the writer is too far behind.
    pub fn append_parsed(&self, source: &LogSource, stream: LogStream, mut parsed: ParsedLine) {
        if !self.room_for_a_line() {
            return;
        }
        if let std::borrow::Cow::Owned(masked) = self.mask(&source.app, &parsed.message) {
            parsed.message = masked;
        }
        // Fields too: the access log's path is the client's, and may carry
        // a secret (`/bot<token>/…`).
        if let Some(fields) = parsed.fields.as_mut() {
            self.mask_strings(&source.app, fields);
        }
        let command = WriterCommand::Append(Box::new((
            now_micros(),
            source.clone(),
            stream,
            parsed,
            None,
        )));
        // If the writer is gone the server is shutting down; the line has nowhere to go.
        let _ = self.send(command);
    }

    /// Captures one line of output. Never blocks on the disk.
    pub fn append(&self, source: &LogSource, stream: LogStream, text: &str) {
        self.append_at(now_micros(), source, stream, text);
    }

    /// [`LogStore::append`] of a line read at `at` (unix microseconds).
    pub(crate) fn append_at(&self, at: i64, source: &LogSource, stream: LogStream, text: &str) {
        if !self.room_for_a_line() {
            return;
        }
        // Masked first, then cut: a secret is never stored in part.
        let masked = self.mask(&source.app, text);
        let text = cut(&masked);
        let plain = strip_ansi(&text);
        let colored = matches!(plain, std::borrow::Cow::Owned(_)).then(|| text.to_string());
        let parsed = parse_line(&plain);
        let command =
            WriterCommand::Append(Box::new((at, source.clone(), stream, parsed, colored)));
        // If the writer is gone the server is shutting down; the line has nowhere to go.
        let _ = self.send(command);
    }

    /// Sets the values that must never be stored for `app` (its secrets and
    /// generated passwords): lines holding one are stored with it replaced
    /// by [`MASK`].
    pub fn set_masks<I, S>(&self, app: &str, values: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut values: Vec<zeroize::Zeroizing<String>> = values
            .into_iter()
            .map(|value| value.as_ref().to_string())
            .filter(|value| value.len() >= MIN_MASKED_LEN)
            .map(zeroize::Zeroizing::new)
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        let mut masks = self
            .masks
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if values.is_empty() {
            masks.remove(app);
        } else {
            masks.insert(app.to_string(), Arc::new(Masks { values }));
        }
    }

    /// `text` with `app`'s secret values masked.
    pub fn mask<'a>(&self, app: &str, text: &'a str) -> std::borrow::Cow<'a, str> {
        let masks = self
            .masks
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(app)
            .cloned();
        match masks {
            Some(masks) => masks.apply(text),
            None => std::borrow::Cow::Borrowed(text),
        }
    }

    /// Masks every string in `value` (see [`LogStore::mask`]).
    fn mask_strings(&self, app: &str, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) => {
                if let std::borrow::Cow::Owned(masked) = self.mask(app, text) {
                    *text = masked;
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    self.mask_strings(app, item);
                }
            }
            serde_json::Value::Object(fields) => {
                for item in fields.values_mut() {
                    self.mask_strings(app, item);
                }
            }
            _ => {}
        }
    }

    /// Waits until every line appended before this call is stored.
    pub async fn flush(&self) -> Result<(), LogError> {
        let (done, wait) = oneshot::channel();
        self.send(WriterCommand::Flush(done))?;
        wait.await.map_err(|_| LogError::WriterStopped)
    }

    /// Live lines as they are stored.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredLine>> {
        self.live.subscribe()
    }
}

/// The full-text index of messages and fields (`--search`): an FTS5 table
/// that keeps no copy of the text, its rows deleted with their lines. A
/// `logs.db` from before it gets its stored lines indexed once.
fn add_search_index(conn: &Connection) -> Result<(), LogError> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'logs_fts')",
        [],
        |row| row.get(0),
    )?;
    if exists {
        return Ok(());
    }
    conn.execute_batch(
        "BEGIN;
         CREATE VIRTUAL TABLE logs_fts USING fts5(message, fields, content='', contentless_delete=1);
         CREATE TRIGGER logs_fts_delete AFTER DELETE ON logs BEGIN
             DELETE FROM logs_fts WHERE rowid = old.id;
         END;
         INSERT INTO logs_fts (rowid, message, fields) SELECT id, message, fields FROM logs;
         COMMIT;",
    )?;
    Ok(())
}

/// Columns a `logs.db` written by an older berth lacks.
fn add_missing_columns(conn: &Connection) -> Result<(), LogError> {
    let mut columns = conn.prepare("SELECT name FROM pragma_table_info('logs')")?;
    let names: Vec<String> = columns
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    if !names.iter().any(|name| name == "colored") {
        conn.execute_batch("ALTER TABLE logs ADD COLUMN colored TEXT")?;
    }
    Ok(())
}

fn open_connection(path: &Path) -> Result<Connection, LogError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Now, in unix microseconds.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as i64)
        .unwrap_or(0)
}

fn format_micros(micros: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Parses `--since`: an RFC 3339 time, or a duration back from now (`10m`, `2h`, `30s`, `1d`).
pub fn parse_since(text: &str) -> Result<i64, LogError> {
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok((at.unix_timestamp_nanos() / 1000) as i64);
    }
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: i64 = number.parse().map_err(|_| {
        LogError::BadQuery(format!(
            "`{text}` is neither a time (RFC 3339) nor a duration like 10m"
        ))
    })?;
    let unit_seconds = match unit {
        "s" => 1,
        "m" | "" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(LogError::BadQuery(format!(
                "unknown unit in `{text}` (use s, m, h or d)"
            )));
        }
    };
    number
        .checked_mul(unit_seconds)
        .and_then(|seconds| seconds.checked_mul(1_000_000))
        .and_then(|micros| now_micros().checked_sub(micros))
        .ok_or_else(|| LogError::BadQuery(format!("`{text}` reaches back too far")))
}

#[cfg(test)]
mod filter_tests;
#[cfg(test)]
mod tests;

/// The longest line stored, in bytes of text; a longer one is cut there,
/// with a note of how much was dropped.
pub const MAX_STORED_LINE_BYTES: usize = 64 * 1024;

/// `text` within [`MAX_STORED_LINE_BYTES`] (at a character boundary).
fn cut(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_STORED_LINE_BYTES {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = MAX_STORED_LINE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}…[cut: {} more bytes]",
        &text[..end],
        text.len() - end
    ))
}
