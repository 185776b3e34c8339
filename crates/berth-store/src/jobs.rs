//! Job executions and task attempts: what ran, when, and how it ended.

use rusqlite::{OptionalExtension, params};

use crate::{EventKind, Result, Store, StoreError, insert_event, now_rfc3339};
use berth_proto::Trigger;

/// An execution as stored, with its tasks' outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionRow {
    /// Increasing id, unique on the server.
    pub id: i64,
    /// The app.
    pub app: String,
    /// The job.
    pub job: String,
    /// The release it ran.
    pub release: u64,
    /// `manual`, `api` or `schedule`.
    pub trigger: Trigger,
    /// `running`, `succeeded`, `failed`, `cancelled` or `interrupted`.
    pub status: String,
    /// Tasks in the execution.
    pub tasks: u32,
    /// Tasks at once.
    pub parallelism: u32,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339, when it ended.
    pub finished_at: Option<String>,
    /// Why it ended the way it did.
    pub message: Option<String>,
    /// Every task attempt, by task then attempt.
    pub attempts: Vec<TaskAttemptRow>,
}

/// One attempt of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskAttemptRow {
    /// The task's index, from 0.
    pub task_index: u32,
    /// The attempt, from 0.
    pub attempt: u32,
    /// `running`, `succeeded`, `failed`, `cancelled` or `interrupted`.
    pub status: String,
    /// Its exit code, when it exited with one.
    pub exit_code: Option<i32>,
    /// Why it failed, for a person.
    pub reason: Option<String>,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: Option<String>,
}

impl ExecutionRow {
    /// Tasks whose last attempt succeeded.
    pub fn succeeded(&self) -> u32 {
        self.last_attempts()
            .filter(|attempt| attempt.status == "succeeded")
            .count() as u32
    }

    /// Tasks whose last attempt failed (and will not be retried).
    pub fn failed(&self) -> u32 {
        if self.status == "running" {
            return 0;
        }
        self.last_attempts()
            .filter(|attempt| attempt.status != "succeeded")
            .count() as u32
    }

    /// The last attempt of each task.
    pub fn last_attempts(&self) -> impl Iterator<Item = &TaskAttemptRow> {
        self.attempts
            .iter()
            .enumerate()
            .filter_map(|(index, attempt)| {
                let next_is_same_task = self
                    .attempts
                    .get(index + 1)
                    .is_some_and(|next| next.task_index == attempt.task_index);
                (!next_is_same_task).then_some(attempt)
            })
    }
}

impl Store {
    /// Records a new execution with status `running`.
    pub fn start_execution(
        &self,
        app: &str,
        job: &str,
        release: u64,
        trigger: &Trigger,
        tasks: u32,
        parallelism: u32,
    ) -> Result<i64> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO job_executions (app, job, release, trigger, status, tasks, parallelism, started_at)
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7)",
                params![app, job, release, trigger.as_str(), tasks, parallelism, now_rfc3339()],
            )?;
            let id = tx.last_insert_rowid();
            insert_event(
                tx,
                app,
                &EventKind::JobStarted,
                &format!("job {job} execution {id} started ({trigger}, {tasks} task(s), v{release})"),
            )?;
            Ok(id)
        })
    }

    /// Records the start of a task attempt.
    pub fn start_task_attempt(&self, execution: i64, task_index: u32, attempt: u32) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO job_task_attempts (execution, task_index, attempt, status, started_at)
                 VALUES (?1, ?2, ?3, 'running', ?4)",
                params![execution, task_index, attempt, now_rfc3339()],
            )?;
            Ok(())
        })
    }

    /// Records how a task attempt ended.
    pub fn finish_task_attempt(
        &self,
        execution: i64,
        task_index: u32,
        attempt: u32,
        status: &str,
        exit_code: Option<i32>,
        reason: Option<&str>,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE job_task_attempts SET status = ?4, exit_code = ?5, reason = ?6, finished_at = ?7
                 WHERE execution = ?1 AND task_index = ?2 AND attempt = ?3",
                params![execution, task_index, attempt, status, exit_code, reason, now_rfc3339()],
            )?;
            Ok(())
        })
    }

    /// Records how an execution ended.
    pub fn finish_execution(&self, id: i64, status: &str, message: &str) -> Result<()> {
        self.write(|tx| {
            let (app, job): (String, String) = tx
                .query_row("SELECT app, job FROM job_executions WHERE id = ?1", [id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("execution {id}")))?;
            tx.execute(
                "UPDATE job_executions SET status = ?2, message = ?3, finished_at = ?4 WHERE id = ?1",
                params![id, status, message, now_rfc3339()],
            )?;
            insert_event(tx, &app, &EventKind::from(format!("job.{status}").as_str()), &format!("job {job} execution {id} {status}: {message}"))?;
            Ok(())
        })
    }

    /// Marks every execution still `running` as `interrupted` (a server
    /// crashed under it); returns their ids.
    pub fn interrupt_running_executions(&self) -> Result<Vec<i64>> {
        self.write(|tx| {
            let mut stmt = tx.prepare("SELECT id, app, job FROM job_executions WHERE status = 'running'")?;
            let running: Vec<(i64, String, String)> = stmt
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect::<Result<_, _>>()?;
            drop(stmt);
            let now = now_rfc3339();
            for (id, app, job) in &running {
                tx.execute(
                    "UPDATE job_task_attempts SET status = 'interrupted', reason = 'the server stopped while it ran', finished_at = ?2
                     WHERE execution = ?1 AND status = 'running'",
                    params![id, now],
                )?;
                tx.execute(
                    "UPDATE job_executions SET status = 'interrupted', message = 'the server stopped while it ran', finished_at = ?2 WHERE id = ?1",
                    params![id, now],
                )?;
                insert_event(tx, app, &EventKind::JobInterrupted, &format!("job {job} execution {id} was interrupted by a server restart"))?;
            }
            Ok(running.into_iter().map(|(id, _, _)| id).collect())
        })
    }

    /// One execution of `app`.
    pub fn execution(&self, app: &str, id: i64) -> Result<ExecutionRow> {
        let conn = self.conn();
        let mut row = conn
            .query_row(
                &format!("{EXECUTION_COLUMNS} WHERE app = ?1 AND id = ?2"),
                params![app, id],
                execution_from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("execution {id} of app `{app}`")))?;
        row.attempts = attempts(&conn, id)?;
        Ok(row)
    }

    /// The newest `limit` executions of a job (or of every job), newest first.
    pub fn executions(
        &self,
        app: &str,
        job: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ExecutionRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{EXECUTION_COLUMNS} WHERE app = ?1 AND (?2 IS NULL OR job = ?2) ORDER BY id DESC LIMIT ?3"
        ))?;
        let mut rows: Vec<ExecutionRow> = stmt
            .query_map(params![app, job, limit], execution_from_row)?
            .collect::<Result<_, _>>()?;
        for row in &mut rows {
            row.attempts = attempts(&conn, row.id)?;
        }
        Ok(rows)
    }

    /// When the schedule of a job last fired (RFC 3339).
    pub fn schedule_last_fired(&self, app: &str, job: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT last_fired FROM job_schedules WHERE app = ?1 AND job = ?2",
                params![app, job],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Records that a job's schedule fired (or was first seen) at `at`.
    pub fn set_schedule_fired(&self, app: &str, job: &str, at: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO job_schedules (app, job, last_fired) VALUES (?1, ?2, ?3)",
                params![app, job, at],
            )?;
            Ok(())
        })
    }
}

