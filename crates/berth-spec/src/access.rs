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
    /// Larger request heads get 431.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<u64>,
    /// Connections one client address may hold to the app at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// How long the app may take to begin an answer (504 after).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "optional_ms")]
    pub request_timeout: Option<Duration>,
    /// Per client address; the first that a request exceeds answers 429.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimitSpec>,
}

impl EdgeSpec {
    pub(crate) fn is_default(&self) -> bool {
        self == &EdgeSpec::default()
    }

    /// The rules in the API's form.
    pub fn to_rule_set(&self) -> berth_proto::EdgeRuleSet {
        berth_proto::EdgeRuleSet {
            allow: self.allow.clone(),
            deny: self.deny.clone(),
            rate_limits: self
                .rate_limits
                .iter()
                .map(|limit| berth_proto::RateLimit {
                    requests: limit.requests,
                    per_ms: limit.per.as_millis() as u64,
                    burst: limit.burst,
                    path: limit.path.clone(),
                })
                .collect(),
            max_body: self.max_body_bytes,
            max_header: self.max_header_bytes,
            max_connections: self.max_connections,
            request_timeout_ms: self.request_timeout.map(|limit| limit.as_millis() as u64),
        }
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

/// An optional duration stored as milliseconds.
mod optional_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.serialize_some(&(value.as_millis() as u64)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_millis))
    }
}
