//! The append-only event log and the instance journal.

use rusqlite::params;

use crate::*;

impl Store {
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
                kind: EventKind::from(row.get::<_, String>(3)?.as_str()),
                message: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
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
