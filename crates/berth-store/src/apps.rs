//! Apps, their uids and their env.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};

use crate::*;

impl Store {
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
            tx.execute("DELETE FROM domains WHERE app = ?1", [name])?;
            tx.execute("DELETE FROM edge_rules WHERE app = ?1", [name])?;
            tx.execute("DELETE FROM log_drains WHERE app = ?1", [name])?;
            tx.execute("DELETE FROM budgets WHERE app = ?1", [name])?;
            tx.execute("DELETE FROM budget_state WHERE app = ?1", [name])?;
            tx.execute("DELETE FROM usage WHERE app = ?1", [name])?;
            // A new app of the same name starts with no history.
            tx.execute("DELETE FROM events WHERE app = ?1", [name])?;
            if deleted == 0 {
                return Err(StoreError::NotFound(format!("app `{name}`")));
            }
            Ok(())
        })
    }

    /// The user id `app`'s instances run as: taken once from `allocate`
    /// (the host's registry, which never hands one out twice) and kept.
    pub fn app_uid(
        &self,
        app: &str,
        allocate: impl FnOnce() -> std::io::Result<u32>,
    ) -> Result<u32> {
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
            let next = allocate().map_err(StoreError::Allocation)?;
            tx.execute(
                "UPDATE apps SET uid = ?2 WHERE name = ?1",
                params![app, next],
            )?;
            Ok(next)
        })
    }

    /// The user id `app` was given, if it has one yet.
    pub fn uid_of(&self, app: &str) -> Result<Option<u32>> {
        let conn = self.conn();
        let uid: Option<Option<u32>> = conn
            .prepare_cached("SELECT uid FROM apps WHERE name = ?1")?
            .query_row([app], |row| row.get(0))
            .optional()?;
        uid.ok_or_else(|| StoreError::NotFound(format!("app `{app}`")))
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
}
