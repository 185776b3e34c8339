//! An app's edge rules (`[edge]`): which clients may reach it, how many
//! requests and connections each may have, how large headers and bodies
//! may be, how long the app may take. Checked before a request is routed;
//! what they refuse is counted per app.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_proto::IpRange;
use http::{HeaderMap, header};

/// Marks a response the app's `[edge]` rules gave (a refusal): counted,
/// but not written to the access log, so a flood of refused requests
/// costs no more than a counter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EdgeRefusal;

/// Client buckets kept per app, at most (see `EdgeRules::evict`).
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
    /// Larger request heads (header names and values) get 431.
    pub max_header: Option<u64>,
    /// Connections one client address may hold to the app at once.
    pub max_connections: Option<u32>,
    /// How long the app may take to begin its answer (504 after).
    pub request_timeout: Option<Duration>,
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
    /// 431: the headers are larger than allowed.
    HeadersTooLarge,
}

/// The per-client state of the rate limits, and what the rules refused.
#[derive(Debug, Default)]
pub struct EdgeState {
    buckets: Mutex<HashMap<(usize, IpAddr), Bucket>>,
    connections: Mutex<HashMap<IpAddr, u32>>,
    /// Requests refused by `allow`/`deny`.
    pub denied: AtomicU64,
    /// Requests over a rate limit.
    pub limited: AtomicU64,
    /// Requests over the body or header limit.
    pub too_large: AtomicU64,
    /// Connections refused over `max_connections`.
    pub over_connections: AtomicU64,
    /// Requests the app did not answer within `request_timeout`.
    pub timed_out: AtomicU64,
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
            && self.max_header.is_none()
            && self.max_connections.is_none()
            && self.request_timeout.is_none()
    }

    /// Whether `client` may connect at all (`allow` and `deny`), counted in
    /// `state` when not: what applies to a TCP service's connections.
    pub fn admits_address(&self, state: &EdgeState, client: IpAddr) -> bool {
        let refused = self.deny.iter().any(|range| range.contains(client))
            || (!self.allow.is_empty() && !self.allow.iter().any(|range| range.contains(client)));
        if refused {
            state.denied.fetch_add(1, Ordering::Relaxed);
        }
        !refused
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
            Verdict::TooLarge | Verdict::LengthRequired | Verdict::HeadersTooLarge => {
                &state.too_large
            }
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
        if let Some(max) = self.max_header
            && head_size(headers) > max
        {
            return Verdict::HeadersTooLarge;
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
            self.evict(&mut buckets, now);
        }
        let client = bucket_key(client);
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

impl EdgeRules {
    /// Makes room in `buckets`, full at [`MAX_CLIENTS`]: first the buckets
    /// that have filled up again (dropping them changes nothing), then, if
    /// that is not enough (many clients at once, or made-up addresses),
    /// the older half. Each eviction leaves at most half the bound, so its
    /// cost is spread over as many new clients.
    fn evict(&self, buckets: &mut HashMap<(usize, IpAddr), Bucket>, now: Instant) {
        buckets.retain(|(index, _), bucket| {
            self.limits.get(*index).is_some_and(|rule| {
                let refill = now.duration_since(bucket.at).as_secs_f64() * rule.per_second;
                bucket.tokens + refill < rule.burst
            })
        });
        if buckets.len() < MAX_CLIENTS / 2 {
            return;
        }
        let mut ages: Vec<Instant> = buckets.values().map(|bucket| bucket.at).collect();
        let middle = ages.len() / 2;
        let (_, median, _) = ages.select_nth_unstable(middle);
        let median = *median;
        buckets.retain(|_, bucket| bucket.at > median);
    }
}

/// Whose bucket a client's requests draw on: its IPv4 address, or the /64
/// of its IPv6 address (one host usually holds a whole /64, and could
/// otherwise make up a new address, and a new bucket, per request).
fn bucket_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
        v4 => v4,
    }
}

