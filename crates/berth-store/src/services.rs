//! Sealed secrets and the managed resources (databases, Redis, volumes)
//! of each app.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};

use crate::*;

impl Store {
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
    pub fn resource(&self, app: &str, kind: &ResourceKind) -> Result<Option<ResourceRow>> {
        let conn = self.conn();
        Ok(conn
            .prepare_cached(&format!("{RESOURCE_COLUMNS} WHERE app = ?1 AND kind = ?2"))?
            .query_row(params![app, kind.as_str()], resource_from_row)
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
                params![row.app, row.kind.as_str(), row.name, row.sealed_password, row.port, row.created_at],
            )?;
            insert_event(tx, &row.app, &row.kind.attached(), message)?;
            Ok(())
        })
    }

    /// Changes the port a resource listens on.
    pub fn set_resource_port(&self, app: &str, kind: &ResourceKind, port: u16) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE resources SET port = ?3 WHERE app = ?1 AND kind = ?2",
                params![app, kind.as_str(), port],
            )?;
            Ok(())
        })
    }

    /// Forgets a resource (after it was dropped).
    pub fn delete_resource(&self, app: &str, kind: &ResourceKind) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM resources WHERE app = ?1 AND kind = ?2",
                params![app, kind.as_str()],
            )?;
            Ok(())
        })
    }
}
