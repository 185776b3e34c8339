//! The route table and host matching.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::balance::Backend;

/// Where each app's traffic goes. Immutable once published.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    /// Routes by app name.
    pub apps: HashMap<String, AppRoute>,
}

/// One app's route.
#[derive(Debug, Clone, Default)]
pub struct AppRoute {
    /// Healthy instances that take requests.
    pub backends: Vec<Arc<Backend>>,
    /// Why there are none, shown on the 503 page.
    pub unavailable_reason: Option<String>,
    /// Request counters, shared across tables.
    pub traffic: Arc<AppTraffic>,
}

/// Per-app request counters.
#[derive(Debug, Default)]
pub struct AppTraffic {
    /// Requests routed to the app (answered by it or by the router).
    pub requests: AtomicU64,
    /// Requests the router answered with a 5xx of its own.
    pub router_errors: AtomicU64,
}

impl AppTraffic {
    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_router_error(&self) {
        self.router_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// The app a host names: `APP.localhost`, `APP.<anything>.localhost`, `APP`
/// alone, or `APP.` followed by `suffix`. The port, a trailing dot and case
/// are ignored.
pub fn app_from_host<'a>(host: &'a str, suffix: &str) -> Option<&'a str> {
    let host = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) && !name.ends_with(']') || name.starts_with('[')
        {
            name
        } else {
            host
        }
    });
    let host = host.trim_end_matches('.');
    if host.is_empty() || host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok() {
        return None;
    }
    let (first, rest) = host.split_once('.').unwrap_or((host, ""));
    if rest.is_empty()
        || rest.eq_ignore_ascii_case(suffix)
        || rest.to_ascii_lowercase().ends_with(".localhost")
        || rest.eq_ignore_ascii_case("localhost")
    {
        Some(first)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_apps() {
        assert_eq!(
            app_from_host("hello.localhost:8080", "localhost"),
            Some("hello")
        );
        assert_eq!(app_from_host("hello.localhost", "localhost"), Some("hello"));
        assert_eq!(
            app_from_host("hello.localhost.", "localhost"),
            Some("hello")
        );
        assert_eq!(app_from_host("hello", "localhost"), Some("hello"));
        assert_eq!(app_from_host("hello:80", "localhost"), Some("hello"));
        assert_eq!(
            app_from_host("hello.apps.example.com", "apps.example.com"),
            Some("hello")
        );
        assert_eq!(app_from_host("hello.example.com", "localhost"), None);
        assert_eq!(app_from_host("127.0.0.1:8080", "localhost"), None);
        assert_eq!(app_from_host("[::1]:8080", "localhost"), None);
    }
}
