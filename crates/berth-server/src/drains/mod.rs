//! Log drains: each app's lines, as they are stored, also sent to HTTP
//! (NDJSON), OTLP/HTTP or syslog receivers.
//!
//! A drain reads from the log store, not from the live stream: it keeps a
//! cursor (the id of the last line it delivered, saved in the state store),
//! so a drain that is down, or a server restart, loses nothing. While it is
//! down the lines wait in `logs.db`; past its buffer (lines it may fall
//! behind, 100,000 by default) the oldest are skipped and counted as
//! dropped. Deliveries are retried with exponential backoff (0.5 s to 30 s,
//! with jitter). Each drain is a task of its own that only reads what is
//! stored: a slow drain never slows the app, the server, or another drain.

pub(crate) mod deliver;
mod format;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_logs::LogStore;
use berth_proto::{AddDrain, DEFAULT_DRAIN_BUFFER, DrainInfo, DrainTarget};
use berth_store::{DrainProgress, DrainRow, Store, StoreError};
use tokio_util::sync::CancellationToken;

/// Lines sent in one delivery at most.
const BATCH_LINES: u32 = 500;
/// About the most bytes one delivery carries.
const BATCH_BYTES: usize = 1 << 20;
/// The first wait after a failed delivery, doubled on each failure after.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The largest buffer a drain may ask for.
const MAX_BUFFER: u64 = 10_000_000;
/// The largest CA certificate file taken.
const MAX_CA_PEM: usize = 64 * 1024;

/// Why a drain could not be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The request is wrong (a URL that does not parse, a bad CA).
    #[error("{0}")]
    Invalid(String),
    /// The store refused (an unknown app, a duplicate).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log store is gone.
    #[error("the log store: {0}")]
    Logs(String),
}

/// The drains that run, one task each.
pub struct Drains {
    store: Arc<Store>,
    logs: Arc<LogStore>,
    shutdown: CancellationToken,
    /// Each running drain's app and stop.
    running: Mutex<HashMap<i64, (String, CancellationToken)>>,
}

