//! The writer thread: batches lines into `logs.db`, publishes them to live
//! followers, keeps each app within its share of the disk, and forgets a
//! destroyed app's lines.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use berth_proto::{LogLine, LogStream};
use rusqlite::{Connection, params};
use tokio::sync::{broadcast, oneshot};

use crate::{LogSource, ParsedLine, StoredLine, format_micros, level_rank};

/// What the writer is asked to do.
pub(crate) enum WriterCommand {
    /// A line: when, from where, its stream, parsed, and as written when
    /// it had colours.
    Append(Box<(i64, LogSource, LogStream, ParsedLine, Option<String>)>),
    Flush(oneshot::Sender<()>),
    /// Delete every line of an app (it was destroyed).
    ForgetApp(String, oneshot::Sender<()>),
    /// Keep an app's lines within this retention from now on, and delete
    /// those older than it now.
    Retain(String, Retention),
    /// The bytes an app's stored lines take.
    Size(String, oneshot::Sender<u64>),
}

/// How much of one app's logs is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Lines older than this many microseconds go.
    pub max_age_micros: i64,
    /// Past this many bytes of text, the oldest lines go.
    pub max_bytes: u64,
}

/// Lines kept in all, whatever the apps' sizes: a last bound, taken from
/// the app with the most (see [`prune_to_line_cap`]).
const MAX_STORED_LINES: i64 = 2_000_000;

/// Bytes of text (messages and fields) kept per app: past it, the app's
/// oldest lines go, down to 90% of it. A noisy app evicts only its
/// own lines.
pub const MAX_APP_BYTES: u64 = 64 * 1024 * 1024;

/// The fraction of [`MAX_APP_BYTES`] an app is trimmed to.
const TRIM_TO: f64 = 0.9;

/// How many bytes a stored line counts for.
fn line_bytes(message: &str, fields: Option<&str>, colored: Option<&str>) -> u64 {
    (message.len() + fields.map_or(0, str::len) + colored.map_or(0, str::len)) as u64
}

/// Keeps the running size of each app's stored lines.
struct Sizes {
    max: u64,
    /// Apps whose bound is not `max` (their spec's `[logs] max_size`).
    limits: HashMap<String, u64>,
    bytes: HashMap<String, u64>,
}

impl Sizes {
    /// `app`'s stored bytes, read from the file the first time.
    fn of(&mut self, conn: &Connection, app: &str) -> rusqlite::Result<&mut u64> {
        if !self.bytes.contains_key(app) {
            let stored: i64 = conn.query_row(
                "SELECT COALESCE(SUM(length(CAST(message AS BLOB)) + COALESCE(length(CAST(fields AS BLOB)), 0) + COALESCE(length(CAST(colored AS BLOB)), 0)), 0) FROM logs WHERE app = ?1",
                [app],
                |row| row.get(0),
            )?;
            self.bytes.insert(app.to_string(), stored.max(0) as u64);
        }
        Ok(self.bytes.get_mut(app).expect("just inserted"))
    }

    /// Deletes the oldest lines of every app over its bound.
    fn trim(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let bound = |app: &str| self.limits.get(app).copied().unwrap_or(self.max);
        let over: Vec<(String, u64, u64)> = self
            .bytes
            .iter()
            .filter(|(app, bytes)| **bytes > bound(app))
            .map(|(app, bytes)| (app.clone(), *bytes, bound(app)))
            .collect();
        for (app, bytes, max) in over {
            let keep = (max as f64 * TRIM_TO) as u64;
            let mut excess = bytes - keep;
            let mut last = None;
            {
                let mut oldest = conn.prepare(
                    "SELECT id, length(CAST(message AS BLOB)) + COALESCE(length(CAST(fields AS BLOB)), 0) + COALESCE(length(CAST(colored AS BLOB)), 0) FROM logs WHERE app = ?1 ORDER BY id",
                )?;
                let mut rows = oldest.query([&app])?;
                while let Some(row) = rows.next()? {
                    let (id, size): (i64, i64) = (row.get(0)?, row.get(1)?);
                    last = Some(id);
                    excess = excess.saturating_sub(size.max(0) as u64);
                    if excess == 0 {
                        break;
                    }
                }
            }
            if let Some(last) = last {
                conn.execute(
                    "DELETE FROM logs WHERE app = ?1 AND id <= ?2",
                    params![app, last],
                )?;
            }
            self.bytes.remove(&app);
        }
        Ok(())
    }
}

