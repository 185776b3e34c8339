//! The router's HTTPS: its listening sockets, the certificates for the
//! names berth serves — the ACME CA's, when the server has one
//! (`--acme-directory`, `--acme-email`), for custom domains and
//! `APP.SUFFIX` names a public CA can issue for; berth's own CA's for
//! everything else and for `tls internal` names — and the ACME challenges
//! the router answers.

use std::net::SocketAddr;
use std::sync::Arc;

use berth_router::RouteTable;
use tokio::sync::watch;

use crate::ServerError;

pub(crate) mod certs;
mod names;
mod renewal_info;

use names::from_acme;

/// What HTTPS needs to start serving, and what answers ACME.
pub(crate) struct Https {
    pub(crate) sockets: berth_router::RouterSockets,
    pub(crate) config: Arc<rustls::ServerConfig>,
    /// Obtains and renews the CA's certificates (with ACME only).
    pub(crate) manager: Option<certs::CertManager>,
    pub(crate) desk: certs::CertDesk,
    pub(crate) challenges: Arc<berth_tls::Challenges>,
}

/// berth's own CA, made in `tls_dir` on first start.
pub(crate) fn local_ca(tls_dir: &std::path::Path) -> Result<berth_tls::LocalCa, ServerError> {
    berth_tls::LocalCa::open_or_create(tls_dir).map_err(|err| ServerError::Tls(err.to_string()))
}

/// Where HTTPS listens and where its certificates come from.
pub(crate) struct HttpsSetup {
    pub(crate) addr: SocketAddr,
    pub(crate) threads: usize,
    pub(crate) tls_dir: std::path::PathBuf,
    pub(crate) acme: Option<berth_tls::AcmeSettings>,
    pub(crate) suffix: String,
}

/// Binds HTTPS, with certificates for each name the route table serves:
/// an app's `APP.localhost`/`APP.SUFFIX` or a custom domain of an app.
pub(crate) fn bind(
    setup: HttpsSetup,
    ca: berth_tls::LocalCa,
    routes: watch::Receiver<Arc<RouteTable>>,
    store: Arc<berth_store::Store>,
) -> Result<Https, ServerError> {
    let addr = setup.addr;
    let sockets = berth_router::RouterSockets::bind(addr, setup.threads)
        .map_err(|source| ServerError::Bind { addr, source })?;
    let suffix = setup.suffix.clone();
    let served_routes = routes.clone();
    let serves: berth_tls::NameFilter = Arc::new(move |name: &str| {
        let table = served_routes.borrow().clone();
        table
            .app_for_certificate(name, &suffix)
            .is_some_and(|app| table.apps.contains_key(app))
    });
    let with_acme = setup.acme.is_some();
    let (public_routes, public_suffix) = (routes.clone(), setup.suffix.clone());
    let public: berth_tls::NameFilter = Arc::new(move |name: &str| {
        with_acme && from_acme(&public_routes.borrow(), &public_suffix, name)
    });
    let challenges = Arc::new(berth_tls::Challenges::default());
    let certificates = Arc::new(berth_tls::Certificates::new(
        ca,
        serves,
        public.clone(),
        challenges.clone(),
        &setup.tls_dir.join("certs"),
    ));
    let config = berth_tls::server_config(certificates.clone())
        .map_err(|err| ServerError::Tls(err.to_string()))?;
    let desk = certs::CertDesk {
        certificates,
        public,
        status: Default::default(),
        wake: Arc::new(tokio::sync::Notify::new()),
        directory: setup.acme.as_ref().map(|acme| acme.directory.clone()),
        suffix: setup.suffix.clone(),
    };
    let manager = setup.acme.map(|settings| certs::CertManager {
        client: berth_tls::AcmeClient::new(
            settings,
            &setup.tls_dir.join("acme"),
            challenges.clone(),
        ),
        desk: desk.clone(),
        store,
        routes,
        suffix: setup.suffix,
        without_ari: Default::default(),
    });
    Ok(Https {
        sockets,
        config,
        manager,
        desk,
        challenges,
    })
}

/// The API's TLS settings: a certificate of berth's own CA for this host's
/// names and addresses and `extra_names`, kept in `tls_dir` (`api.pem`,
/// `api.key` 0600, and the names it holds in `api.names`) so that it stays
/// the same across restarts while the names do; clients pin the CA at
/// `berth login`.
pub(crate) fn api_tls(
    ca: &berth_tls::LocalCa,
    tls_dir: &std::path::Path,
    addr: SocketAddr,
    extra_names: &[String],
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let tls = |err: String| ServerError::Tls(err);
    let chain_path = tls_dir.join("api.pem");
    let key_path = tls_dir.join("api.key");
    let names_path = tls_dir.join("api.names");
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname")
        && !host.trim().is_empty()
    {
        names.push(host.trim().to_string());
    }
    if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
        names.push(addr.ip().to_string());
    }
    for name in extra_names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let wanted = names.join("\n");
    let kept = (
        std::fs::read_to_string(&chain_path),
        std::fs::read_to_string(&key_path),
        std::fs::read_to_string(&names_path),
    );
    let (chain, key) = match kept {
        (Ok(chain), Ok(key), Ok(held)) if held == wanted => (chain, key),
        _ => {
            let (chain, key) = ca
                .issue_pem_for(&names, 3650)
                .map_err(|err| tls(err.to_string()))?;
            berth_tls::write_private(&key_path, &key)
                .and_then(|()| std::fs::write(&chain_path, &chain))
                .and_then(|()| std::fs::write(&names_path, &wanted))
                .map_err(|err| tls(format!("cannot keep the API's certificate: {err}")))?;
            (chain, key)
        }
    };
    berth_tls::single_cert_config(&chain, &key).map_err(|err| tls(err.to_string()))
}
