//! The states, kinds and triggers the API names, as wire enums.

use std::fmt;

use serde::{Deserialize, Serialize};

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
        /// Migrations were applied to the app's database.
        PostgresMigrated => "postgres.migrated",
        /// A volume was destroyed.
        VolumeDestroyed => "volume.destroyed",
        /// A custom domain was given to the app.
        DomainAdded => "domain.added",
        /// A custom domain was taken from the app.
        DomainRemoved => "domain.removed",
        /// Edge rules set or cleared with `berth edge`.
        EdgeChanged => "edge.changed",
        /// The ACME CA issued a domain's first certificate.
        CertIssued => "cert.issued",
        /// The ACME CA issued a domain's next certificate.
        CertRenewed => "cert.renewed",
        /// A certificate could not be had (the reason, and when it is tried again).
        CertFailed => "cert.failed",
        /// A certificate near its expiry could not be renewed.
        CertExpiring => "cert.expiring",
        /// An instance became healthy.
        InstanceStarted => "instance.started",
        /// An instance exited.
        InstanceExited => "instance.exited",
        /// An instance failed to start.
        InstanceFailed => "instance.failed",
        /// An instance tried to write where nothing it writes is kept (its
        /// read-only slug or the host's files).
        InstanceReadOnly => "instance.read_only",
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
        /// A release's stored spec could not be read: it does not run.
        ReleaseUnreadable => "release.unreadable",
        /// A TCP service's public port could not be listened on.
        ServiceUnbound => "service.unbound",
        /// A budget threshold was reached (an alert went out).
        BudgetAlert => "budget.alert",
        /// A budget was crossed and its action taken.
        BudgetExceeded => "budget.exceeded",
        /// The spend rose far above the trailing day's rate.
        BudgetSpike => "budget.spike",
        /// A budget's action was lifted: the app runs as before.
        BudgetResumed => "budget.resumed",
    }
);

wire_enum!(
    /// A managed resource an app may have.
    ResourceKind {
        /// A PostgreSQL database (`DATABASE_URL`).
        Postgres => "postgres",
        /// A Redis server (`REDIS_URL`).
        Redis => "redis",
    }
);

impl ResourceKind {
    /// The event recorded when an app gets one.
    pub fn attached(&self) -> EventKind {
        match self {
            ResourceKind::Postgres => EventKind::PostgresAttached,
            ResourceKind::Redis => EventKind::RedisAttached,
            ResourceKind::Unknown(kind) => EventKind::from(format!("{kind}.attached").as_str()),
        }
    }

    /// The event recorded when one does not start.
    pub fn failed(&self) -> EventKind {
        match self {
            ResourceKind::Postgres => EventKind::PostgresFailed,
            ResourceKind::Redis => EventKind::RedisFailed,
            ResourceKind::Unknown(kind) => EventKind::from(format!("{kind}.failed").as_str()),
        }
    }
}

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
