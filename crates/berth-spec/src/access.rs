//! What may reach an app and what it may reach: `[egress]`, `[internal]`
//! and `[edge]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::duration_ms;

/// `[egress]`: what an app's instances may reach besides the public
/// internet. Private networks, link-local addresses (cloud metadata) and
/// the host itself are closed by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressSpec {
    /// Private ranges it may reach (`["10.0.0.0/8"]`): a database on the
    /// LAN, say. The host's own addresses stay closed.
    #[serde(default)]
    pub allow: Vec<berth_proto::Ipv4Cidr>,
}

impl EgressSpec {
    pub(crate) fn is_default(&self) -> bool {
        self == &EgressSpec::default()
    }
}

/// `[internal]`: the app's private names (`APP.internal` for the groups
/// that serve HTTP, `GROUP.APP.internal` for each of them), which the app's
/// own instances and jobs always reach and other apps only when listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InternalSpec {
    /// Other apps whose instances and jobs may reach it (`["frontend"]`).
    #[serde(default)]
    pub allow: Vec<String>,
}

impl InternalSpec {
    pub(crate) fn is_default(&self) -> bool {
        self == &InternalSpec::default()
    }
}

/// `[edge]`: rules the router applies to the app's requests before they
/// reach an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeSpec {
    /// Only clients in these ranges (empty: everyone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<berth_proto::IpRange>,
    /// Never clients in these ranges (wins over `allow`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<berth_proto::IpRange>,
    /// Larger request bodies get 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Per client address; the first that a request exceeds answers 429.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimitSpec>,
}

impl EdgeSpec {
    pub(crate) fn is_default(&self) -> bool {
        self == &EdgeSpec::default()
    }
}

/// `[[edge.rate_limits]]`: at most `requests` per `per` from one client
/// address, with bursts up to `burst`, for paths under `path` (or all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitSpec {
    /// Requests allowed per `per`.
    pub requests: u32,
    /// The window.
    #[serde(with = "duration_ms")]
    pub per: Duration,
    /// Requests that may come at once (default: `requests`).
    pub burst: u32,
    /// A URL path prefix the limit applies to (default: every path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}
