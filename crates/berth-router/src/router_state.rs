//! What every connection of one listener shares: the route table, the
//! upstream connections, and the listener's edge settings.

use std::sync::Arc;

use tokio::sync::watch;

use crate::route::RouteTable;
use crate::upstream::Upstream;

/// The state one listener's connections share.
pub(crate) struct RouterState {
    pub(crate) table: watch::Receiver<Arc<RouteTable>>,
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) domain_suffix: String,
    pub(crate) acme_http: Option<AcmeAnswers>,
    /// This listener is HTTPS.
    pub(crate) secure: bool,
    /// The HTTPS port plain requests of `force_https` apps are sent to.
    pub(crate) https_port: Option<u16>,
    /// Proxies whose `X-Forwarded-*` headers are believed.
    pub(crate) trusted_proxies: Arc<[berth_proto::IpRange]>,
    /// Only the hosts this admits are answered (a tunnel's: the names its
    /// token serves); others get 421.
    pub(crate) host_filter: Option<HostFilter>,
    /// Where the access log lines of apps that keep one go.
    pub(crate) access_log: Option<crate::measure::AccessLog>,
}

/// Whether a listener answers for a host name (lowercase, without port).
pub type HostFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The key authorization for an ACME HTTP-01 token, while its challenge runs.
pub type AcmeAnswers = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

impl RouterState {
    pub(crate) fn new(
        table: watch::Receiver<Arc<RouteTable>>,
        domain_suffix: String,
    ) -> Arc<RouterState> {
        Arc::new(RouterState {
            table,
            upstream: Arc::new(Upstream::new()),
            domain_suffix,
            acme_http: None,
            secure: false,
            https_port: None,
            trusted_proxies: Arc::from(Vec::new()),
            host_filter: None,
            access_log: None,
        })
    }
}
