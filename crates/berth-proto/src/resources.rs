//! Env, secrets, databases, Redis, backups and volumes on the wire.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// Connections its role has open now.
    #[serde(default)]
    pub connections: u32,
    /// The most its role may open.
    #[serde(default)]
    pub connection_limit: u32,
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

/// What `berth postgres migrate` did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MigrateResult {
    /// The migrations applied now: `VERSION description`, in order.
    pub applied: Vec<String>,
    /// How many were applied before.
    pub already: usize,
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
    /// Its size, when it has a file system of its own (`[[mounts]] size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
}
