//! Counts for `/metrics`: job executions and releases by outcome.

use crate::*;

/// How many of something an app has in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeCount {
    /// The app.
    pub app: String,
    /// The job, for executions; empty for releases.
    pub name: String,
    /// The state (`succeeded`, `failed`, `active`, …).
    pub status: String,
    /// How many.
    pub count: u64,
}

impl Store {
    /// Job executions by app, job and status.
    pub fn execution_counts(&self) -> Result<Vec<OutcomeCount>> {
        self.outcome_counts(
            "SELECT app, job, status, COUNT(*) FROM job_executions GROUP BY app, job, status ORDER BY app, job, status",
        )
    }

    /// Releases by app and status (`active`, `superseded`, `failed`, …).
    pub fn release_counts(&self) -> Result<Vec<OutcomeCount>> {
        self.outcome_counts(
            "SELECT app, '', status, COUNT(*) FROM releases GROUP BY app, status ORDER BY app, status",
        )
    }

    fn outcome_counts(&self, sql: &str) -> Result<Vec<OutcomeCount>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map([], |row| {
            Ok(OutcomeCount {
                app: row.get(0)?,
                name: row.get(1)?,
                status: row.get(2)?,
                count: row.get::<_, i64>(3)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
