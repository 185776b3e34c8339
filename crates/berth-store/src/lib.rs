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

pub use berth_proto::{EventKind, ReleaseStatus};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod jobs;
mod migrations;

pub use jobs::{ExecutionRow, TaskAttemptRow};

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

/// The first user id given to an app (well above system and login users).
pub const FIRST_APP_UID: u32 = 200_000;

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
    /// `postgres` or `redis`.
    pub kind: String,
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
    /// Kind such as `deploy.started`.
    pub kind: String,
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
        let tx = conn.transaction()?;
        let value = body(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// Creates an app; fails with `Conflict` when the name is taken.
    pub fn create_app(&self, name: &str) -> Result<AppRow> {
        self.write(|tx| {
            let exists: bool = tx
                .query_row("SELECT 1 FROM apps WHERE name = ?1", [name], |_| Ok(true))
                .optional()?
                .unwrap_or(false);
            if exists {
                return Err(StoreError::Conflict(format!("app `{name}` already exists")));
            }
            let created_at = now_rfc3339();
            tx.execute(
                "INSERT INTO apps (name, created_at) VALUES (?1, ?2)",
                params![name, created_at],
            )?;
            insert_event(
                tx,
                name,
                &EventKind::AppCreated,
                &format!("app {name} created"),
            )?;
            Ok(AppRow {
                name: name.to_string(),
                created_at,
                target_release: None,
            })
        })
    }

    /// One app.
    pub fn app(&self, name: &str) -> Result<AppRow> {
        self.conn()
            .query_row(
                "SELECT name, created_at, target_release FROM apps WHERE name = ?1",
                [name],
                app_from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("app `{name}`")))
    }

    /// Every app, by name.
    pub fn apps(&self) -> Result<Vec<AppRow>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT name, created_at, target_release FROM apps ORDER BY name")?;
        let rows = stmt.query_map([], app_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes an app with its releases, counts and env. Its events stay.
    pub fn destroy_app(&self, name: &str) -> Result<()> {
        self.write(|tx| {
            let deleted = tx.execute("DELETE FROM apps WHERE name = ?1", [name])?;
            tx.execute("DELETE FROM job_executions WHERE app = ?1", [name])?;
            tx.execute("DELETE FROM job_schedules WHERE app = ?1", [name])?;
            tx.execute("DELETE FROM resources WHERE app = ?1", [name])?;
            if deleted == 0 {
                return Err(StoreError::NotFound(format!("app `{name}`")));
            }
            insert_event(
                tx,
                name,
                &EventKind::AppDestroyed,
                &format!("app {name} destroyed"),
            )?;
            Ok(())
        })
    }

    /// Makes the next release of `app` with status `deploying` and makes it the
    /// target; counts for new process groups start at 1. Returns the release.
    pub fn begin_release(&self, app: &str, new: NewRelease) -> Result<ReleaseRow> {
        let release = self.create_release(app, new)?;
        self.target_release(app, release.version)?;
        Ok(release)
    }

    /// Makes `version` the release the reconciler converges to; counts for
    /// new process groups start at 1.
    pub fn target_release(&self, app: &str, version: u64) -> Result<()> {
        self.write(|tx| {
            let processes_json: String = tx
                .query_row(
                    "SELECT processes_json FROM releases WHERE app = ?1 AND version = ?2",
                    params![app, version],
                    |row| row.get(0),
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("release v{version} of `{app}`")))?;
            let processes: BTreeMap<String, String> =
                from_json("release processes", &processes_json)?;
            tx.execute(
                "UPDATE apps SET target_release = ?2 WHERE name = ?1",
                params![app, version],
            )?;
            // A new release is proven at its manual count, whatever the
            // autoscaler had (even zero); the autoscaler takes over after.
            tx.execute(
                "UPDATE process_groups SET scaled = NULL WHERE app = ?1",
                [app],
            )?;
            for process in processes.keys() {
                tx.execute(
                    "INSERT OR IGNORE INTO process_groups (app, name, desired) VALUES (?1, ?2, 1)",
                    params![app, process],
                )?;
            }
            Ok(())
        })
    }

    /// Makes the next release of `app` with status `deploying`, without
    /// making it the target yet (its release command runs first).
    pub fn create_release(&self, app: &str, new: NewRelease) -> Result<ReleaseRow> {
        self.write(|tx| {
            ensure_app(tx, app)?;
            let version: u64 = tx.query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app = ?1",
                [app],
                |row| row.get(0),
            )?;
            let created_at = now_rfc3339();
            let processes_json = to_json(&new.processes);
            let env_json = to_json(&new.env);
            let secrets_json = to_json(&new.secrets);
            tx.execute(
                "INSERT INTO releases (app, version, status, cause, slug, spec_json, processes_json, env_json, secrets_json, created_at)
                 VALUES (?1, ?2, 'deploying', ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![app, version, new.cause, new.slug, new.spec_json, processes_json, env_json, secrets_json, created_at],
            )?;
            insert_event(
                tx,
                app,
                &EventKind::DeployStarted,
                &format!("deploying v{version} ({})", new.cause),
            )?;
            Ok(ReleaseRow {
                app: app.to_string(),
                version,
                status: ReleaseStatus::Deploying,
                cause: new.cause,
                slug: new.slug,
                spec_json: new.spec_json,
                processes: new.processes,
                env: new.env,
                secrets: new.secrets,
                created_at,
            })
        })
    }

    /// Marks `version` active (the one before it superseded) and makes its env
    /// the app's env.
    pub fn finish_release(&self, app: &str, version: u64) -> Result<()> {
        self.write(|tx| {
            let (env_json, secrets_json): (String, String) = tx
                .query_row(
                    "SELECT env_json, secrets_json FROM releases WHERE app = ?1 AND version = ?2",
                    params![app, version],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("release v{version} of `{app}`")))?;
            tx.execute(
                "UPDATE releases SET status = 'superseded' WHERE app = ?1 AND status = 'active'",
                [app],
            )?;
            tx.execute(
                "UPDATE releases SET status = 'active' WHERE app = ?1 AND version = ?2",
                params![app, version],
            )?;
            let env: BTreeMap<String, String> = from_json("release env", &env_json)?;
            tx.execute("DELETE FROM env WHERE app = ?1", [app])?;
            for (key, value) in &env {
                tx.execute(
                    "INSERT INTO env (app, key, value) VALUES (?1, ?2, ?3)",
                    params![app, key, value],
                )?;
            }
            let secrets: BTreeMap<String, SealedSecret> =
                from_json("release secrets", &secrets_json)?;
            replace_secrets(tx, app, &secrets)?;
            insert_event(
                tx,
                app,
                &EventKind::DeploySucceeded,
                &format!("v{version} is live"),
            )?;
            Ok(())
        })
    }

    /// Marks `version` failed and points the app back at the release that was
    /// active before it (if any), recording why.
    pub fn fail_release(&self, app: &str, version: u64, reason: &str) -> Result<Option<u64>> {
        self.write(|tx| {
            tx.execute(
                "UPDATE releases SET status = 'failed' WHERE app = ?1 AND version = ?2",
                params![app, version],
            )?;
            let previous: Option<u64> = tx
                .query_row(
                    "SELECT version FROM releases WHERE app = ?1 AND status = 'active' ORDER BY version DESC LIMIT 1",
                    [app],
                    |row| row.get(0),
                )
                .optional()?;
            tx.execute(
                "UPDATE apps SET target_release = ?2 WHERE name = ?1 AND target_release = ?3",
                params![app, previous, version],
            )?;
            let message = match previous {
                Some(previous) => format!("v{version} failed, v{previous} keeps serving: {reason}"),
                None => format!("v{version} failed: {reason}"),
            };
            insert_event(tx, app, &EventKind::DeployFailed, &message)?;
            Ok(previous)
        })
    }

    /// One release.
    pub fn release(&self, app: &str, version: u64) -> Result<ReleaseRow> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("{RELEASE_COLUMNS} WHERE app = ?1 AND version = ?2"),
                params![app, version],
                raw_release,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("release v{version} of app `{app}`")))?;
        release_from_raw(row)
    }

    /// The release of an app that serves now (status `active`), if any.
    pub fn active_release(&self, app: &str) -> Result<Option<ReleaseRow>> {
        let conn = self.conn();
        ensure_app(&conn, app)?;
        conn.query_row(
            &format!("{RELEASE_COLUMNS} WHERE app = ?1 AND status = 'active' ORDER BY version DESC LIMIT 1"),
            [app],
            raw_release,
        )
        .optional()?
        .map(release_from_raw)
        .transpose()
    }

    /// Every release of an app, newest first.
    pub fn releases(&self, app: &str) -> Result<Vec<ReleaseRow>> {
        let conn = self.conn();
        ensure_app(&conn, app)?;
        let mut stmt = conn.prepare_cached(&format!(
            "{RELEASE_COLUMNS} WHERE app = ?1 ORDER BY version DESC"
        ))?;
        let rows = stmt.query_map([app], raw_release)?;
        rows.map(|row| release_from_raw(row?)).collect()
    }

    /// The app's env vars as set with `berth env`.
    pub fn env(&self, app: &str) -> Result<BTreeMap<String, String>> {
        let conn = self.conn();
        ensure_app(&conn, app)?;
        let mut stmt =
            conn.prepare_cached("SELECT key, value FROM env WHERE app = ?1 ORDER BY key")?;
        let rows = stmt.query_map([app], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces the app's env vars (used before its first release; later,
    /// env changes go through a release).
    pub fn set_env(&self, app: &str, env: &BTreeMap<String, String>, cause: &str) -> Result<()> {
        self.write(|tx| {
            ensure_app(tx, app)?;
            tx.execute("DELETE FROM env WHERE app = ?1", [app])?;
            for (key, value) in env {
                tx.execute(
                    "INSERT INTO env (app, key, value) VALUES (?1, ?2, ?3)",
                    params![app, key, value],
                )?;
            }
            insert_event(tx, app, &EventKind::EnvChanged, cause)?;
            Ok(())
        })
    }

    /// The user id `app`'s instances run as: allocated once, from
    /// [`FIRST_APP_UID`] up, never reused while the app exists.
    pub fn app_uid(&self, app: &str) -> Result<u32> {
        // Read first: an instance start should not wait for a disk write.
        {
            let conn = self.conn();
            let uid: Option<Option<u32>> = conn
                .prepare_cached("SELECT uid FROM apps WHERE name = ?1")?
                .query_row([app], |row| row.get(0))
                .optional()?;
            if let Some(Some(uid)) = uid {
                return Ok(uid);
            }
        }
        self.write(|tx| {
            let uid: Option<u32> = tx
                .query_row("SELECT uid FROM apps WHERE name = ?1", [app], |row| {
                    row.get(0)
                })
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("app `{app}`")))?;
            if let Some(uid) = uid {
                return Ok(uid);
            }
            let next: u32 = tx.query_row(
                "SELECT COALESCE(MAX(uid) + 1, ?1) FROM apps",
                [FIRST_APP_UID],
                |row| row.get(0),
            )?;
            tx.execute(
                "UPDATE apps SET uid = ?2 WHERE name = ?1",
                params![app, next],
            )?;
            Ok(next)
        })
    }

    /// The app's secrets as sealed (the ones its next release gets).
    pub fn secrets(&self, app: &str) -> Result<BTreeMap<String, SealedSecret>> {
        let conn = self.conn();
        ensure_app(&conn, app)?;
        let mut stmt = conn.prepare_cached(
            "SELECT name, sealed, digest FROM secrets WHERE app = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map([app], |row| {
            Ok((
                row.get(0)?,
                SealedSecret {
                    sealed: row.get(1)?,
                    digest: row.get(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The app's secrets as listed: names, digests, when each changed.
    pub fn secret_list(&self, app: &str) -> Result<Vec<SecretRow>> {
        let conn = self.conn();
        ensure_app(&conn, app)?;
        let mut stmt = conn
            .prepare("SELECT name, digest, updated_at FROM secrets WHERE app = ?1 ORDER BY name")?;
        let rows = stmt.query_map([app], |row| {
            Ok(SecretRow {
                name: row.get(0)?,
                digest: row.get(1)?,
                updated_at: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces the app's secrets (used before its first release; later,
    /// secret changes go through a release).
    pub fn set_secrets(
        &self,
        app: &str,
        secrets: &BTreeMap<String, SealedSecret>,
        cause: &str,
    ) -> Result<()> {
        self.write(|tx| {
            ensure_app(tx, app)?;
            replace_secrets(tx, app, secrets)?;
            insert_event(tx, app, &EventKind::SecretsChanged, cause)?;
            Ok(())
        })
    }

    /// The app's resource of `kind`, if it has one.
    pub fn resource(&self, app: &str, kind: &str) -> Result<Option<ResourceRow>> {
        let conn = self.conn();
        Ok(conn
            .prepare_cached(&format!("{RESOURCE_COLUMNS} WHERE app = ?1 AND kind = ?2"))?
            .query_row(params![app, kind], resource_from_row)
            .optional()?)
    }

    /// Every resource of every app (what the server brings up at start).
    pub fn all_resources(&self) -> Result<Vec<ResourceRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{RESOURCE_COLUMNS} ORDER BY app, kind"))?;
        let rows = stmt.query_map([], resource_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a resource, recording the event `message`.
    pub fn put_resource(&self, row: &ResourceRow, message: &str) -> Result<()> {
        self.write(|tx| {
            ensure_app(tx, &row.app)?;
            tx.execute(
                "INSERT OR REPLACE INTO resources (app, kind, name, sealed_password, port, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![row.app, row.kind, row.name, row.sealed_password, row.port, row.created_at],
            )?;
            insert_event(tx, &row.app, &EventKind::from(format!("{}.attached", row.kind).as_str()), message)?;
            Ok(())
        })
    }

    /// Changes the port a resource listens on.
    pub fn set_resource_port(&self, app: &str, kind: &str, port: u16) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE resources SET port = ?3 WHERE app = ?1 AND kind = ?2",
                params![app, kind, port],
            )?;
            Ok(())
        })
    }

    /// Forgets a resource (after it was dropped).
    pub fn delete_resource(&self, app: &str, kind: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM resources WHERE app = ?1 AND kind = ?2",
                params![app, kind],
            )?;
            Ok(())
        })
    }

    /// How each process group of `app` is scaled.
    pub fn scaling(&self, app: &str) -> Result<BTreeMap<String, GroupScaling>> {
        let conn = self.conn();
        ensure_app(&conn, app)?;
        let mut stmt = conn.prepare_cached(
            "SELECT name, desired, scaled, scale_min, scale_max, scale_reason FROM process_groups WHERE app = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map([app], |row| {
            Ok((
                row.get::<_, String>(0)?,
                GroupScaling {
                    manual: row.get(1)?,
                    scaled: row.get(2)?,
                    min: row.get(3)?,
                    max: row.get(4)?,
                    reason: row.get(5)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Sets the autoscaler's count for a group (`None` hands it back to the
    /// manual count), with the reason, recording the event of that kind
    /// (`None`: whoever acted on it recorded it).
    pub fn set_scaled(
        &self,
        app: &str,
        group: &str,
        count: Option<u32>,
        reason: &str,
        event: Option<EventKind>,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE process_groups SET scaled = ?3, scale_reason = ?4 WHERE app = ?1 AND name = ?2",
                params![app, group, count, reason],
            )?;
            if let Some(kind) = event {
                insert_event(tx, app, &kind, &format!("{group}: {reason}"))?;
            }
            Ok(())
        })
    }

    /// Sets a group's autoscaling bounds (`None` leaves one to the spec).
    pub fn set_scale_bounds(
        &self,
        app: &str,
        group: &str,
        min: Option<u32>,
        max: Option<u32>,
    ) -> Result<()> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE process_groups SET scale_min = COALESCE(?3, scale_min), scale_max = COALESCE(?4, scale_max) WHERE app = ?1 AND name = ?2",
                params![app, group, min, max],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!(
                    "process group `{group}` of app `{app}`"
                )));
            }
            let mut bounds = Vec::new();
            if let Some(min) = min {
                bounds.push(format!("min {min}"));
            }
            if let Some(max) = max {
                bounds.push(format!("max {max}"));
            }
            insert_event(
                tx,
                app,
                &EventKind::Scale,
                &format!("{group}: autoscaling bounds {}", bounds.join(", ")),
            )?;
            Ok(())
        })
    }

    /// Desired counts per process group.
    pub fn counts(&self, app: &str) -> Result<BTreeMap<String, u32>> {
        let conn = self.conn();
        ensure_app(&conn, app)?;
        counts(&conn, app)
    }

    /// Sets desired counts; every named group must exist in the target release.
    pub fn set_counts(&self, app: &str, counts: &BTreeMap<String, u32>) -> Result<()> {
        self.write(|tx| {
            ensure_app(tx, app)?;
            let known = self::counts(tx, app)?;
            for name in counts.keys() {
                if !known.contains_key(name) {
                    let groups: Vec<&str> = known.keys().map(String::as_str).collect();
                    return Err(StoreError::NotFound(format!(
                        "process group `{name}` of app `{app}` (it has: {})",
                        if groups.is_empty() {
                            "none yet; deploy first".to_string()
                        } else {
                            groups.join(", ")
                        }
                    )));
                }
            }
            let mut changes = Vec::new();
            for (name, desired) in counts {
                tx.execute(
                    "UPDATE process_groups SET desired = ?3, scaled = NULL, scale_reason = 'manual' WHERE app = ?1 AND name = ?2",
                    params![app, name, desired],
                )?;
                changes.push(format!("{name}={desired}"));
            }
            insert_event(
                tx,
                app,
                &EventKind::Scale,
                &format!("scaled {} (manual)", changes.join(" ")),
            )?;
            Ok(())
        })
    }

    /// Appends events in one transaction: (app, kind, message) each.
    pub fn record_events(&self, events: &[(String, EventKind, String)]) -> Result<()> {
        self.write(|tx| {
            for (app, kind, message) in events {
                insert_event(tx, app, kind, message)?;
            }
            Ok(())
        })
    }

    /// Records one event.
    pub fn record_event(&self, app: &str, kind: EventKind, message: &str) -> Result<i64> {
        self.write(|tx| insert_event(tx, app, &kind, message))
    }

    /// Events of `app` with id above `after`, oldest first, at most `limit`
    /// (the newest `limit` when `after` is 0).
    pub fn events(&self, app: &str, after: i64, limit: u32) -> Result<Vec<EventRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, app, kind, message FROM (
               SELECT * FROM events WHERE app = ?1 AND id > ?2 ORDER BY id DESC LIMIT ?3
             ) ORDER BY id",
        )?;
        let rows = stmt.query_map(params![app, after, limit], |row| {
            Ok(EventRow {
                id: row.get(0)?,
                at: row.get(1)?,
                app: row.get(2)?,
                kind: row.get(3)?,
                message: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// What every app should run: its target release and counts.
    pub fn desired(&self) -> Result<Vec<DesiredApp>> {
        let apps = self.apps()?;
        let mut desired = Vec::with_capacity(apps.len());
        for app in apps {
            let release = match app.target_release {
                Some(version) => Some(self.release(&app.name, version)?),
                None => None,
            };
            let counts = {
                let conn = self.conn();
                counts(&conn, &app.name)?
            };
            desired.push(DesiredApp {
                app: app.name,
                release,
                counts,
            });
        }
        Ok(desired)
    }

    /// Journals a started instance.
    pub fn journal_instance(&self, id: &str, app: &str, pid: u32) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO instance_journal (id, app, pid) VALUES (?1, ?2, ?3)",
                params![id, app, pid],
            )?;
            Ok(())
        })
    }

    /// Forgets an instance that exited.
    pub fn forget_instance(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM instance_journal WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    /// Every journaled instance.
    pub fn journaled_instances(&self) -> Result<Vec<InstanceJournalRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT id, app, pid FROM instance_journal")?;
        let rows = stmt.query_map([], |row| {
            Ok(InstanceJournalRow {
                id: row.get(0)?,
                app: row.get(1)?,
                pid: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

const RELEASE_COLUMNS: &str = "SELECT app, version, status, cause, slug, spec_json, processes_json, env_json, created_at, secrets_json FROM releases";

const RESOURCE_COLUMNS: &str =
    "SELECT app, kind, name, sealed_password, port, created_at FROM resources";

fn resource_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ResourceRow> {
    Ok(ResourceRow {
        app: row.get(0)?,
        kind: row.get(1)?,
        name: row.get(2)?,
        sealed_password: row.get(3)?,
        port: row.get(4)?,
        created_at: row.get(5)?,
    })
}

/// Makes the app's secrets table hold exactly `secrets`, keeping the time a
/// secret last changed when its value did not.
fn replace_secrets(
    tx: &Connection,
    app: &str,
    secrets: &BTreeMap<String, SealedSecret>,
) -> Result<()> {
    let now = now_rfc3339();
    let existing: BTreeMap<String, String> = {
        let mut stmt = tx.prepare("SELECT name, digest FROM secrets WHERE app = ?1")?;
        let rows = stmt.query_map([app], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for name in existing.keys() {
        if !secrets.contains_key(name) {
            tx.execute(
                "DELETE FROM secrets WHERE app = ?1 AND name = ?2",
                params![app, name],
            )?;
        }
    }
    for (name, secret) in secrets {
        if existing.get(name) == Some(&secret.digest) {
            tx.execute(
                "UPDATE secrets SET sealed = ?3 WHERE app = ?1 AND name = ?2",
                params![app, name, secret.sealed],
            )?;
        } else {
            tx.execute(
                "INSERT OR REPLACE INTO secrets (app, name, sealed, digest, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![app, name, secret.sealed, secret.digest, now],
            )?;
        }
    }
    Ok(())
}

type RawRelease = (
    String,
    u64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

fn raw_release(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRelease> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
    ))
}

fn release_from_raw(raw: RawRelease) -> Result<ReleaseRow> {
    let (
        app,
        version,
        status,
        cause,
        slug,
        spec_json,
        processes_json,
        env_json,
        created_at,
        secrets_json,
    ) = raw;
    Ok(ReleaseRow {
        processes: from_json("release processes", &processes_json)?,
        env: from_json("release env", &env_json)?,
        secrets: from_json("release secrets", &secrets_json)?,
        app,
        version,
        status: ReleaseStatus::from(status.as_str()),
        cause,
        slug,
        spec_json,
        created_at,
    })
}

fn app_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AppRow> {
    Ok(AppRow {
        name: row.get(0)?,
        created_at: row.get(1)?,
        target_release: row.get(2)?,
    })
}

fn ensure_app(conn: &Connection, app: &str) -> Result<()> {
    conn.query_row("SELECT 1 FROM apps WHERE name = ?1", [app], |_| Ok(()))
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("app `{app}`")))
}

/// Effective desired counts: the autoscaler's while it has set one, else the manual one.
fn counts(conn: &Connection, app: &str) -> Result<BTreeMap<String, u32>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, COALESCE(scaled, desired) FROM process_groups WHERE app = ?1 ORDER BY name",
    )?;
    let rows = stmt.query_map([app], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn insert_event(tx: &Connection, app: &str, kind: &EventKind, message: &str) -> Result<i64> {
    tx.execute(
        "INSERT INTO events (at, app, kind, message) VALUES (?1, ?2, ?3, ?4)",
        params![now_rfc3339(), app, kind.as_str(), message],
    )?;
    Ok(tx.last_insert_rowid())
}

fn to_json<T: serde::Serialize>(value: &BTreeMap<String, T>) -> String {
    // Maps with string keys of plain structs always serialise.
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        what: what.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests;
