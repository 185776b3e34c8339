//! `[logs]`: how long and how much of an app's logs the server keeps.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Lines older than this go when the spec says nothing (`retain`).
pub const DEFAULT_LOG_RETAIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// Bytes of text kept per app when the spec says nothing (`max_size`):
/// past it, the oldest lines go.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 100 * 1024 * 1024;

/// The retention of an app's logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogsSpec {
    /// Lines older than this are deleted (`retain = "14d"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<Duration>,
    /// At most this many bytes of text are kept (`max_size = "1GB"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Whether the router writes an access log line per request into the
    /// app's logs (`access = false` turns it off; on by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<bool>,
}

impl LogsSpec {
    /// Whether it says nothing (the defaults apply).
    pub fn is_default(&self) -> bool {
        *self == LogsSpec::default()
    }

    /// How long lines are kept.
    pub fn retain_or_default(&self) -> Duration {
        self.retain.unwrap_or(DEFAULT_LOG_RETAIN)
    }

    /// Whether requests are written to the access log.
    pub fn access_or_default(&self) -> bool {
        self.access.unwrap_or(true)
    }

    /// How many bytes of text are kept.
    pub fn max_bytes_or_default(&self) -> u64 {
        self.max_bytes.unwrap_or(DEFAULT_LOG_MAX_BYTES)
    }
}
