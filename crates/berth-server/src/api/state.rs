//! What every handler shares: the store, the deployer, the reconciler's
//! handle and the server's settings.

use std::sync::Arc;

use berth_logs::LogStore;
use berth_store::Store;

use crate::deploy::Deployer;
use crate::reconciler::ReconcilerHandle;

/// What handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) store: Arc<Store>,
    pub(crate) logs: Arc<LogStore>,
    pub(crate) deployer: Arc<Deployer>,
    pub(crate) resources: Arc<crate::services::Resources>,
    pub(crate) jobs: Arc<crate::jobs::JobRunner>,
    pub(crate) drains: Arc<crate::drains::Drains>,
    /// Budgets: status, set, resume.
    pub(crate) budgets: Arc<crate::budgets::Budgets>,
    /// The dashboard's signed-in sessions.
    pub(crate) dashboard: Arc<crate::sessions::Sessions>,
    /// What the dashboard's charts show.
    pub(crate) history: Arc<crate::traffic_history::History>,
    /// The API is served over TLS (the session cookie is `Secure`).
    pub(crate) api_is_tls: bool,
    pub(crate) reconciler: ReconcilerHandle,
    pub(crate) token: Arc<String>,
    pub(crate) router_url: String,
    /// berth's own CA certificate, PEM (`berth certs root`).
    pub(crate) ca_root: Arc<String>,
    /// Certificates of the router's HTTPS, when it serves HTTPS.
    pub(crate) certs: Option<crate::edge::certs::CertDesk>,
    pub(crate) max_upload_bytes: u64,
    /// The built-in OCI registry's storage (`/v2/`).
    pub(crate) registry: Arc<berth_registry::Registry>,
    /// What the registry's collection keeps untagged: pushed this recently.
    pub(crate) registry_grace: std::time::Duration,
    pub(crate) disk: Arc<crate::disk::DiskReserve>,
    /// The tunnel's relay and state, when the server keeps one.
    pub(crate) tunnel: Option<(
        String,
        tokio::sync::watch::Receiver<berth_tunnel::TunnelState>,
    )>,
}

impl ApiState {
    pub(super) fn url(&self, app: &str) -> String {
        (self.deployer.url_for)(app)
    }
}
