//! API wire types shared by the berth server and its clients.
//!
//! Everything here is plain data with serde derives: ids, states, requests,
//! responses and the streamed progress of a deploy. This crate must never do IO
//! or depend on server internals; an older CLI must be able to read a newer
//! server, so every enum a client reads carries an `Unknown(String)` variant.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Declares a string-valued wire enum with an `Unknown(String)` fallback.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this version does not know (sent by a newer server).
            Unknown(String),
        }

        impl $name {
            /// The wire spelling of this value.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Unknown(other) => other,
                }
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                match text {
                    $($text => Self::$variant,)+
                    other => Self::Unknown(other.to_string()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Ok(Self::from(text.as_str()))
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

wire_enum!(
    /// What an event in an app's event log records.
    EventKind {
        /// The app was created.
        AppCreated => "app.created",
        /// The app was destroyed.
        AppDestroyed => "app.destroyed",
        /// A release was made and its roll-out began.
        DeployStarted => "deploy.started",
        /// A release became the one that serves.
        DeploySucceeded => "deploy.succeeded",
        /// A release failed; the one before keeps serving.
        DeployFailed => "deploy.failed",
        /// Env vars changed.
        EnvChanged => "env.changed",
        /// Secrets changed.
        SecretsChanged => "secrets.changed",
        /// A PostgreSQL database was attached.
        PostgresAttached => "postgres.attached",
        /// A Redis was attached.
        RedisAttached => "redis.attached",
        /// The app's PostgreSQL could not be started.
        PostgresFailed => "postgres.failed",
        /// The app's Redis could not be started.
        RedisFailed => "redis.failed",
        /// A backup was taken.
        PostgresBackup => "postgres.backup",
        /// A backup was restored.
        PostgresRestore => "postgres.restore",
        /// A volume was destroyed.
        VolumeDestroyed => "volume.destroyed",
        /// An instance became healthy.
        InstanceStarted => "instance.started",
        /// An instance exited.
        InstanceExited => "instance.exited",
        /// An instance failed to start.
        InstanceFailed => "instance.failed",
        /// An instance failed its health checks.
        HealthFailed => "health.failed",
        /// An instance passes its health checks again.
        HealthRecovered => "health.recovered",
        /// An instance stayed unhealthy and was replaced.
        HealthReplaced => "health.replaced",
        /// An instance never became healthy in time.
        HealthTimeout => "health.timeout",
        /// A count or autoscaling bounds were set by hand.
        Scale => "scale",
        /// The autoscaler added instances.
        ScaleOut => "scale.out",
        /// The autoscaler removed instances.
        ScaleIn => "scale.in",
        /// The autoscaler scaled to zero.
        ScaleToZero => "scale.to_zero",
        /// A request started an app at zero.
        ScaleFromZero => "scale.from_zero",
        /// A job execution started.
        JobStarted => "job.started",
        /// A job execution succeeded.
        JobSucceeded => "job.succeeded",
        /// A job execution failed.
        JobFailed => "job.failed",
        /// A job execution was cancelled.
        JobCancelled => "job.cancelled",
        /// A server restart interrupted a job execution.
        JobInterrupted => "job.interrupted",
        /// A scheduled run was skipped (overlap policy).
        JobSkipped => "job.skipped",
    }
);

wire_enum!(
    /// What made a job execution run.
    Trigger {
        /// Its schedule came due.
        Schedule => "schedule",
        /// `berth jobs run`.
        Manual => "manual",
        /// A client of the API other than the CLI.
        Api => "api",
        /// A schedule missed while the server was down, run once on start.
        CatchUp => "catch-up",
    }
);

wire_enum!(
    /// Where an instance is in its life.
    InstanceState {
        /// Started, not yet passing its health check.
        Starting => "starting",
        /// Passing its health check and receiving traffic (web) or running (others).
        Running => "running",
        /// Started but failing its health check; out of the routing table.
        Unhealthy => "unhealthy",
        /// Out of the routing table, finishing in-flight requests.
        Draining => "draining",
        /// Sent SIGTERM, waiting for it to exit.
        Stopping => "stopping",
    }
);

wire_enum!(
    /// What became of a release.
    ReleaseStatus {
        /// Its instances are starting; the previous release still serves.
        Deploying => "deploying",
        /// The release that serves now.
        Active => "active",
        /// Served once, replaced by a later release.
        Superseded => "superseded",
        /// Never became healthy; it did not replace the one before it.
        Failed => "failed",
    }
);

wire_enum!(
    /// The overall health of a process group.
    GroupHealth {
        /// Every desired instance runs.
        Healthy => "healthy",
        /// Instances are starting or being replaced.
        Converging => "converging",
        /// Instances exit again and again; restarts are backing off.
        CrashLoop => "crash-loop",
        /// The desired count is zero.
        Stopped => "stopped",
    }
);

wire_enum!(
    /// Which output stream a log line came from.
    LogStream {
        /// The instance's standard output.
        Stdout => "stdout",
        /// The instance's standard error.
        Stderr => "stderr",
        /// A line berth itself wrote about the instance.
        Berth => "berth",
    }
);

wire_enum!(
    /// How a job execution (or one task attempt) ended, or that it still runs.
    ExecutionStatus {
        /// Still running.
        Running => "running",
        /// Every task succeeded.
        Succeeded => "succeeded",
        /// A task failed after its retries.
        Failed => "failed",
        /// Cancelled by hand or replaced by a newer scheduled run.
        Cancelled => "cancelled",
        /// The server stopped while it ran.
        Interrupted => "interrupted",
    }
);

/// Checks an app name: 1 to 63 characters of `a-z`, `0-9` and `-`, starting
/// with a letter and not ending with `-`, so that `NAME.localhost` is a valid host.
pub fn validate_app_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("app name `{name}` must be 1 to 63 characters long"));
    }
    let first_is_letter = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let allowed = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !first_is_letter || !allowed || name.ends_with('-') {
        return Err(format!(
            "app name `{name}` may only hold lowercase letters, digits and `-`, must start with a letter and not end with `-`"
        ));
    }
    Ok(())
}