/// What the writer takes commands from, and the counts it keeps.
pub(crate) struct Channel {
    pub(crate) commands: mpsc::Receiver<WriterCommand>,
    /// Commands sent and not yet taken (decremented as they are).
    pub(crate) queued: Arc<std::sync::atomic::AtomicUsize>,
    /// Lines stored.
    pub(crate) stored: Arc<std::sync::atomic::AtomicU64>,
}

pub(crate) fn write_loop(
    conn: Connection,
    channel: Channel,
    live: broadcast::Sender<Arc<StoredLine>>,
    max_app_bytes: u64,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let Channel {
        commands,
        queued,
        stored: stored_count,
    } = channel;
    let mut sizes = Sizes {
        max: max_app_bytes,
        limits: HashMap::new(),
        bytes: HashMap::new(),
    };
    let mut conn = conn;
    let mut since_prune = 0usize;
    // Ids only grow, even when the newest lines are deleted (a destroyed
    // app, retention): a drain's cursor never sees an id twice.
    let mut next_id = match high_water(&conn) {
        Ok(high) => high + 1,
        Err(err) => {
            tracing::error!(error = %err, "cannot read the log store's last id");
            1
        }
    };
    while let Ok(first) = commands.recv() {
        let mut batch = vec![first];
        // Gather what else is waiting, up to a bounded batch.
        while batch.len() < 2048 {
            match commands.recv_timeout(Duration::from_millis(5)) {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        queued.fetch_sub(batch.len(), Relaxed);
        let mut stored = Vec::new();
        let mut done = Vec::new();
        let mut size_asked = Vec::new();
        let mut sizes_answered = Vec::new();
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO logs (at, app, process, instance, release, stream, level, level_rank, message, fields, colored, id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?;
                let mut index = tx.prepare_cached(
                    "INSERT INTO logs_fts (rowid, message, fields) VALUES (?1, ?2, ?3)",
                )?;
                for command in batch {
                    match command {
                        WriterCommand::Append(entry) => {
                            let (at, source, stream, parsed, colored) = *entry;
                            let fields_text =
                                parsed.fields.as_ref().map(|fields| fields.to_string());
                            insert.execute(params![
                                at,
                                source.app,
                                source.process,
                                source.instance,
                                source.release,
                                stream.as_str(),
                                parsed.level,
                                parsed.level.as_deref().and_then(level_rank),
                                parsed.message,
                                fields_text,
                                colored,
                                next_id,
                            ])?;
                            let id = next_id;
                            next_id += 1;
                            index.execute(params![id, parsed.message, fields_text])?;
                            *sizes.of(&tx, &source.app)? += line_bytes(
                                &parsed.message,
                                fields_text.as_deref(),
                                colored.as_deref(),
                            );
                            stored.push(StoredLine {
                                id,
                                line: LogLine {
                                    at: format_micros(at),
                                    app: source.app,
                                    process: source.process,
                                    instance: source.instance,
                                    release: source.release,
                                    stream,
                                    level: parsed.level,
                                    message: parsed.message,
                                    fields: parsed.fields,
                                    colored,
                                },
                            });
                        }
                        WriterCommand::Flush(waiting) => done.push(waiting),
                        WriterCommand::ForgetApp(app, waiting) => {
                            tx.execute("DELETE FROM logs WHERE app = ?1", [&app])?;
                            sizes.bytes.remove(&app);
                            sizes.limits.remove(&app);
                            done.push(waiting);
                        }
                        WriterCommand::Retain(app, retention) => {
                            let oldest =
                                crate::now_micros().saturating_sub(retention.max_age_micros);
                            // What went is subtracted: no sum over the rest.
                            let mut freed = 0u64;
                            {
                                let mut delete = tx.prepare_cached(
                                    "DELETE FROM logs WHERE app = ?1 AND at < ?2 RETURNING length(CAST(message AS BLOB)) + COALESCE(length(CAST(fields AS BLOB)), 0) + COALESCE(length(CAST(colored AS BLOB)), 0)",
                                )?;
                                let mut rows = delete.query(params![app, oldest])?;
                                while let Some(row) = rows.next()? {
                                    freed += row.get::<_, i64>(0)?.max(0) as u64;
                                }
                            }
                            if let Some(bytes) = sizes.bytes.get_mut(&app) {
                                *bytes = bytes.saturating_sub(freed);
                            }
                            sizes.limits.insert(app.clone(), retention.max_bytes);
                            // A smaller bound applies now, not at the next line.
                            sizes.of(&tx, &app)?;
                        }
                        WriterCommand::Size(app, answer) => size_asked.push((app, answer)),
                    }
                }
            }
            sizes.trim(&tx)?;
            // Answered after the trim: what is kept, not what was over.
            for (app, answer) in size_asked.drain(..) {
                sizes_answered.push((answer, *sizes.of(&tx, &app)?));
            }
            tx.execute(
                "INSERT INTO logs_meta (key, value) VALUES ('high_water', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
                [next_id - 1],
            )?;
            tx.commit()
        })();
        // After the commit: whoever asked then reads what was stored.
        for (answer, bytes) in sizes_answered {
            let _ = answer.send(bytes);
        }
        let succeeded = result.is_ok();
        if let Err(err) = result {
            tracing::error!(error = %err, "could not store log lines");
            // The running sizes may be off: read them again.
            sizes.bytes.clear();
        }
        // Nothing of a batch that failed is told as done: its lines were
        // not stored (followers would see lines search never finds), and
        // a flush or a forgotten app answered so would be a lie. Dropped,
        // the waiters' senders answer them with an error.
        if succeeded {
            stored_count.fetch_add(stored.len() as u64, Relaxed);
            since_prune += stored.len();
            for line in stored {
                let _ = live.send(Arc::new(line));
            }
            for waiting in done {
                let _ = waiting.send(());
            }
        }
        if since_prune > 50_000 {
            since_prune = 0;
            match prune_to_line_cap(&conn, MAX_STORED_LINES) {
                Ok(0) => {}
                Ok(_) => sizes.bytes.clear(),
                Err(err) => tracing::warn!(error = %err, "could not prune old log lines"),
            }
        }
    }
}