impl Drains {
    /// Starts every stored drain; each stops with `shutdown`.
    pub fn start(
        store: Arc<Store>,
        logs: Arc<LogStore>,
        shutdown: CancellationToken,
    ) -> Arc<Drains> {
        let drains = Arc::new(Drains {
            store,
            logs,
            shutdown,
            running: Mutex::new(HashMap::new()),
        });
        match drains.store.drains(None) {
            Ok(rows) => {
                for row in rows {
                    drains.spawn(row);
                }
            }
            Err(err) => tracing::error!(error = %err, "cannot read the log drains"),
        }
        drains
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<i64, (String, CancellationToken)>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn spawn(self: &Arc<Self>, row: DrainRow) {
        let cancel = self.shutdown.child_token();
        self.running()
            .insert(row.id, (row.app.clone(), cancel.clone()));
        let worker = Worker {
            store: self.store.clone(),
            logs: self.logs.clone(),
            cancel,
        };
        tokio::spawn(worker.run(row));
    }

    /// Adds a drain for `app`: it gets the lines stored from now on.
    pub fn add(self: &Arc<Self>, app: &str, request: &AddDrain) -> Result<DrainInfo, DrainError> {
        let target = DrainTarget::parse(&request.url).map_err(DrainError::Invalid)?;
        let buffer = request.buffer_lines.unwrap_or(DEFAULT_DRAIN_BUFFER);
        if !(1..=MAX_BUFFER).contains(&buffer) {
            return Err(DrainError::Invalid(format!(
                "the buffer must be from 1 to {MAX_BUFFER} lines, not {buffer}"
            )));
        }
        if let Some(pem) = &request.ca_pem {
            if pem.len() > MAX_CA_PEM {
                return Err(DrainError::Invalid(format!(
                    "the CA certificate is over {} KiB",
                    MAX_CA_PEM / 1024
                )));
            }
            deliver::tls_config(Some(pem)).map_err(DrainError::Invalid)?;
        }
        // Checked before it is stored: a sender that cannot be made is an
        // error now, not a failing drain later.
        deliver::Sender::new(target, app, request.ca_pem.as_deref())
            .map_err(DrainError::Invalid)?;
        let cursor = self
            .logs
            .last_id()
            .map_err(|err| DrainError::Logs(err.to_string()))?;
        let row =
            self.store
                .add_drain(app, &request.url, request.ca_pem.as_deref(), buffer, cursor)?;
        self.spawn(row.clone());
        Ok(info(&row))
    }

    /// Removes drain `id` of `app` and stops it.
    pub fn remove(&self, app: &str, id: i64) -> Result<(), DrainError> {
        self.store.remove_drain(app, id)?;
        if let Some((_, cancel)) = self.running().remove(&id) {
            cancel.cancel();
        }
        Ok(())
    }

    /// Stops every drain of `app` (destroyed: its rows went with it).
    pub fn stop_app(&self, app: &str) {
        self.running().retain(|_, (of, cancel)| {
            if of == app {
                cancel.cancel();
            }
            of != app
        });
    }

    /// The drains of `app`, with what each delivered and dropped.
    pub fn list(&self, app: &str) -> Result<Vec<DrainInfo>, DrainError> {
        Ok(self.store.drains(Some(app))?.iter().map(info).collect())
    }
}

/// The wire form of a stored drain.
fn info(row: &DrainRow) -> DrainInfo {
    DrainInfo {
        id: row.id,
        app: row.app.clone(),
        url: redacted(&row.url),
        kind: DrainTarget::parse(&row.url)
            .map(|target| target.kind)
            .unwrap_or(berth_proto::DrainKind::Http),
        buffer_lines: row.buffer_lines,
        delivered: row.delivered,
        dropped: row.dropped,
        last_error: row.last_error.clone(),
        created_at: row.created_at.clone(),
    }
}

/// `url` with the values of its query hidden (they often hold tokens):
/// `https://logs.example.com/in?token=…`.
pub fn redacted(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) => format!("{key}=…"),
            None => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

/// One drain's task.
struct Worker {
    store: Arc<Store>,
    logs: Arc<LogStore>,
    cancel: CancellationToken,
}

impl Worker {
    async fn run(self, row: DrainRow) {
        let target = match DrainTarget::parse(&row.url) {
            Ok(target) => target,
            Err(why) => return self.failed(row.id, row.cursor, why),
        };
        let mut sender = match deliver::Sender::new(target, &row.app, row.ca_pem.as_deref()) {
            Ok(sender) => sender,
            Err(why) => return self.failed(row.id, row.cursor, why),
        };
        let mut live = self.logs.subscribe();
        let mut cursor = row.cursor;
        let mut backoff = FIRST_BACKOFF;
        let mut failing: Option<String> = None;
        while !self.cancel.is_cancelled() {
            // A drain that fell too far behind skips its oldest lines.
            let (logs, app, buffer) = (self.logs.clone(), row.app.clone(), row.buffer_lines);
            let backlog =
                tokio::task::spawn_blocking(move || logs.backlog(&app, cursor, buffer)).await;
            if let Ok(Ok((behind, Some(skip_to)))) = backlog {
                let progress = DrainProgress {
                    cursor: skip_to,
                    dropped: behind - row.buffer_lines,
                    delivered: 0,
                    last_error: failing.clone(),
                };
                cursor = skip_to;
                self.record(row.id, &progress);
                tracing::warn!(app = %row.app, drain = row.id, dropped = progress.dropped, "a log drain fell behind its buffer; its oldest lines were dropped");
            }
            let (logs, app) = (self.logs.clone(), row.app.clone());
            let read =
                tokio::task::spawn_blocking(move || logs.read_after(&app, cursor, BATCH_LINES))
                    .await;
            let read = match read {
                Ok(read) => read.map_err(|err| err.to_string()),
                Err(err) => Err(err.to_string()),
            };
            let batch = match read {
                Ok(batch) => within_bytes(batch),
                Err(why) => {
                    tracing::warn!(drain = row.id, error = %why, "a log drain cannot read the log store");
                    if self.pause(Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                // Wait for a line of this app (or a second, whichever first).
                let app = row.app.clone();
                let wait = async {
                    loop {
                        match live.recv().await {
                            Ok(line) if line.line.app == app => return,
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                };
                tokio::select! {
                    () = self.cancel.cancelled() => return,
                    () = wait => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            let last = batch.last().map_or(cursor, |line| line.id);
            let sent = tokio::select! {
                () = self.cancel.cancelled() => return,
                sent = sender.send(&batch) => sent,
            };
            match sent {
                Ok(()) => {
                    cursor = last;
                    failing = None;
                    backoff = FIRST_BACKOFF;
                    self.record(
                        row.id,
                        &DrainProgress {
                            cursor,
                            delivered: batch.len() as u64,
                            dropped: 0,
                            last_error: None,
                        },
                    );
                }
                // Refused for good: these lines are dropped, the next go on.
                Err(deliver::Failure::Refused(why)) => {
                    tracing::warn!(app = %row.app, drain = row.id, error = %why, lines = batch.len(), "a log drain refused lines; they are dropped");
                    cursor = last;
                    self.record(
                        row.id,
                        &DrainProgress {
                            cursor,
                            delivered: 0,
                            dropped: batch.len() as u64,
                            last_error: Some(why.clone()),
                        },
                    );
                    failing = Some(why);
                }
                Err(deliver::Failure::Retry(why)) => {
                    if failing.as_deref() != Some(why.as_str()) {
                        tracing::warn!(app = %row.app, drain = row.id, error = %why, "a log drain cannot deliver; retrying with backoff");
                        self.record(
                            row.id,
                            &DrainProgress {
                                cursor,
                                last_error: Some(why.clone()),
                                ..DrainProgress::default()
                            },
                        );
                        failing = Some(why);
                    }
                    if self.pause(jittered(backoff)).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Waits `time`; true when the drain was stopped meanwhile.
    async fn pause(&self, time: Duration) -> bool {
        tokio::select! {
            () = self.cancel.cancelled() => true,
            () = tokio::time::sleep(time) => false,
        }
    }

    fn record(&self, id: i64, progress: &DrainProgress) {
        if let Err(err) = self.store.record_drain_progress(id, progress) {
            tracing::warn!(drain = id, error = %err, "cannot record a log drain's progress");
        }
    }

    fn failed(&self, id: i64, cursor: i64, why: String) {
        tracing::error!(drain = id, error = %why, "a log drain cannot start");
        self.record(
            id,
            &DrainProgress {
                cursor,
                last_error: Some(why),
                ..DrainProgress::default()
            },
        );
    }
}

/// The first lines of `batch` that fit in [`BATCH_BYTES`] (at least one).
fn within_bytes(mut batch: Vec<berth_logs::StoredLine>) -> Vec<berth_logs::StoredLine> {
    let mut total = 0usize;
    let fits = batch
        .iter()
        .take_while(|stored| {
            let line = &stored.line;
            total += line.message.len()
                + line.colored.as_ref().map_or(0, String::len)
                + line
                    .fields
                    .as_ref()
                    .map_or(0, |fields| fields.to_string().len())
                + 256;
            total <= BATCH_BYTES
        })
        .count()
        .max(1);
    batch.truncate(fits);
    batch
}

/// `time` give or take a quarter, so drains that failed together do not
/// retry together.
fn jittered(time: Duration) -> Duration {
    let quarter = time.as_millis() as u64 / 4;
    let offset = rand::random::<u64>() % (2 * quarter + 1);
    Duration::from_millis(time.as_millis() as u64 - quarter + offset)
}