/// An error as the API returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    /// A stable machine-readable code such as `app_not_found`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

/// Body of `POST /v1/apps`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateApp {
    /// The app's name; it becomes `NAME.localhost`.
    pub name: String,
}

/// One line of `berth apps`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppSummary {
    /// The app's name.
    pub name: String,
    /// Where the router serves it.
    pub url: String,
    /// The version of the release that serves, if any.
    pub release: Option<u64>,
    /// Instances running now, over all process groups.
    pub running: u32,
    /// Instances wanted, over all process groups.
    pub desired: u32,
    /// When the app was created (RFC 3339).
    pub created_at: String,
}

/// `berth status`: an app, its release, groups and instances.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppStatus {
    /// The app's name.
    pub name: String,
    /// Where the router serves it.
    pub url: String,
    /// The release that serves (or is being deployed when none served before).
    pub release: Option<ReleaseInfo>,
    /// The process groups with desired and running counts.
    pub processes: Vec<ProcessGroupStatus>,
    /// Every instance that exists now.
    pub instances: Vec<InstanceInfo>,
}

/// A process group of an app: `web`, `worker`, …
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessGroupStatus {
    /// The group's name.
    pub name: String,
    /// The command its instances run.
    pub command: String,
    /// How many instances are wanted.
    pub desired: u32,
    /// How many run and pass their health check.
    pub running: u32,
    /// Overall state of the group.
    pub health: GroupHealth,
    /// Why the group is in that state, when it is not healthy.
    pub reason: Option<String>,
    /// Whether berth sets its count by itself (autoscaling, scale to zero).
    #[serde(default)]
    pub autoscaled: bool,
    /// Why the count is what it is: `manual`, or the autoscaler's reason.
    #[serde(default)]
    pub why: Option<String>,
    /// Its autoscaling bounds, when it autoscales.
    #[serde(default)]
    pub min: Option<u32>,
    /// See `min`.
    #[serde(default)]
    pub max: Option<u32>,
}

