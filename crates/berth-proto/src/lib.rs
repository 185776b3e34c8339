//! API wire types shared by the berth server and its clients.
//!
//! Everything here is plain data with serde derives: ids, states, requests,
//! responses and the streamed progress of a deploy. This crate must never do IO
//! or depend on server internals; an older CLI must be able to read a newer
//! server, so every enum a client reads carries an `Unknown(String)` variant.

use std::collections::BTreeMap;

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

mod cidr;
mod domains;
mod drains;
mod duration;
mod edge;
mod ip_range;
mod jobs;
mod notify;
mod registry;
mod resources;
mod site;
mod states;
mod terminal;
mod usage;

pub use cidr::{Ipv4Cidr, PRIVATE_RANGES};
pub use domains::*;
pub use drains::{
    AddDrain, DEFAULT_DRAIN_BUFFER, DrainInfo, DrainKind, DrainTarget, MAX_DRAIN_URL,
};
pub use duration::format_duration;
pub use edge::{AppEdge, EdgeRuleSet, MIN_MAX_HEADER, RateLimit};
pub use ip_range::IpRange;
pub use jobs::*;
pub use notify::*;
pub use registry::*;
pub use resources::*;
pub use site::{SiteHeader, SiteRule, match_path};
pub use states::*;
pub use terminal::{
    Frame, FrameError, FrameReader, MAX_FRAME_PAYLOAD, TERMINAL_UPGRADE, TerminalSize,
};
pub use usage::*;

/// Checks an app name: 1 to 63 characters of `a-z`, `0-9` and `-`, starting
/// with a letter or digit (as flyctl allows) and not ending with `-`, so that
/// `NAME.localhost` is a valid host.
pub fn validate_app_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the app name is empty; it must be 1 to 63 characters long".into());
    }
    if name.len() > 63 {
        let shown: String = name.chars().take(24).collect();
        return Err(format!(
            "app name `{shown}…` is {} characters long; it can be at most 63, because it becomes a DNS label (APP.localhost)",
            name.chars().count()
        ));
    }
    let first_is_letter = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let allowed = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !first_is_letter || !allowed || name.ends_with('-') {
        return Err(format!(
            "app name `{name}` may only hold lowercase letters, digits and `-`, must start with a letter or digit and not end with `-`"
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
    /// Requests the app's `[edge]` rules refused since the server started.
    #[serde(default)]
    pub edge: EdgeCounts,
    /// Its custom domains and their certificates.
    #[serde(default)]
    pub domains: Vec<DomainCertificate>,
    /// The disk its stored logs take, and their retention.
    #[serde(default)]
    pub logs: LogUsage,
}

/// An app's stored logs: their size and how much is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogUsage {
    /// Bytes of text its stored lines take.
    pub bytes: u64,
    /// The most kept (`[logs] max_size`).
    pub max_bytes: u64,
    /// Lines older than this many seconds go (`[logs] retain`).
    pub retain_secs: u64,
}

/// A custom domain of an app and where its certificate stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DomainCertificate {
    /// The name.
    pub name: String,
    /// Where its certificate comes from (see [`DomainCheck::issuer`]).
    pub issuer: String,
    /// When its certificate expires (RFC 3339), when it has one.
    pub expires: Option<String>,
    /// When it is renewed, and why then (see [`DomainCheck::renews`]).
    #[serde(default)]
    pub renews: Option<String>,
    /// Why it has none, or cannot renew it.
    pub problem: Option<String>,
}

/// Requests an app's `[edge]` rules refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EdgeCounts {
    /// From addresses `allow`/`deny` keep out (403).
    pub denied: u64,
    /// Over a rate limit (429).
    pub rate_limited: u64,
    /// Bodies over `max_body`, or of no declared length (413, 411), and
    /// heads over `max_header` (431).
    pub too_large: u64,
    /// Connections over `max_connections` from one address (429).
    #[serde(default)]
    pub over_connections: u64,
    /// Requests the app did not answer within `request_timeout` (504).
    #[serde(default)]
    pub timed_out: u64,
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
    /// Milliseconds since it started: `uptime_secs`, finer.
    #[serde(default)]
    pub uptime_ms: u64,
    /// Its operating-system process id.
    pub pid: Option<u32>,
    /// The loopback port it listens on (web only).
    pub port: Option<u16>,
    /// CPU time it used since it started, in seconds (from its cgroup, as root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    /// Memory it holds now, in bytes (from its cgroup, as root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Bytes it sent out through its namespace's egress proxy since it
    /// started (proxy egress only; direct egress is read off its link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxied_bytes: Option<u64>,
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
    /// What it records, such as `deploy.started`, `instance.exited`, `health.failed`.
    pub kind: EventKind,
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
    /// The line as written, with its colours (ANSI escapes), when it had
    /// any: `message` and `fields` come from the line without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colored: Option<String>,
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

/// Where a running server listens; written to `server.json` in the data dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Base URL of the API, such as `http://127.0.0.1:8079`.
    pub api_url: String,
    /// Base URL of the router, such as `http://127.0.0.1:8080`.
    pub router_url: String,
    /// Base URL of the router's HTTPS, such as `https://127.0.0.1:8443`,
    /// when it serves HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_url: Option<String>,
    /// The server's process id.
    pub pid: u32,
}

/// The answer of `GET /v1/tunnel`: the tunnel to a relay, when the
/// server keeps one (`--tunnel`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TunnelStatus {
    /// The relay's `HOST:PORT`.
    pub relay: String,
    /// `connecting`, `connected` or `retrying`.
    pub state: String,
    /// When it came up (Unix seconds), while connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// The names the relay routes here, while connected.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Why it is down, while retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
        // flyctl allows [a-z0-9-]; `fly launch` makes names like these.
        assert!(validate_app_name("2fast").is_ok());
        assert!(validate_app_name("404-app").is_ok());
        for bad in [
            "",
            "Hello",
            "-leading",
            "trailing-",
            "dots.in",
            &"a".repeat(64),
        ] {
            assert!(validate_app_name(bad).is_err(), "{bad} accepted");
        }
        let long = validate_app_name(&"a".repeat(5000)).unwrap_err();
        assert!(
            long.contains("is 5000 characters long")
                && long.contains("DNS label")
                && long.len() < 200,
            "{long}"
        );
    }
}
