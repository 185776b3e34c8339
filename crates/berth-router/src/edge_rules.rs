//! An app's edge rules (`[edge]`): which clients may reach it, how many
//! requests each may make, how large a body may be. Checked before a
//! request is routed; what they refuse is counted per app.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use berth_proto::IpRange;
use http::{HeaderMap, header};

/// Client addresses whose buckets are kept per app, at most; past it, the
/// buckets idle longest (full again anyway) are dropped.
const MAX_CLIENTS: usize = 100_000;

/// The rules of one app.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EdgeRules {
    /// Only these clients (empty: everyone).
    pub allow: Vec<IpRange>,
    /// Never these clients.
    pub deny: Vec<IpRange>,
    /// Larger bodies get 413.
    pub max_body: Option<u64>,
    /// Per-client rate limits.
    pub limits: Vec<RateRule>,
}

/// At most `per_second` requests a second from one client, `burst` at once,
/// for paths under `path` (or all).
#[derive(Debug, Clone, PartialEq)]
pub struct RateRule {
    /// A URL path prefix, or every path.
    pub path: Option<String>,
    /// The sustained rate.
    pub per_second: f64,
    /// The bucket's size.
    pub burst: f64,
}

/// What the rules say of a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Route it.
    Pass,
    /// 403: the client's address is not allowed.
    Denied,
    /// 429: over a rate limit; try again after this many seconds.
    Limited(u64),
    /// 413: the body is larger than allowed.
    TooLarge,
    /// 411: a body with no declared length, where a limit applies.
    LengthRequired,
}

/// The per-client state of the rate limits, and what the rules refused.
#[derive(Debug, Default)]
pub struct EdgeState {
    buckets: Mutex<HashMap<(usize, IpAddr), Bucket>>,
    /// Requests refused by `allow`/`deny`.
    pub denied: AtomicU64,
    /// Requests over a rate limit.
    pub limited: AtomicU64,
    /// Requests over the body limit.
    pub too_large: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl EdgeRules {
    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty()
            && self.deny.is_empty()
            && self.max_body.is_none()
            && self.limits.is_empty()
    }

    /// The verdict on a request from `client` for `path` with `headers`,
    /// counted in `state` when it is a refusal.
    pub fn check(
        &self,
        state: &EdgeState,
        client: IpAddr,
        path: &str,
        headers: &HeaderMap,
    ) -> Verdict {
        let verdict = self.judge(state, client, path, headers);
        let counter = match verdict {
            Verdict::Pass => return verdict,
            Verdict::Denied => &state.denied,
            Verdict::Limited(_) => &state.limited,
            Verdict::TooLarge | Verdict::LengthRequired => &state.too_large,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        verdict
    }

    fn judge(&self, state: &EdgeState, client: IpAddr, path: &str, headers: &HeaderMap) -> Verdict {
        if self.deny.iter().any(|range| range.contains(client))
            || (!self.allow.is_empty() && !self.allow.iter().any(|range| range.contains(client)))
        {
            return Verdict::Denied;
        }
        if let Some(max) = self.max_body {
            let length = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok());
            match length {
                Some(length) if length > max => return Verdict::TooLarge,
                None if headers.contains_key(header::TRANSFER_ENCODING) => {
                    return Verdict::LengthRequired;
                }
                _ => {}
            }
        }
        if self.limits.is_empty() {
            return Verdict::Pass;
        }
        let now = Instant::now();
        let mut buckets = state
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_CLIENTS {
            buckets.retain(|_, bucket| now.duration_since(bucket.at).as_secs() < 60);
        }
        for (index, rule) in self.limits.iter().enumerate() {
            if rule
                .path
                .as_ref()
                .is_some_and(|prefix| !path.starts_with(prefix.as_str()))
            {
                continue;
            }
            let bucket = buckets.entry((index, client)).or_insert(Bucket {
                tokens: rule.burst,
                at: now,
            });
            let refill = now.duration_since(bucket.at).as_secs_f64() * rule.per_second;
            bucket.tokens = (bucket.tokens + refill).min(rule.burst);
            bucket.at = now;
            if bucket.tokens < 1.0 {
                let wait = (1.0 - bucket.tokens) / rule.per_second;
                return Verdict::Limited(wait.ceil().max(1.0) as u64);
            }
            bucket.tokens -= 1.0;
        }
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn deny_wins_and_allow_keeps_everyone_else_out() {
        let rules = EdgeRules {
            allow: vec!["127.0.0.0/24".parse().unwrap()],
            deny: vec!["127.0.0.2".parse().unwrap()],
            ..EdgeRules::default()
        };
        let state = EdgeState::default();
        let headers = HeaderMap::new();
        assert_eq!(
            rules.check(&state, ip("127.0.0.2"), "/", &headers),
            Verdict::Denied
        );
        assert_eq!(
            rules.check(&state, ip("127.0.0.3"), "/", &headers),
            Verdict::Pass
        );
        assert_eq!(
            rules.check(&state, ip("10.0.0.1"), "/", &headers),
            Verdict::Denied
        );
        assert_eq!(state.denied.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_client_past_its_burst_waits_and_others_do_not() {
        let rules = EdgeRules {
            limits: vec![RateRule {
                path: Some("/api".into()),
                per_second: 1.0,
                burst: 3.0,
            }],
            ..EdgeRules::default()
        };
        let state = EdgeState::default();
        let headers = HeaderMap::new();
        for _ in 0..3 {
            assert_eq!(
                rules.check(&state, ip("10.0.0.1"), "/api/x", &headers),
                Verdict::Pass
            );
        }
        assert_eq!(
            rules.check(&state, ip("10.0.0.1"), "/api/x", &headers),
            Verdict::Limited(1)
        );
        assert_eq!(
            rules.check(&state, ip("10.0.0.1"), "/", &headers),
            Verdict::Pass
        );
        assert_eq!(
            rules.check(&state, ip("10.0.0.2"), "/api", &headers),
            Verdict::Pass
        );
    }

    #[test]
    fn bodies_over_the_limit_or_of_no_length_are_refused() {
        let rules = EdgeRules {
            max_body: Some(10),
            ..EdgeRules::default()
        };
        let state = EdgeState::default();
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "11".parse().unwrap());
        assert_eq!(
            rules.check(&state, ip("10.0.0.1"), "/", &headers),
            Verdict::TooLarge
        );
        headers.insert(header::CONTENT_LENGTH, "10".parse().unwrap());
        assert_eq!(
            rules.check(&state, ip("10.0.0.1"), "/", &headers),
            Verdict::Pass
        );
        let mut chunked = HeaderMap::new();
        chunked.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        assert_eq!(
            rules.check(&state, ip("10.0.0.1"), "/", &chunked),
            Verdict::LengthRequired
        );
    }
}