/// One instance of a process group.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceInfo {
    /// Unique id, such as `web-3f9a2c1d`.
    pub id: String,
    /// The process group.
    pub process: String,
    /// The release version it runs.
    pub release: u64,
    /// Where it is in its life.
    pub state: InstanceState,
    /// Whether its last health check passed.
    pub healthy: bool,
    /// How many times its group restarted a crashed instance in a row.
    pub restarts: u32,
    /// Seconds since it started.
    pub uptime_secs: u64,
    /// Its operating-system process id.
    pub pid: Option<u32>,
    /// The loopback port it listens on (web only).
    pub port: Option<u16>,
}

/// A release: a built slug plus the spec and env it runs with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseInfo {
    /// 1, 2, 3, … per app.
    pub version: u64,
    /// What it became.
    pub status: ReleaseStatus,
    /// Why it was made: `deploy`, `rollback to v2`, `env set FOO`.
    pub cause: String,
    /// The content digest of its slug.
    pub slug: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// The process groups and commands of this release.
    pub processes: BTreeMap<String, String>,
}

/// An entry of an app's event log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventInfo {
    /// Increasing id.
    pub id: i64,
    /// When it happened (RFC 3339).
    pub at: String,
    /// The app.
    pub app: String,
    /// A short kind such as `deploy.started`, `instance.exited`, `health.failed`.
    pub kind: String,
    /// What happened, for a person.
    pub message: String,
}

/// A captured log line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    /// When berth read it (RFC 3339, microseconds).
    pub at: String,
    /// The app.
    pub app: String,
    /// The process group (`web`, `worker`, `build`, …).
    pub process: String,
    /// The instance id.
    pub instance: String,
    /// The release version.
    pub release: u64,
    /// Which stream it came from.
    pub stream: LogStream,
    /// The level, when the line is structured (JSON or logfmt), else none.
    pub level: Option<String>,
    /// The message: the structured `message`/`msg` field, or the whole text.
    pub message: String,
    /// The other structured fields.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub fields: Option<serde_json::Value>,
}

/// Body of `POST /v1/apps/{app}/scale`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScaleRequest {
    /// Desired instance count per process group (for an autoscaled group:
    /// the count it starts from, and its maximum unless one is set).
    #[serde(default)]
    pub counts: BTreeMap<String, u32>,
    /// Autoscaling minimum for `process` (over the spec's).
    #[serde(default)]
    pub min: Option<u32>,
    /// Autoscaling maximum for `process` (over the spec's).
    #[serde(default)]
    pub max: Option<u32>,
    /// The group `min`/`max` apply to (default: the one serving HTTP).
    #[serde(default)]
    pub process: Option<String>,
}

/// Body of `POST /v1/apps/{app}/env`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvChange {
    /// Variables to set.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Variables to remove.
    #[serde(default)]
    pub unset: Vec<String>,
}

/// Body of `POST /v1/apps/{app}/secrets`: the same shape as an env change;
/// values travel only this way, never back.
pub type SecretsChange = EnvChange;

/// A secret as listed: never its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretInfo {
    /// The env var it becomes.
    pub name: String,
    /// A short keyed digest of the value: it changes when the value does.
    pub digest: String,
    /// When the value last changed (RFC 3339).
    pub updated_at: String,
}

/// How to reach an app's PostgreSQL database (for its owner only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PostgresInfo {
    /// Database and role name.
    pub database: String,
    /// `postgres://…`, with the password: what the app gets as `DATABASE_URL`.
    pub url: String,
    /// The server's port on 127.0.0.1.
    pub port: u16,
}

