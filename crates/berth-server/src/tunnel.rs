//! The server's end of a tunnel to a relay (`--tunnel HOST:PORT`): the
//! connections the relay sends are served by the router like its own
//! listeners' (HTTPS by the same certificates), from the client address
//! the relay's PROXY v2 header names.

use std::sync::Arc;

use berth_router::RouteTable;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// What a tunnel needs.
pub(crate) struct TunnelSetup {
    pub(crate) relay: String,
    pub(crate) token: berth_tunnel::TunnelToken,
    pub(crate) table: watch::Receiver<Arc<RouteTable>>,
    pub(crate) domain_suffix: String,
    /// The plain router's settings, for port 80's connections.
    pub(crate) plain: berth_router::Edge,
    /// HTTPS's, for port 443's (none: they are closed).
    pub(crate) https: Option<berth_router::Edge>,
    pub(crate) state: watch::Sender<berth_tunnel::TunnelState>,
}

/// How many tunnelled connections may wait for the router.
const QUEUE: usize = 1024;

/// Keeps the tunnel up and serves what comes through it until `shutdown`.
pub(crate) fn start(mut setup: TunnelSetup, shutdown: &CancellationToken) {
    // Only the names the relay routes here are answered: a client that
    // came in for one may not ask the router for another (an app under
    // `localhost`, say) on the same connection.
    let current = setup.state.subscribe();
    let admits: berth_router::HostFilter = Arc::new(move |host: &str| match &*current.borrow() {
        berth_tunnel::TunnelState::Connected { domains, .. } => domains
            .iter()
            .any(|pattern| berth_tunnel::tokens::matches(pattern, host)),
        _ => false,
    });
    setup.plain.host_filter = Some(admits.clone());
    // Redirects to HTTPS go to the relay's port 443, not this server's own.
    setup.plain.https_port = Some(443);
    if let Some(https) = &mut setup.https {
        https.host_filter = Some(admits);
    }
    let (http, http_connections) = mpsc::channel(QUEUE);
    let (https, https_connections) = mpsc::channel(QUEUE);
    tokio::spawn(berth_router::serve_tunneled(
        http_connections,
        setup.table.clone(),
        setup.domain_suffix.clone(),
        setup.plain,
        shutdown.clone().cancelled_owned(),
    ));
    match setup.https {
        Some(edge) => {
            tokio::spawn(berth_router::serve_tunneled(
                https_connections,
                setup.table,
                setup.domain_suffix,
                edge,
                shutdown.clone().cancelled_owned(),
            ));
        }
        None => drop(https_connections),
    }
    tokio::spawn(berth_tunnel::home::run(
        setup.relay,
        setup.token,
        berth_tunnel::Destinations { http, https },
        setup.state,
        shutdown.clone().cancelled_owned(),
    ));
}