/// The bytes the headers take on the wire in HTTP/1.1 (`Name: value\r\n`).
fn head_size(headers: &HeaderMap) -> u64 {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().len() + value.len() + 4) as u64)
        .sum()
}

/// One client connection counted against an app's `max_connections` from
/// its first request to the app until it closes.
#[derive(Debug)]
pub struct ConnectionSlot {
    traffic: Arc<crate::AppTraffic>,
    client: IpAddr,
}

impl ConnectionSlot {
    /// A slot for `client` on the app `traffic` counts, unless it holds
    /// `limit` already (then counted as refused).
    pub fn take(traffic: &Arc<crate::AppTraffic>, client: IpAddr, limit: u32) -> Option<Self> {
        let mut connections = traffic
            .edge
            .connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let held = connections.entry(client).or_insert(0);
        if *held >= limit {
            traffic
                .edge
                .over_connections
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *held += 1;
        Some(ConnectionSlot {
            traffic: traffic.clone(),
            client,
        })
    }

    /// Whether this slot counts against the app `traffic` counts.
    pub fn is_for(&self, traffic: &Arc<crate::AppTraffic>) -> bool {
        Arc::ptr_eq(&self.traffic, traffic)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut connections = self
            .traffic
            .edge
            .connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(held) = connections.get_mut(&self.client) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                connections.remove(&self.client);
            }
        }
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

    #[test]
    fn large_heads_are_refused_and_connections_are_counted_per_client() {
        let rules = EdgeRules {
            max_header: Some(100),
            ..EdgeRules::default()
        };
        let state = EdgeState::default();
        let mut headers = HeaderMap::new();
        headers.insert("x-small", "1".parse().unwrap());
        assert_eq!(
            rules.check(&state, ip("10.0.0.1"), "/", &headers),
            Verdict::Pass
        );
        headers.insert("x-large", "a".repeat(100).parse().unwrap());
        assert_eq!(
            rules.check(&state, ip("10.0.0.1"), "/", &headers),
            Verdict::HeadersTooLarge
        );

        let traffic = Arc::new(crate::AppTraffic::default());
        let first = ConnectionSlot::take(&traffic, ip("10.0.0.1"), 2).unwrap();
        let second = ConnectionSlot::take(&traffic, ip("10.0.0.1"), 2).unwrap();
        assert!(ConnectionSlot::take(&traffic, ip("10.0.0.1"), 2).is_none());
        assert!(ConnectionSlot::take(&traffic, ip("10.0.0.2"), 2).is_some());
        assert!(first.is_for(&traffic));
        drop(first);
        assert!(ConnectionSlot::take(&traffic, ip("10.0.0.1"), 2).is_some());
        drop(second);
        assert_eq!(traffic.edge.over_connections.load(Ordering::Relaxed), 1);
        assert!(traffic.edge.connections.lock().unwrap().is_empty());
    }

    #[test]
    fn an_ipv6_host_draws_on_one_bucket_and_made_up_clients_stay_bounded() {
        let rules = EdgeRules {
            limits: vec![RateRule {
                path: None,
                per_second: 0.001,
                burst: 2.0,
            }],
            ..EdgeRules::default()
        };
        let state = EdgeState::default();
        let headers = HeaderMap::new();
        // Three addresses of one /64: one bucket, so the third is limited.
        for (n, expected) in [(1, true), (2, true), (3, false)] {
            let client = ip(&format!("2001:db8:0:1::{n}"));
            let passed = rules.check(&state, client, "/", &headers) == Verdict::Pass;
            assert_eq!(passed, expected, "request {n}");
        }
        // Another /64 is another client.
        assert_eq!(
            rules.check(&state, ip("2001:db8:0:2::1"), "/", &headers),
            Verdict::Pass
        );
        // A flood of made-up IPv4 clients keeps the buckets under the bound.
        for n in 0..(MAX_CLIENTS as u32 + 10) {
            let client = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            rules.check(&state, client, "/", &headers);
        }
        let kept = state.buckets.lock().unwrap().len();
        assert!(kept <= MAX_CLIENTS, "{kept}");
    }
}
