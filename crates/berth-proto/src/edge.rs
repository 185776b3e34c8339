//! An app's edge rules as the API carries them: those its berth.toml sets
//! (`[edge]`) and those set with `berth edge`, which add to them.

use serde::{Deserialize, Serialize};

use crate::IpRange;

/// Edge rules: who may reach an app and how much. Lists from several
/// sources add up; a value set in a later source replaces an earlier one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EdgeRuleSet {
    /// Only clients in these ranges (empty: everyone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub allow: Vec<IpRange>,
    /// Never clients in these ranges (wins over `allow`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub deny: Vec<IpRange>,
    /// Per client address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimit>,
    /// Larger request bodies get 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body: Option<u64>,
    /// Larger request heads get 431.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header: Option<u64>,
    /// Connections one client address may hold at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Milliseconds the app may take to begin an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
}

/// At most `requests` per `per_ms` from one client address, `burst` at
/// once, for paths under `path` (or all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RateLimit {
    /// Requests per window.
    pub requests: u32,
    /// The window, in milliseconds.
    pub per_ms: u64,
    /// Requests that may come at once.
    pub burst: u32,
    /// A URL path prefix (default: every path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The smallest `max_header` that still lets ordinary requests through.
pub const MIN_MAX_HEADER: u64 = 1024;

impl EdgeRuleSet {
    /// Whether it sets nothing.
    pub fn is_empty(&self) -> bool {
        self == &EdgeRuleSet::default()
    }

    /// `self` with `later` on top: lists joined (without repeats), values
    /// `later` sets replacing `self`'s.
    pub fn with(&self, later: &EdgeRuleSet) -> EdgeRuleSet {
        fn joined<T: Clone + PartialEq>(first: &[T], then: &[T]) -> Vec<T> {
            let mut all = first.to_vec();
            all.extend(then.iter().filter(|item| !first.contains(item)).cloned());
            all
        }
        EdgeRuleSet {
            allow: joined(&self.allow, &later.allow),
            deny: joined(&self.deny, &later.deny),
            rate_limits: joined(&self.rate_limits, &later.rate_limits),
            max_body: later.max_body.or(self.max_body),
            max_header: later.max_header.or(self.max_header),
            max_connections: later.max_connections.or(self.max_connections),
            request_timeout_ms: later.request_timeout_ms.or(self.request_timeout_ms),
        }
    }

    /// What is wrong with the rules, one sentence each; empty when nothing.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for limit in &self.rate_limits {
            if limit.requests == 0 {
                problems.push(
                    "a rate limit of zero requests would refuse everything (deny the addresses instead)"
                        .to_string(),
                );
            }
            if limit.per_ms == 0 {
                problems.push("a rate limit's window must be longer than zero".to_string());
            }
            if limit.burst == 0 {
                problems.push("a rate limit's burst must be 1 or more".to_string());
            }
            if let Some(path) = &limit.path
                && !path.starts_with('/')
            {
                problems.push(format!(
                    "a rate limit's path must start with `/` (a URL path prefix), not `{path}`"
                ));
            }
        }
        if self.max_body == Some(0) {
            problems.push("max body must be above zero".to_string());
        }
        if self.max_header.is_some_and(|size| size < MIN_MAX_HEADER) {
            problems.push(format!(
                "max header must be at least {MIN_MAX_HEADER} bytes"
            ));
        }
        if self.max_connections == Some(0) {
            problems.push("max connections must be 1 or more".to_string());
        }
        if self.request_timeout_ms == Some(0) {
            problems.push("the request timeout must be longer than zero".to_string());
        }
        problems
    }
}

/// `GET /v1/apps/{app}/edge`: the app's edge rules by where they come from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppEdge {
    /// The app.
    pub app: String,
    /// From its current release's berth.toml (`[edge]`).
    pub from_spec: EdgeRuleSet,
    /// Set with `berth edge`; kept across deploys.
    pub from_cli: EdgeRuleSet,
    /// What the router applies: the two together.
    pub effective: EdgeRuleSet,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> IpRange {
        text.parse().unwrap()
    }

    #[test]
    fn later_rules_add_to_lists_and_replace_values() {
        let spec = EdgeRuleSet {
            deny: vec![range("10.0.0.1")],
            max_body: Some(100),
            max_connections: Some(5),
            ..EdgeRuleSet::default()
        };
        let cli = EdgeRuleSet {
            deny: vec![range("10.0.0.1"), range("10.0.0.2")],
            max_body: Some(200),
            ..EdgeRuleSet::default()
        };
        let both = spec.with(&cli);
        assert_eq!(both.deny, vec![range("10.0.0.1"), range("10.0.0.2")]);
        assert_eq!(both.max_body, Some(200));
        assert_eq!(both.max_connections, Some(5));
    }

    #[test]
    fn zero_rates_and_tiny_limits_are_named() {
        let rules = EdgeRuleSet {
            rate_limits: vec![RateLimit {
                requests: 0,
                per_ms: 1000,
                burst: 1,
                path: Some("api".into()),
            }],
            max_header: Some(10),
            max_connections: Some(0),
            ..EdgeRuleSet::default()
        };
        let problems = rules.problems().join("\n");
        assert!(problems.contains("zero requests"), "{problems}");
        assert!(problems.contains("must start with `/`"), "{problems}");
        assert!(problems.contains("at least 1024 bytes"), "{problems}");
        assert!(problems.contains("max connections"), "{problems}");
        assert!(EdgeRuleSet::default().problems().is_empty());
    }
}
