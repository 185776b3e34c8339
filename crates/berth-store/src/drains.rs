//! Log drains (`berth logs drain add`): where each delivers, and how far.

use rusqlite::{OptionalExtension, params};

use crate::*;

/// A stored drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainRow {
    /// Its id.
    pub id: i64,
    /// The app whose lines it gets.
    pub app: String,
    /// Where they go.
    pub url: String,
    /// A CA certificate (PEM) to trust beside the system's roots.
    pub ca_pem: Option<String>,
    /// Lines it may fall behind before its oldest are dropped.
    pub buffer_lines: u64,
    /// The id (in the log store) of the last line it delivered or dropped.
    pub cursor: i64,
    /// Lines delivered.
    pub delivered: u64,
    /// Lines dropped.
    pub dropped: u64,
    /// Why its last delivery failed, while it fails.
    pub last_error: Option<String>,
    /// When it was added.
    pub created_at: String,
}

/// How far a drain got in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainProgress {
    /// The new cursor.
    pub cursor: i64,
    /// Lines delivered since the last progress.
    pub delivered: u64,
    /// Lines dropped since the last progress.
    pub dropped: u64,
    /// The failure now, or `None` once it delivers again.
    pub last_error: Option<String>,
}

const DRAIN_COLUMNS: &str = "SELECT id, app, url, ca_pem, buffer_lines, cursor, delivered, dropped, last_error, created_at FROM log_drains";

fn drain_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DrainRow> {
    Ok(DrainRow {
        id: row.get(0)?,
        app: row.get(1)?,
        url: row.get(2)?,
        ca_pem: row.get(3)?,
        buffer_lines: row.get::<_, i64>(4)?.max(0) as u64,
        cursor: row.get(5)?,
        delivered: row.get::<_, i64>(6)?.max(0) as u64,
        dropped: row.get::<_, i64>(7)?.max(0) as u64,
        last_error: row.get(8)?,
        created_at: row.get(9)?,
    })
}

/// The most drains one app may have.
pub const MAX_DRAINS_PER_APP: usize = 10;

impl Store {
    /// Adds a drain for `app` that starts after log line `cursor`.
    pub fn add_drain(
        &self,
        app: &str,
        url: &str,
        ca_pem: Option<&str>,
        buffer_lines: u64,
        cursor: i64,
    ) -> Result<DrainRow> {
        let id = self.write(|tx| {
            ensure_app(tx, app)?;
            let count: i64 = tx.query_row(
                "SELECT COUNT(*) FROM log_drains WHERE app = ?1",
                [app],
                |row| row.get(0),
            )?;
            if count as usize >= MAX_DRAINS_PER_APP {
                return Err(StoreError::Conflict(format!(
                    "{app} has {MAX_DRAINS_PER_APP} drains, the most an app may have"
                )));
            }
            let same: Option<i64> = tx
                .query_row(
                    "SELECT id FROM log_drains WHERE app = ?1 AND url = ?2",
                    params![app, url],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(same) = same {
                return Err(StoreError::Conflict(format!(
                    "{app} drains to {url} already (drain {same})"
                )));
            }
            tx.execute(
                "INSERT INTO log_drains (app, url, ca_pem, buffer_lines, cursor, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![app, url, ca_pem, buffer_lines as i64, cursor, now_rfc3339()],
            )?;
            Ok(tx.last_insert_rowid())
        })?;
        self.drain(id)
    }

    /// One drain.
    pub fn drain(&self, id: i64) -> Result<DrainRow> {
        let conn = self.conn();
        conn.query_row(&format!("{DRAIN_COLUMNS} WHERE id = ?1"), [id], drain_row)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("drain {id}")))
    }

    /// The drains of `app`, or of every app.
    pub fn drains(&self, app: Option<&str>) -> Result<Vec<DrainRow>> {
        let conn = self.conn();
        if let Some(app) = app {
            ensure_app(&conn, app)?;
        }
        let mut stmt = conn.prepare(&format!(
            "{DRAIN_COLUMNS} WHERE ?1 IS NULL OR app = ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([app], drain_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Removes drain `id` of `app`.
    pub fn remove_drain(&self, app: &str, id: i64) -> Result<()> {
        self.write(|tx| {
            ensure_app(tx, app)?;
            let removed = tx.execute(
                "DELETE FROM log_drains WHERE app = ?1 AND id = ?2",
                params![app, id],
            )?;
            if removed == 0 {
                return Err(StoreError::NotFound(format!("drain {id} of {app}")));
            }
            Ok(())
        })
    }

    /// Records how far drain `id` got. A drain removed meanwhile is not an error.
    pub fn record_drain_progress(&self, id: i64, progress: &DrainProgress) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE log_drains SET cursor = MAX(cursor, ?2), delivered = delivered + ?3, dropped = dropped + ?4, last_error = ?5 WHERE id = ?1",
                params![
                    id,
                    progress.cursor,
                    progress.delivered as i64,
                    progress.dropped as i64,
                    progress.last_error
                ],
            )?;
            Ok(())
        })
    }
}
