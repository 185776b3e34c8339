//! Releases: begun, targeted, finished or failed; the active one.

use std::collections::{BTreeMap, HashSet};

use rusqlite::{OptionalExtension, params};

use crate::*;

impl Store {
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

    /// The slugs to keep: every app's target, releases being deployed, and
    /// the newest `rollback_depth` releases of each app that did not fail
    /// (what a rollback can go back to). Any other slug may be deleted.
    pub fn slugs_in_use(&self, rollback_depth: u32) -> Result<HashSet<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT slug FROM releases WHERE status = ?1
             UNION SELECT r.slug FROM releases r JOIN apps a ON a.name = r.app AND a.target_release = r.version
             UNION SELECT slug FROM (
                 SELECT slug, ROW_NUMBER() OVER (PARTITION BY app ORDER BY version DESC) AS n
                 FROM releases WHERE status != ?2
             ) WHERE n <= ?3",
        )?;
        let slugs = stmt
            .query_map(
                params![
                    ReleaseStatus::Deploying.as_str(),
                    ReleaseStatus::Failed.as_str(),
                    rollback_depth
                ],
                |row| row.get::<_, String>(0),
            )?
            .collect::<rusqlite::Result<HashSet<String>>>()?;
        Ok(slugs)
    }
}
