//! The route table and host matching.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::balance::Backend;

/// Where each app's traffic goes. Immutable once published.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    /// Routes by app name.
    pub apps: HashMap<String, AppRoute>,
    /// Custom domains (lowercase, no trailing dot) and the app serving each.
    pub domains: HashMap<String, String>,
    /// Custom domains served with berth's own CA's certificate even when
    /// the server has an ACME CA (`berth domains add --tls internal`).
    pub tls_internal_domains: std::collections::HashSet<String>,
}

impl RouteTable {
    /// The app a `Host` names: a custom domain's, else the one
    /// [`app_from_host`] reads from the name.
    pub fn app_for_host<'a>(&'a self, host: &'a str, suffix: &str) -> Option<&'a str> {
        if !self.domains.is_empty() {
            let name = host_without_port(host).trim_end_matches('.');
            let found = match self.domains.get(name) {
                Some(app) => Some(app),
                None => self.domains.get(&name.to_ascii_lowercase()),
            };
            if let Some(app) = found {
                return Some(app.as_str());
            }
        }
        app_from_host(host, suffix)
    }

    /// The app a TLS server name is certified for: a custom domain's,
    /// `APP.localhost` or `APP.SUFFIX`, exactly. Unlike
    /// [`RouteTable::app_for_host`], never `APP.<anything>.localhost`:
    /// each such name would be one more certificate made for whoever asks.
    pub fn app_for_certificate<'a>(&'a self, name: &'a str, suffix: &str) -> Option<&'a str> {
        let name = name.trim_end_matches('.');
        let domain = match self.domains.get(name) {
            Some(app) => Some(app),
            None => self.domains.get(&name.to_ascii_lowercase()),
        };
        if let Some(app) = domain {
            return Some(app.as_str());
        }
        let (app, rest) = name.split_once('.')?;
        let named = rest.eq_ignore_ascii_case("localhost")
            || (!suffix.is_empty() && rest.eq_ignore_ascii_case(suffix));
        (named && !app.is_empty()).then_some(app)
    }
}

/// `host` without its `:port`, if it has one (IPv6 literals keep theirs).
fn host_without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.contains(':') => {
            name
        }
        _ => host,
    }
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
    /// Whether a start of the app is failing (crash loop): requests held
    /// for a cold start are answered at once instead of waiting.
    pub failing: bool,
    /// How requests wait when no instance can take them.
    pub admission: Admission,
    /// URL prefixes the router answers from files itself.
    pub statics: Arc<[crate::StaticDir]>,
    /// How its private names reach it.
    pub internal: Arc<InternalAccess>,
    /// Plain HTTP is redirected to HTTPS (308).
    pub force_https: bool,
    /// Answers over HTTPS carry `Strict-Transport-Security`.
    pub hsts: bool,
    /// Who may reach it and how much (`[edge]`).
    pub edge: Arc<crate::EdgeRules>,
    /// Every name of the app is served with berth's own CA's certificate
    /// (`[http_service] tls = "internal"`).
    pub tls_internal: bool,
    /// Its TCP services (fly's `[[services]]` without an `http` handler).
    pub tcp: Arc<[TcpRoute]>,
    /// The app is a static site the router answers from its files alone.
    pub site: Option<Arc<crate::Site>>,
    /// Each request is written to the access log (`[logs] access`).
    pub access_log: bool,
}

/// A TCP service of an app: a public port berth-server listens on and
/// forwards, as bytes, to the service's port of one of `backends`.
#[derive(Debug, Clone)]
pub struct TcpRoute {
    /// The public port.
    pub public_port: u16,
    /// The port the app listens on inside its instances.
    pub internal_port: u16,
    /// berth ends TLS (with the router's certificates) before forwarding.
    pub tls: bool,
    /// A PROXY protocol v2 header with the client's address goes first.
    pub proxy_proto: bool,
    /// Which PROXY protocol version: 1 (a text line) or 2.
    pub proxy_proto_version: u8,
    /// Healthy instances of the groups that serve it, each with a backend
    /// of its own for TCP (dial `internal_port` at its IP): connections
    /// are counted there, apart from HTTP's in-flight requests and limits.
    pub backends: Vec<Arc<Backend>>,
}