const EXECUTION_COLUMNS: &str = "SELECT id, app, job, release, trigger, status, tasks, parallelism, started_at, finished_at, message FROM job_executions";

fn execution_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ExecutionRow> {
    Ok(ExecutionRow {
        id: row.get(0)?,
        app: row.get(1)?,
        job: row.get(2)?,
        release: row.get(3)?,
        trigger: Trigger::from(row.get::<_, String>(4)?.as_str()),
        status: row.get(5)?,
        tasks: row.get(6)?,
        parallelism: row.get(7)?,
        started_at: row.get(8)?,
        finished_at: row.get(9)?,
        message: row.get(10)?,
        attempts: Vec::new(),
    })
}

fn attempts(conn: &rusqlite::Connection, execution: i64) -> Result<Vec<TaskAttemptRow>> {
    let mut stmt = conn.prepare(
        "SELECT task_index, attempt, status, exit_code, reason, started_at, finished_at FROM job_task_attempts
         WHERE execution = ?1 ORDER BY task_index, attempt",
    )?;
    let rows = stmt.query_map([execution], |row| {
        Ok(TaskAttemptRow {
            task_index: row.get(0)?,
            attempt: row.get(1)?,
            status: row.get(2)?,
            exit_code: row.get(3)?,
            reason: row.get(4)?,
            started_at: row.get(5)?,
            finished_at: row.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_keep_their_attempts_and_survive_interruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("berth.db")).unwrap();
        store.create_app("hello").unwrap();
        let id = store
            .start_execution("hello", "nightly", 1, &Trigger::Manual, 2, 2)
            .unwrap();
        store.start_task_attempt(id, 0, 0).unwrap();
        store
            .finish_task_attempt(id, 0, 0, "failed", Some(1), Some("exit code 1"))
            .unwrap();
        store.start_task_attempt(id, 0, 1).unwrap();
        store
            .finish_task_attempt(id, 0, 1, "succeeded", Some(0), None)
            .unwrap();
        store.start_task_attempt(id, 1, 0).unwrap();
        let execution = store.execution("hello", id).unwrap();
        assert_eq!(execution.status, "running");
        assert_eq!(execution.succeeded(), 1);
        assert_eq!(execution.last_attempts().count(), 2);

        assert_eq!(store.interrupt_running_executions().unwrap(), vec![id]);
        let execution = store.execution("hello", id).unwrap();
        assert_eq!(execution.status, "interrupted");
        assert_eq!(execution.attempts[2].status, "interrupted");
        assert_eq!(execution.failed(), 1);
        assert!(store.interrupt_running_executions().unwrap().is_empty());
        assert_eq!(
            store
                .executions("hello", Some("nightly"), 10)
                .unwrap()
                .len(),
            1
        );
        assert!(
            store
                .executions("hello", Some("other"), 10)
                .unwrap()
                .is_empty()
        );
    }
}