/// How to reach an app's Redis (for its owner only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RedisInfo {
    /// `redis://…`, with the password: what the app gets as `REDIS_URL`.
    pub url: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its memory limit.
    pub max_memory_mib: u32,
}

/// A database backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BackupInfo {
    /// Its id (a UTC time stamp), what `restore` takes.
    pub id: String,
    /// Its size.
    pub size_bytes: u64,
    /// When it was taken (RFC 3339).
    pub created_at: String,
}

/// Body of `POST /v1/apps/{app}/postgres/restore`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestoreRequest {
    /// The backup to restore; the newest when absent.
    #[serde(default)]
    pub backup: Option<String>,
}

/// A volume: a persistent directory of an app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VolumeInfo {
    /// Its name (the mount's `source`).
    pub name: String,
    /// Where it is on the server's disk.
    pub path: String,
    /// Where the active release mounts it, if it does.
    pub destination: Option<String>,
    /// Bytes in it.
    pub size_bytes: u64,
}

/// Body of `POST /v1/apps/{app}/rollback`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RollbackRequest {
    /// The version to go back to; the previous good one when absent.
    pub version: Option<u64>,
}

/// One line of the NDJSON stream a deploy (upload, env change, rollback) answers with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeployProgress {
    /// A step of the deploy began.
    Step {
        /// What berth is doing.
        message: String,
    },
    /// A line of build output (cargo's stderr).
    Build {
        /// The line.
        line: String,
    },
    /// A line the release command printed.
    ReleaseOutput {
        /// The line.
        line: String,
    },
    /// A warning about the spec.
    Warning {
        /// What berth ignores or assumes.
        message: String,
    },
    /// The deploy succeeded.
    Done {
        /// The new release.
        release: u64,
        /// Where the app is served.
        url: String,
    },
    /// The deploy failed; the previous release keeps serving.
    Failed {
        /// Why, with the build or start output that tells.
        message: String,
        /// The release that was tried, if one was made.
        release: Option<u64>,
    },
    /// A kind of line this client does not know.
    #[serde(other)]
    Unknown,
}

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
    /// `manual`, `api` or `schedule`.
    pub trigger: String,
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

/// Body of `POST /v1/apps/{app}/jobs/{job}/run`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunJob {
    /// Run this many tasks instead of the job's `tasks`.
    pub tasks: Option<u32>,
    /// Extra env vars for this execution.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Where a running server listens; written to `server.json` in the data dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Base URL of the API, such as `http://127.0.0.1:8079`.
    pub api_url: String,
    /// Base URL of the router, such as `http://127.0.0.1:8080`.
    pub router_url: String,
    /// The server's process id.
    pub pid: u32,
}

/// The answer of `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerHealth {
    /// Always `ok` when the server answers.
    pub status: String,
    /// The server's version.
    pub version: String,
    /// Base URL of the router.
    pub router_url: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_enum_values_survive_a_round_trip() {
        let state: InstanceState = serde_json::from_str("\"hibernating\"").unwrap();
        assert_eq!(state, InstanceState::Unknown("hibernating".into()));
        assert_eq!(serde_json::to_string(&state).unwrap(), "\"hibernating\"");
        let known: InstanceState = serde_json::from_str("\"draining\"").unwrap();
        assert_eq!(known, InstanceState::Draining);
    }

    #[test]
    fn unknown_progress_lines_do_not_break_old_clients() {
        let line: DeployProgress =
            serde_json::from_str(r#"{"type":"teleport","where":"mars"}"#).unwrap();
        assert_eq!(line, DeployProgress::Unknown);
    }

    #[test]
    fn app_names_must_make_valid_hosts() {
        assert!(validate_app_name("hello-world2").is_ok());
        for bad in [
            "",
            "Hello",
            "2fast",
            "trailing-",
            "dots.in",
            &"a".repeat(64),
        ] {
            assert!(validate_app_name(bad).is_err(), "{bad} accepted");
        }
    }
}
