//! Jobs, their executions and task attempts on the wire.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::*;

/// A job of an app's active release.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobInfo {
    /// Its name.
    pub name: String,
    /// The command each task runs.
    pub command: String,
    /// Its cron schedule, if any.
    pub schedule: Option<String>,
    /// The schedule's time zone.
    pub time_zone: Option<String>,
    /// When the schedule fires next (RFC 3339).
    pub next_run: Option<String>,
    /// Tasks per execution.
    pub tasks: u32,
    /// Tasks at once.
    pub parallelism: u32,
    /// Retries per task.
    pub max_retries: u32,
    /// Seconds one attempt may run.
    pub timeout_secs: u64,
    /// `skip`, `allow` or `replace`.
    pub overlap: String,
    /// The newest execution.
    pub last_execution: Option<ExecutionInfo>,
}

/// One execution of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutionInfo {
    /// Its id (unique on the server).
    pub id: i64,
    /// The app.
    pub app: String,
    /// The job.
    pub job: String,
    /// The release it ran.
    pub release: u64,
    /// What made it run.
    pub trigger: Trigger,
    /// How it ended, or that it runs.
    pub status: ExecutionStatus,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: Option<String>,
    /// Tasks in the execution.
    pub tasks: u32,
    /// Tasks at once.
    pub parallelism: u32,
    /// Tasks that succeeded.
    pub succeeded: u32,
    /// Tasks that failed after their retries.
    pub failed: u32,
    /// Why it ended so.
    pub message: Option<String>,
    /// Every attempt of every task.
    pub attempts: Vec<TaskAttemptInfo>,
}

/// One attempt of one task.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskAttemptInfo {
    /// `BERTH_TASK_INDEX`.
    pub task_index: u32,
    /// `BERTH_TASK_ATTEMPT`.
    pub attempt: u32,
    /// How it ended.
    pub status: ExecutionStatus,
    /// Its exit code.
    pub exit_code: Option<i32>,
    /// Why it failed.
    pub reason: Option<String>,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: Option<String>,
}

/// Body of `POST /v1/apps/{app}/run`: a one-off command (`berth run`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunCommand {
    /// The command line, run by `/bin/sh -c` in the release's slug.
    pub command: String,
    /// Extra env vars for it.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How long it may run, in seconds (default an hour).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Run the spec's `console_command` (`berth console`); `command` must
    /// then be empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub console: bool,
    /// The size of the terminal it gets (`POST …/run/terminal` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<crate::TerminalSize>,
}

/// The body of `POST /v1/apps/{app}/jobs/{job}/run`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunJob {
    /// Run this many tasks instead of the job's `tasks`.
    pub tasks: Option<u32>,
    /// Extra env vars for this execution.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}
