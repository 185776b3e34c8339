//! The store: berth's one source of truth, in SQLite (WAL) in the data dir.
//!
//! It holds apps, releases, process-group counts, env vars, the instance
//! journal and the append-only event log. Every write is one transaction with
//! `synchronous = FULL`, so whatever a caller was told succeeded survives a
//! crash of the server at any point. This crate knows nothing about processes,
//! HTTP or builds: it stores and answers, typed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

pub use berth_proto::{EventKind, ReleaseStatus, ResourceKind};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod apps;
mod budgets;
mod counts;
mod domains;
mod drains;
mod edge;
mod events;
mod jobs;
mod latency;
mod migrations;
mod notify;
mod releases;
mod rows;
mod usage;

pub use budgets::{BudgetEvent, BudgetState, SERVER_BUDGET};
pub use counts::OutcomeCount;
pub use domains::DomainRow;
pub use drains::{DrainProgress, DrainRow, MAX_DRAINS_PER_APP};
pub use latency::WRITE_BOUNDS;
pub use notify::{DueDelivery, NotifyRow, now_unix};
pub use usage::{RESOLUTIONS, resolution_seconds};
mod scaling;
mod services;

pub use jobs::{ExecutionRow, TaskAttemptRow};
use rows::*;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The write conflicts with what is stored (a name taken, say).
    #[error("{0}")]
    Conflict(String),
    /// SQLite failed; retrying may help if the disk was full or busy.
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    /// No user id could be had for an app.
    #[error("cannot allocate a user id for the app")]
    Allocation(#[source] std::io::Error),
    /// A stored value could not be read back.
    #[error("stored {what} is unreadable")]
    Corrupt {
        /// What was being read.
        what: String,
        /// Why it failed.
        #[source]
        source: serde_json::Error,
    },
}

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An app as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRow {
    /// Its name.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    /// The release the reconciler converges to.
    pub target_release: Option<u64>,
}

/// A release as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRow {
    /// The app.
    pub app: String,
    /// 1, 2, 3, …
    pub version: u64,
    /// Deploying, active, superseded or failed.
    pub status: ReleaseStatus,
    /// Why it was made.
    pub cause: String,
    /// Digest of the slug it runs.
    pub slug: String,
    /// The validated spec, as JSON (berth-spec's `AppSpec`).
    pub spec_json: String,
    /// Process groups and their commands.
    pub processes: BTreeMap<String, String>,
    /// The app's env vars (set with `berth env`) when the release was made.
    pub env: BTreeMap<String, String>,
    /// The app's secrets, sealed, when the release was made.
    pub secrets: BTreeMap<String, SealedSecret>,
    /// RFC 3339.
    pub created_at: String,
}

/// A secret as the vault sealed it: never the value itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealedSecret {
    /// The vault's ciphertext.
    pub sealed: String,
    /// The vault's keyed digest of the value.
    pub digest: String,
}

/// A secret as listed: its name, digest and when it last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRow {
    /// The env var it becomes.
    pub name: String,
    /// The vault's keyed digest of the value.
    pub digest: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// A managed resource of an app (its PostgreSQL database, its Redis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRow {
    /// The app.
    pub app: String,
    /// Which resource.
    pub kind: ResourceKind,
    /// The database and role name, or the Redis instance name.
    pub name: String,
    /// Its password, sealed by the vault.
    pub sealed_password: String,
    /// Its port, for resources that run a server of their own.
    pub port: Option<u16>,
    /// RFC 3339.
    pub created_at: String,
}

/// A release to be made.
#[derive(Debug, Clone)]
pub struct NewRelease {
    /// Why it is made.
    pub cause: String,
    /// Digest of the slug it runs.
    pub slug: String,
    /// The validated spec, as JSON.
    pub spec_json: String,
    /// Process groups and their commands.
    pub processes: BTreeMap<String, String>,
    /// The app's env vars.
    pub env: BTreeMap<String, String>,
    /// The app's secrets, sealed.
    pub secrets: BTreeMap<String, SealedSecret>,
}

