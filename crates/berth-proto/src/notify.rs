//! The webhooks alerts leave by (`berth notify`): what is added, listed
//! and logged, and which events a webhook gets.

use serde::{Deserialize, Serialize};

/// How a webhook's body is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum NotifyFormat {
    /// `{"id", "event", "app", "at", "message", "data"}`.
    Json,
    /// Slack's incoming-webhook body: `{"text": …}`.
    Slack,
}

/// `POST /v1/notify`: a webhook that alerts are sent to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddNotifyChannel {
    /// An `http://` or `https://` URL.
    pub url: String,
    /// Event patterns it gets (`budget.*`, `deploy.failed`); empty: all.
    pub events: Vec<String>,
    /// The body's shape.
    pub format: NotifyFormat,
}

/// A webhook, as listed. Its signing secret is shown once, when added.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotifyChannel {
    /// Its id.
    pub id: u64,
    /// Where it posts.
    pub url: String,
    /// The events it gets; empty: all.
    pub events: Vec<String>,
    /// The body's shape.
    pub format: NotifyFormat,
    /// The HMAC-SHA256 key, only in the answer to adding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// One alert's delivery to one webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotifyDelivery {
    /// Its id (also the body's `id`).
    pub id: u64,
    /// The webhook.
    pub channel: u64,
    /// The event: `budget.exceeded`.
    pub event: String,
    /// The app, or `*`.
    pub app: String,
    /// When the event happened (RFC 3339).
    pub at: String,
    /// `pending`, `delivered` or `failed` (retries exhausted).
    pub status: String,
    /// Tries so far.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
}

/// Event names a webhook may ask for.
pub const NOTIFY_EVENTS: [&str; 7] = [
    "budget.alert",
    "budget.exceeded",
    "budget.spike",
    "budget.resumed",
    "deploy.failed",
    "app.crash-loop",
    "cert.expiring",
];

/// Whether `event` matches `pattern` (`budget.*`, `*`, or the name).
pub fn notify_event_matches(pattern: &str, event: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => event.starts_with(prefix),
        None => pattern == event,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_patterns_match_by_prefix_or_name() {
        assert!(notify_event_matches("budget.*", "budget.exceeded"));
        assert!(notify_event_matches("*", "deploy.failed"));
        assert!(!notify_event_matches("budget.*", "deploy.failed"));
        assert!(notify_event_matches("deploy.failed", "deploy.failed"));
    }
}