/// How an app is reached at its private names (`APP.internal`,
/// `GROUP.APP.internal`) from inside instances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InternalAccess {
    /// Its process groups that serve HTTP, each with a name of its own.
    pub groups: Vec<String>,
    /// The fixed port its instances listen on (`internal_port`), which the
    /// names answer on besides port 80.
    pub port: Option<u16>,
    /// Other apps that may reach it (`[internal] allow`); its own always may.
    pub callers: Vec<String>,
}

impl InternalAccess {
    /// Whether instances of `caller` may reach `app`, whose access this is.
    pub fn admits(&self, app: &str, caller: &str) -> bool {
        caller == app || self.callers.iter().any(|allowed| allowed == caller)
    }
}

/// What the router does with a request no instance can take now.
#[derive(Debug, Clone)]
pub struct Admission {
    /// In-flight requests per instance above which requests wait (the hard limit).
    pub hard_limit: Option<usize>,
    /// Called (with the app's name) when a request arrives for an app with
    /// no instance, which then starts one: the request is held meanwhile.
    /// `None`: such requests get 503 at once.
    pub wake: Option<Waker>,
    /// How long a request may be held (for a cold start, or in the queue).
    pub hold_timeout: Duration,
    /// How many requests may be held at once per app; beyond, 503 with Retry-After.
    pub queue_limit: usize,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            hard_limit: None,
            wake: None,
            hold_timeout: Duration::from_secs(30),
            queue_limit: 1000,
        }
    }
}

impl PartialEq for Admission {
    fn eq(&self, other: &Self) -> bool {
        self.hard_limit == other.hard_limit
            && self.wake.is_some() == other.wake.is_some()
            && self.hold_timeout == other.hold_timeout
            && self.queue_limit == other.queue_limit
    }
}

/// Asks the server to start an app that has no instance.
#[derive(Clone)]
pub struct Waker(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waker")
    }
}

/// Per-app request counters.
#[derive(Debug, Default)]
pub struct AppTraffic {
    /// Requests routed to the app (answered by it or by the router).
    pub requests: AtomicU64,
    /// Requests the router answered with a 5xx of its own.
    pub router_errors: AtomicU64,
    /// Requests held at the router now (waiting for a start or a free slot).
    pub waiting: AtomicUsize,
    /// TCP service connections open now: the app is not idle while any is.
    pub tcp_open: AtomicUsize,
    /// The edge rules' per-client state and what they refused.
    pub edge: crate::EdgeState,
    /// Answers by status class, latency and bytes.
    pub http: crate::stats::HttpStats,
}

impl AppTraffic {
    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests routed so far (the autoscaler sees idleness as no change).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests held at the router now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
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
    #[test]
    fn a_custom_domain_names_its_app_in_any_case_and_with_a_port() {
        let mut table = super::RouteTable::default();
        table
            .domains
            .insert("www.example.org".into(), "shop".into());
        for host in [
            "www.example.org",
            "WWW.Example.org:8080",
            "www.example.org.",
        ] {
            assert_eq!(
                table.app_for_host(host, "localhost"),
                Some("shop"),
                "{host}"
            );
        }
        assert_eq!(
            table.app_for_host("blog.localhost", "localhost"),
            Some("blog")
        );
        assert_eq!(table.app_for_host("other.example.org", "localhost"), None);
    }

    #[test]
    fn certificates_are_for_exact_names_only() {
        let mut table = super::RouteTable::default();
        table
            .domains
            .insert("www.example.org".into(), "shop".into());
        let certified = |name| table.app_for_certificate(name, "apps.example.com");
        assert_eq!(certified("www.example.org"), Some("shop"));
        assert_eq!(certified("shop.localhost"), Some("shop"));
        assert_eq!(certified("shop.apps.example.com."), Some("shop"));
        // Routed over HTTP, but no certificate for anyone who makes one up.
        assert_eq!(
            table.app_for_host("shop.x1.localhost", "apps.example.com"),
            Some("shop")
        );
        assert_eq!(certified("shop.x1.localhost"), None);
        assert_eq!(certified("shop.x1.apps.example.com"), None);
        assert_eq!(certified("localhost"), None);
        assert_eq!(certified(".localhost"), None);
    }

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