/// How one process group is scaled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupScaling {
    /// The count set with `berth scale` (or 1 at first deploy).
    pub manual: u32,
    /// The autoscaler's count, which wins while set.
    pub scaled: Option<u32>,
    /// Lower bound set with `berth scale --min` (over the spec's).
    pub min: Option<u32>,
    /// Upper bound set with `berth scale --max` (over the spec's).
    pub max: Option<u32>,
    /// Why the count is what it is (`manual`, `load: …`, `idle …`).
    pub reason: Option<String>,
}

impl GroupScaling {
    /// The count the reconciler converges to.
    pub fn effective(&self) -> u32 {
        self.scaled.unwrap_or(self.manual)
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// Increasing id.
    pub id: i64,
    /// RFC 3339.
    pub at: String,
    /// The app.
    pub app: String,
    /// What it records.
    pub kind: EventKind,
    /// For a person.
    pub message: String,
}

/// What the reconciler should make true for one app.
#[derive(Debug, Clone)]
pub struct DesiredApp {
    /// The app.
    pub app: String,
    /// The release to run, if any.
    pub release: Option<ReleaseRow>,
    /// Desired instance count per process group.
    pub counts: BTreeMap<String, u32>,
    /// A budget's action in force on it (its own, else the server's).
    pub hold: Option<berth_proto::BudgetHold>,
}

/// A running instance as journaled, so a restarted server can find the
/// processes a crashed one left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceJournalRow {
    /// Instance id.
    pub id: String,
    /// The app.
    pub app: String,
    /// Its operating-system process id.
    pub pid: u32,
}

/// The store. Cheap to share behind an `Arc`; calls are short and serialised.
pub struct Store {
    /// Writes go through this connection, one transaction at a time.
    writer: Mutex<Connection>,
    /// Reads go through this one: in WAL mode a reader sees every committed
    /// write and never waits for a write in progress (or its fsync).
    reader: Mutex<Connection>,
    /// How long write transactions take.
    write_latency: latency::WriteLatency,
}

/// The current time as RFC 3339.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

impl Store {
    /// Opens (creating and migrating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::apply(&mut conn)?;
        let reader = Connection::open(path)?;
        reader.pragma_update(None, "foreign_keys", "ON")?;
        // The store is small and the OS caches its pages: a small page
        // cache keeps the idle server's memory where it was with one
        // connection.
        reader.pragma_update(None, "cache_size", -256)?;
        reader.busy_timeout(std::time::Duration::from_secs(5))?;
        // Reads on a start's path skip parsing their SQL each time.
        reader.set_prepared_statement_cache_capacity(64);
        Ok(Store {
            writer: Mutex::new(conn),
            reader: Mutex::new(reader),
            write_latency: latency::WriteLatency::default(),
        })
    }

    /// The read connection.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (every
        // write is a transaction), so a poisoned lock is safe to take over.
        self.reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `body` in one transaction.
    fn write<T>(&self, body: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let started = std::time::Instant::now();
        let tx = conn.transaction()?;
        let value = body(&tx)?;
        tx.commit()?;
        self.write_latency.observe(started.elapsed());
        Ok(value)
    }

    /// Write transactions so far: counts per [`WRITE_BOUNDS`] bucket and
    /// one for longer (not cumulative), and their summed seconds.
    pub fn write_latency(&self) -> (Vec<u64>, f64) {
        self.write_latency.figures()
    }
}

pub(crate) fn ensure_app(conn: &Connection, app: &str) -> Result<()> {
    conn.query_row("SELECT 1 FROM apps WHERE name = ?1", [app], |_| Ok(()))
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("app `{app}`")))
}

/// Effective desired counts: the autoscaler's while it has set one, else the manual one.
pub(crate) fn counts(conn: &Connection, app: &str) -> Result<BTreeMap<String, u32>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, COALESCE(scaled, desired) FROM process_groups WHERE app = ?1 ORDER BY name",
    )?;
    let rows = stmt.query_map([app], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn insert_event(
    tx: &Connection,
    app: &str,
    kind: &EventKind,
    message: &str,
) -> Result<i64> {
    tx.execute(
        "INSERT INTO events (at, app, kind, message) VALUES (?1, ?2, ?3, ?4)",
        params![now_rfc3339(), app, kind.as_str(), message],
    )?;
    Ok(tx.last_insert_rowid())
}

pub(crate) fn to_json<T: serde::Serialize>(value: &BTreeMap<String, T>) -> String {
    // Maps with string keys of plain structs always serialise.
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        what: what.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod usage_tests;
