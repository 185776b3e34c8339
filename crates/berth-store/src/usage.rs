//! Metered usage: the meter adds each minute's counts once, into the
//! minute's, the hour's and the day's rows together, so reading a month
//! never sums minutes. Minutes are kept 2 days (the spike check and
//! `berth usage --by minute` look back an hour or a day); hours and days
//! 13 months.

use berth_proto::UsageRow;
use rusqlite::params;

use crate::*;

/// The resolutions rows are kept at, with their length in seconds and how
/// long they are kept.
pub const RESOLUTIONS: [(&str, u64, u64); 3] = [
    ("minute", 60, 2 * 86_400),
    ("hour", 3_600, 400 * 86_400),
    ("day", 86_400, 400 * 86_400),
];

/// The length of a resolution's period, if it is one.
pub fn resolution_seconds(resolution: &str) -> Option<u64> {
    RESOLUTIONS
        .iter()
        .find(|(name, _, _)| *name == resolution)
        .map(|(_, seconds, _)| *seconds)
}

const USAGE_COLUMNS: &str = "app, process, at, cpus, memory_mb, instance_seconds, busy_seconds, cpu_seconds, memory_peak, memory_byte_seconds, requests, bytes_in, bytes_out, egress_bytes, build_seconds, job_seconds, volume_bytes, database_bytes, backup_bytes";

fn usage_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UsageRow> {
    let instance_seconds: f64 = row.get(5)?;
    let byte_seconds: f64 = row.get(9)?;
    let count =
        |index: usize| -> rusqlite::Result<u64> { Ok(row.get::<_, i64>(index)?.max(0) as u64) };
    Ok(UsageRow {
        app: row.get(0)?,
        process: row.get(1)?,
        at: count(2)?,
        cpus: row.get(3)?,
        memory_mb: row.get(4)?,
        instance_seconds,
        busy_seconds: row.get(6)?,
        cpu_seconds: row.get(7)?,
        memory_peak_bytes: count(8)?,
        memory_avg_bytes: if instance_seconds > 0.0 {
            (byte_seconds / instance_seconds) as u64
        } else {
            0
        },
        requests: count(10)?,
        bytes_in: count(11)?,
        bytes_out: count(12)?,
        egress_bytes: count(13)?,
        build_seconds: row.get(14)?,
        job_seconds: row.get(15)?,
        volume_bytes: count(16)?,
        database_bytes: count(17)?,
        backup_bytes: count(18)?,
    })
}

impl Store {
    /// Adds one flush of the meter (each row's `at` is ignored: the rows
    /// are of the minute holding unix second `at`), in one transaction.
    pub fn add_usage(&self, at: u64, rows: &[UsageRow]) -> Result<()> {
        self.write(|tx| {
            let mut insert = tx.prepare_cached(
                "INSERT INTO usage (resolution, at, app, process, cpus, memory_mb, instance_seconds, busy_seconds, cpu_seconds, memory_peak, memory_byte_seconds, requests, bytes_in, bytes_out, egress_bytes, build_seconds, job_seconds, volume_bytes, database_bytes, backup_bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)
                 ON CONFLICT (resolution, at, app, process, cpus, memory_mb) DO UPDATE SET
                    instance_seconds = instance_seconds + excluded.instance_seconds,
                    busy_seconds = busy_seconds + excluded.busy_seconds,
                    cpu_seconds = cpu_seconds + excluded.cpu_seconds,
                    memory_peak = MAX(memory_peak, excluded.memory_peak),
                    memory_byte_seconds = memory_byte_seconds + excluded.memory_byte_seconds,
                    requests = requests + excluded.requests,
                    bytes_in = bytes_in + excluded.bytes_in,
                    bytes_out = bytes_out + excluded.bytes_out,
                    egress_bytes = egress_bytes + excluded.egress_bytes,
                    build_seconds = build_seconds + excluded.build_seconds,
                    job_seconds = job_seconds + excluded.job_seconds,
                    volume_bytes = MAX(volume_bytes, excluded.volume_bytes),
                    database_bytes = MAX(database_bytes, excluded.database_bytes),
                    backup_bytes = MAX(backup_bytes, excluded.backup_bytes)",
            )?;
            for row in rows {
                for (resolution, seconds, _) in RESOLUTIONS {
                    insert.execute(params![
                        resolution,
                        (at - at % seconds) as i64,
                        row.app,
                        row.process,
                        row.cpus,
                        row.memory_mb,
                        row.instance_seconds,
                        row.busy_seconds,
                        row.cpu_seconds,
                        row.memory_peak_bytes as i64,
                        row.memory_avg_bytes as f64 * row.instance_seconds,
                        row.requests as i64,
                        row.bytes_in as i64,
                        row.bytes_out as i64,
                        row.egress_bytes as i64,
                        row.build_seconds,
                        row.job_seconds,
                        row.volume_bytes as i64,
                        row.database_bytes as i64,
                        row.backup_bytes as i64,
                    ])?;
                }
            }
            Ok(())
        })
    }

    /// Rows at `resolution` from `since` to `until` (unix seconds, the
    /// periods starting in that span), of `app` or of every app, oldest
    /// first.
    pub fn usage(
        &self,
        app: Option<&str>,
        resolution: &str,
        since: u64,
        until: u64,
    ) -> Result<Vec<UsageRow>> {
        let conn = self.conn();
        // Two statements, so the per-app one uses the (app, resolution, at)
        // index.
        let rows = match app {
            Some(app) => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {USAGE_COLUMNS} FROM usage WHERE app = ?4 AND resolution = ?1 AND at >= ?2 AND at <= ?3 ORDER BY at, process, cpus, memory_mb"
                ))?;
                stmt.query_map(
                    params![resolution, since as i64, until as i64, app],
                    usage_row,
                )?
                .collect::<Result<Vec<_>, _>>()?
            }
            None => {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {USAGE_COLUMNS} FROM usage WHERE resolution = ?1 AND at >= ?2 AND at <= ?3 ORDER BY at, app, process, cpus, memory_mb"
                ))?;
                stmt.query_map(params![resolution, since as i64, until as i64], usage_row)?
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        Ok(rows)
    }

    /// Deletes rows past their resolution's keeping; returns how many.
    pub fn prune_usage(&self, now: u64) -> Result<usize> {
        self.write(|tx| {
            let mut deleted = 0;
            for (resolution, _, keep) in RESOLUTIONS {
                deleted += tx.execute(
                    "DELETE FROM usage WHERE resolution = ?1 AND at < ?2",
                    params![resolution, now.saturating_sub(keep) as i64],
                )?;
            }
            Ok(deleted)
        })
    }
}