/// Past `cap` lines in all, deletes the oldest lines of the app with the
/// most: an app printing many short lines (small in bytes, so under its
/// size bound) must not push out the lines of quieter apps. The lines
/// deleted.
pub(crate) fn prune_to_line_cap(conn: &Connection, cap: i64) -> rusqlite::Result<usize> {
    // Cheap first: ids are dense, so their span bounds the count.
    let span: i64 = conn.query_row(
        "SELECT COALESCE(MAX(id) - MIN(id) + 1, 0) FROM logs",
        [],
        |row| row.get(0),
    )?;
    if span <= cap {
        return Ok(0);
    }
    let excess = conn.query_row("SELECT COUNT(*) FROM logs", [], |row| row.get::<_, i64>(0))? - cap;
    if excess <= 0 {
        return Ok(0);
    }
    let (app, lines): (String, i64) = conn.query_row(
        "SELECT app, COUNT(*) AS lines FROM logs GROUP BY app ORDER BY lines DESC LIMIT 1",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    conn.execute(
        "DELETE FROM logs WHERE id IN
             (SELECT id FROM logs WHERE app = ?1 ORDER BY id LIMIT ?2)",
        rusqlite::params![app, excess.min(lines)],
    )
}

/// The highest id ever given a line: kept in `logs_meta`, since the
/// newest lines may have been deleted.
fn high_water(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT MAX(COALESCE((SELECT MAX(id) FROM logs), 0),
                    COALESCE((SELECT value FROM logs_meta WHERE key = 'high_water'), 0))",
        [],
        |row| row.get(0),
    )
}
