//! The router's HTTPS: its listening sockets, and certificates for the
//! names berth serves from berth's own CA (see `berth_tls`).

use std::net::SocketAddr;
use std::sync::Arc;

use berth_router::RouteTable;
use tokio::sync::watch;

use crate::ServerError;

/// What HTTPS needs to start serving.
pub(crate) struct Https {
    pub(crate) sockets: berth_router::RouterSockets,
    pub(crate) config: Arc<rustls::ServerConfig>,
}

/// berth's own CA, made in `tls_dir` on first start.
pub(crate) fn local_ca(tls_dir: &std::path::Path) -> Result<berth_tls::LocalCa, ServerError> {
    berth_tls::LocalCa::open_or_create(tls_dir).map_err(|err| ServerError::Tls(err.to_string()))
}

/// Binds HTTPS on `addr`, with certificates from `ca` for each name the
/// route table serves: an app's `APP.localhost`/`APP.SUFFIX` or a custom
/// domain of an app that exists.
pub(crate) fn bind(
    addr: SocketAddr,
    threads: usize,
    ca: berth_tls::LocalCa,
    routes: watch::Receiver<Arc<RouteTable>>,
    suffix: String,
) -> Result<Https, ServerError> {
    let sockets = berth_router::RouterSockets::bind(addr, threads)
        .map_err(|source| ServerError::Bind { addr, source })?;
    let serves: berth_tls::NameFilter = Arc::new(move |name: &str| {
        let table = routes.borrow().clone();
        table
            .app_for_host(name, &suffix)
            .is_some_and(|app| table.apps.contains_key(app))
    });
    let certificates = Arc::new(berth_tls::Certificates::new(ca, serves));
    let config =
        berth_tls::server_config(certificates).map_err(|err| ServerError::Tls(err.to_string()))?;
    Ok(Https { sockets, config })
}
