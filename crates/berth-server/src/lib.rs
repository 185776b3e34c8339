//! The berth server: the API, the reconciler, deploys, and the router they feed.
//!
//! Start-up is three steps — load config (the caller's [`ServerConfig`]),
//! build the pieces (store, log store, builder, reconciler, deployer), spawn
//! them (router, reconciler loop, API) — and shutdown is one signal out (a
//! cancelled token) and one "all done" back ([`run`] returning once every
//! instance has stopped).
//!
//! Layout (private modules; ARCHITECTURE.md walks through them): `api`
//! translates HTTP to calls; `deploy` turns uploads, env changes and
//! rollbacks into releases that serve; `reconciler` makes what runs match
//! the store and starts every process; `health` checks instances.

pub(crate) mod access_log;
pub(crate) mod api;
pub(crate) mod app_usage;
pub(crate) mod autoscale;
pub(crate) mod budgets;
pub(crate) mod config;
pub(crate) mod data_dir;
pub(crate) mod deploy;
pub(crate) mod disk;
pub(crate) mod docker_images;
pub(crate) mod drains;
pub(crate) mod edge;
pub(crate) mod health;
pub(crate) mod image_build;
pub(crate) mod internal_names;
pub(crate) mod jobs;
pub(crate) mod launch;
pub(crate) mod log_retention;
pub(crate) mod meter;
pub(crate) mod notify;
pub(crate) mod reconciler;
pub(crate) mod remote_registry;
pub(crate) mod services;
pub(crate) mod sessions;
pub(crate) mod stored_spec;
pub(crate) mod tcp_services;
#[cfg(test)]
mod testing;
pub(crate) mod traffic_history;
pub(crate) mod tunnel;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use berth_build::{CargoBuilder, SlugStore, UnpackLimits};
use berth_logs::LogStore;
use berth_proto::ServerInfo;
use berth_router::RouteTable;
use berth_runtime::ProcessDriver;
use berth_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
pub use tokio_util::sync::CancellationToken;

pub use config::ServerConfig;
pub use data_dir::ensure_token;
use data_dir::{close_data_files, data_error, write_server_info};
pub use deploy::sandboxed_build::BuildLimits;

use crate::deploy::Deployer;
use crate::reconciler::{Reconciler, ReconcilerParts};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data dir could not be prepared.
    #[error("cannot prepare the data dir {path}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("cannot open the store")]
    Store(#[from] berth_store::StoreError),
    /// The price tables could not be read.
    #[error("cannot read the price tables: {0}")]
    Prices(berth_cost::CostError),
    /// The log store could not be opened.
    #[error("cannot open the log store")]
    Logs(#[from] berth_logs::LogError),
    /// The secrets key could not be read or made.
    #[error("cannot open the secrets vault")]
    Vault(#[from] berth_vault::VaultError),
    /// A listen address is taken or not allowed.
    #[error("cannot listen on {addr} (is another berth server running? see --api and --router)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The instances' network could not be set up as asked.
    #[error("cannot set up the instances' network: {0}")]
    Network(String),
    /// `--runtime docker` cannot be had.
    #[error("{0}")]
    Docker(String),
    /// berth's CA or the HTTPS settings could not be made.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// The URL an app is served at.
pub fn app_url(app: &str, suffix: &str, router: SocketAddr) -> String {
    let port = router.port();
    if port == 80 {
        format!("http://{app}.{suffix}")
    } else {
        format!("http://{app}.{suffix}:{port}")
    }
}

/// The address a process on this machine connects to for a listener on
/// `addr`: loopback when it listens on every address.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Runs a server until `shutdown` is cancelled; returns once every instance
/// has stopped. `ready` receives the addresses once the server listens.
pub async fn run(
    config: ServerConfig,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<ServerInfo>>,
) -> Result<(), ServerError> {
    // Load.
    // Nothing berth writes is for other users: services and instances that
    // run as their own users get only the directories opened for them.
    berth_runtime::private_umask();
    let data = &config.data_dir;
    std::fs::create_dir_all(data).map_err(data_error(data))?;
    // Private to berth's user; as root, services that run as their own
    // users (PostgreSQL, Redis) may pass through it, never list it.
    let data_mode = if berth_runtime::can_isolate() {
        0o711
    } else {
        0o700
    };
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(data_mode))
        .map_err(data_error(data))?;
    std::fs::create_dir_all(&config.build_cache_dir)
        .map_err(data_error(&config.build_cache_dir))?;
    let token = ensure_token(&config.token_path()).map_err(data_error(&config.token_path()))?;
    let tmp = config.tmp_dir();
    if tmp.exists() {
        // Leftovers of uploads a crashed server was unpacking.
        let _ = std::fs::remove_dir_all(&tmp);
    }

    // Build.
    let store = Arc::new(Store::open(&config.store_path())?);
    let logs = Arc::new(LogStore::open_with_cap(
        &config.logs_path(),
        berth_spec::DEFAULT_LOG_MAX_BYTES,
    )?);
    close_data_files(data).map_err(data_error(data))?;
    let slugs = SlugStore::new(config.slugs_dir());
    let api_listener = bind(config.api_addr).await?;
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let router_threads = std::thread::available_parallelism().map_or(2, |cores| cores.get().min(4));
    let router_sockets = berth_router::RouterSockets::bind(config.router_addr, router_threads)
        .map_err(|source| ServerError::Bind {
            addr: config.router_addr,
            source,
        })?;
    let api_addr = api_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: config.api_addr,
            source,
        })?;
    let router_addr = router_sockets.local_addr();
    let api_tls = config.api_tls || !api_addr.ip().is_loopback();
    if api_tls {
        tracing::info!(
            "the API is served over TLS, with a certificate of berth's own CA; clients pin it with `berth login https://{api_addr} --token …`"
        );
    }
    let (routes, route_receiver) = watch::channel(Arc::new(RouteTable::default()));
    let process_driver = if config.isolation {
        ProcessDriver::detect()
    } else {
        ProcessDriver::plain()
    };
    if config.isolation {
        tracing::info!("{}", process_driver.describe());
    } else {
        tracing::info!(
            "isolation is off (--no-isolation): instances are plain processes of this user on $PORT; sizes, users and namespaces are not enforced"
        );
    }
    let mut driver: Arc<dyn berth_runtime::Driver> = Arc::new(process_driver);
    let suffix = config.domain_suffix.clone();
    let url_for: Arc<dyn Fn(&str) -> String + Send + Sync> =
        Arc::new(move |app| app_url(app, &suffix, router_addr));
    let isolated = config.isolation && berth_runtime::can_isolate();
    let networks = if isolated {
        berth_runtime::net::Networks::detect().map_err(ServerError::Network)?
    } else {
        berth_runtime::net::Networks::none()
    };
    // A Shuttle project's runtime speaks plain HTTP to its platform: with
    // the API over TLS, it gets a loopback listener of its own that serves
    // only the runtime API.
    let runtime_listener = if api_tls {
        Some(bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?)
    } else {
        None
    };
    let runtime_api_addr = match &runtime_listener {
        Some(listener) => listener.local_addr().map_err(|source| ServerError::Bind {
            addr: api_addr,
            source,
        })?,
        None => reachable(api_addr),
    };
    let resources = Arc::new(services::Resources::new(
        data,
        store.clone(),
        logs.clone(),
        isolated,
        networks,
        format!("http://{runtime_api_addr}"),
        url_for.clone(),
    )?);
    resources.serve_internal_names(internal_names::InternalNames::new(route_receiver.clone()));
    if let Some(socket) = &config.docker_socket {
        if !isolated {
            return Err(ServerError::Docker(
                "--runtime docker needs berth running as root with isolation on: it links each container's network as its own".into(),
            ));
        }
        let docker =
            docker_images::DockerImages::connect(socket, data, reachable(api_addr), &token)
                .await
                .map_err(ServerError::Docker)?;
        tracing::info!("image releases run as containers of the Docker engine at {socket}");
        driver = Arc::new(berth_runtime::docker::ContainerOrProcess {
            process: driver,
            docker: docker.runtime.clone(),
        });
        resources.use_docker(docker);
    }
    // Databases and Redis servers first: instances expect them.
    resources.start().await;
    let launcher = launch::Launcher::new(slugs.clone(), resources.clone());
    let (woken, wakes) = tokio::sync::mpsc::unbounded_channel();
    let (reconciler, handle) = Reconciler::new(ReconcilerParts {
        store: store.clone(),
        logs: logs.clone(),
        driver,
        launcher,
        probe: Arc::new(health::NetworkProbe),
        routes,
        wakes: Some(woken),
    });
    let jobs = jobs::JobRunner::new(
        store.clone(),
        logs.clone(),
        handle.clone(),
        launch::Launcher::new(slugs.clone(), resources.clone()),
    )?;
    let autoscaler =
        autoscale::Autoscaler::new(store.clone(), handle.clone(), route_receiver.clone(), wakes);
    let builder = if isolated {
        let runner = deploy::sandboxed_build::SandboxedCargo::new(
            resources.clone(),
            handle.clone(),
            config.build_limits,
            config.disk_reserve_bytes,
        );
        CargoBuilder::with_runner(config.build_cache_dir.clone(), Arc::new(runner))
    } else {
        CargoBuilder::new(config.build_cache_dir.clone())
    };
    let prices = Arc::new(
        berth_cost::PriceTable::load(config.prices_dir.as_deref()).map_err(ServerError::Prices)?,
    );
    let registry = berth_registry::Registry::open(&data.join("registry"))
        .map_err(|err| data_error(&data.join("registry"))(std::io::Error::other(err)))?;
    let registry = Arc::new(registry);
    let deployer = Arc::new(
        Deployer::new(
            store.clone(),
            logs.clone(),
            slugs,
            resources.clone(),
            Arc::new(builder),
            handle.clone(),
            tmp,
            UnpackLimits {
                max_bytes: config.max_source_bytes,
                ..UnpackLimits::default()
            },
            url_for,
            config.keep_releases,
            registry.clone(),
        )
        .with_prices(prices.clone())
        .with_domain_suffix(&config.domain_suffix)
        .with_dockerfile_builds(deploy::DockerfileBuilds {
            dir: data.join("buildah"),
            limits: config.build_limits,
            isolated,
            disk_reserve: config.disk_reserve_bytes,
        }),
    );
    deployer.collect_slugs();
    let router_url = format!("http://{router_addr}");
    let local_ca = edge::local_ca(&config.tls_dir())?;
    let ca_root = local_ca.root_pem().to_string();
    let api_tls = if api_tls {
        Some(edge::api_tls(
            &local_ca,
            &config.tls_dir(),
            api_addr,
            &config.api_names,
        )?)
    } else {
        None
    };
    let https = match config.https_addr {
        Some(addr) => Some(edge::bind(
            edge::HttpsSetup {
                addr,
                threads: router_threads,
                tls_dir: config.tls_dir(),
                acme: config.acme.clone(),
                suffix: config.domain_suffix.clone(),
            },
            local_ca,
            route_receiver.clone(),
            store.clone(),
        )?),
        None => None,
    };
    let acme_http: Option<berth_router::AcmeAnswers> = https.as_ref().map(|https| {
        let challenges = https.challenges.clone();
        Arc::new(move |token: &str| challenges.http_answer(token)) as berth_router::AcmeAnswers
    });
    let cert_desk = https.as_ref().map(|https| https.desk.clone());
    let https_url = https
        .as_ref()
        .map(|https| format!("https://{}", https.sockets.local_addr()));
    let tunnel_state = config.tunnel.as_ref().map(|(relay, _)| {
        let (sender, receiver) = tokio::sync::watch::channel(berth_tunnel::TunnelState::Connecting);
        (relay.clone(), sender, receiver)
    });
    tokio::spawn(log_retention::run(
        store.clone(),
        logs.clone(),
        shutdown.clone(),
    ));
    let drains = drains::Drains::start(store.clone(), logs.clone(), shutdown.clone());
    // Instances wait while the log writer is behind, rather than lose lines.
    let backlog_of = logs.clone();
    berth_runtime::set_output_backlog(Arc::new(move || backlog_of.backlogged()));
    let state_logs = logs.clone();
    let history = Arc::new(traffic_history::History::default());
    tokio::spawn(history.clone().run(handle.clone(), shutdown.clone()));
    let (budgets, meter_task) = meter::start(
        meter::MeterSetup {
            store: store.clone(),
            reconciler: handle.clone(),
            jobs: jobs.clone(),
            prices,
            server_usd: config.server_usd,
            every: config.meter_interval,
            volumes_dir: data.join("volumes"),
            resources: resources.clone(),
        },
        &shutdown,
    );
    api::spawn_registry_collector(
        registry.clone(),
        berth_image::ImageStore::new(&resources.images_dir(), Default::default()),
        api::release_pins(store.clone(), deployer.slugs.clone()),
        config.registry_grace,
        shutdown.clone(),
    );
    let state = api::ApiState {
        budgets,
        dashboard: Arc::new(sessions::Sessions::default()),
        history,
        api_is_tls: api_tls.is_some(),
        drains,
        store,
        logs,
        deployer,
        resources: resources.clone(),
        reconciler: handle,
        jobs: jobs.clone(),
        token: Arc::new(token),
        router_url: router_url.clone(),
        ca_root: Arc::new(ca_root),
        certs: cert_desk,
        max_upload_bytes: config.max_upload_bytes,
        registry: registry.clone(),
        registry_grace: config.registry_grace,
        disk: Arc::new(disk::DiskReserve {
            path: data.to_path_buf(),
            bytes: config.disk_reserve_bytes,
        }),
        tunnel: tunnel_state
            .as_ref()
            .map(|(relay, _, receiver)| (relay.clone(), receiver.clone())),
    };

    // Spawn.
    let reconciler_task = tokio::spawn(reconciler.run(shutdown.clone()));
    let scheduler_task = tokio::spawn(jobs::run_scheduler(jobs, shutdown.clone()));
    let autoscaler_task = tokio::spawn(autoscaler.run(shutdown.clone()));
    let router_shutdown = shutdown.clone();
    let logs_for_router = state_logs.clone();
    let https_port = https
        .as_ref()
        .map(|https| https.sockets.local_addr().port());
    let trusted_proxies: Arc<[berth_proto::IpRange]> = Arc::from(config.trusted_proxies.clone());
    let mut https_edge = None;
    let mut router_threads = match https {
        Some(https) => {
            let addr = https.sockets.local_addr();
            let https_shutdown = shutdown.clone();
            if let Some(manager) = https.manager {
                tokio::spawn(manager.run(shutdown.clone()));
            }
            let edge = berth_router::Edge {
                access_log: Some(access_log::sink(logs_for_router.clone())),
                tls: Some(https.config),
                acme_http: acme_http.clone(),
                https_port,
                trusted_proxies: trusted_proxies.clone(),
                host_filter: None,
            };
            https_edge = Some(edge.clone());
            https
                .sockets
                .serve(
                    route_receiver.clone(),
                    config.domain_suffix.clone(),
                    edge,
                    move || https_shutdown.clone().cancelled_owned(),
                )
                .map_err(|source| ServerError::Bind { addr, source })?
        }
        None => Vec::new(),
    };
    tokio::spawn(
        tcp_services::TcpServices {
            routes: route_receiver.clone(),
            bind_ip: router_addr.ip(),
            tls: https_edge.as_ref().and_then(|edge| edge.tls.clone()),
            store: state.store.clone(),
        }
        .run(shutdown.clone()),
    );
    let plain = berth_router::Edge {
        access_log: Some(access_log::sink(logs_for_router.clone())),
        tls: None,
        acme_http,
        https_port,
        trusted_proxies,
        host_filter: None,
    };
    if let (Some((relay, token)), Some((_, sender, _))) = (&config.tunnel, tunnel_state) {
        tunnel::start(
            tunnel::TunnelSetup {
                relay: relay.clone(),
                token: token.clone(),
                table: route_receiver.clone(),
                domain_suffix: config.domain_suffix.clone(),
                plain: plain.clone(),
                https: https_edge,
                state: sender,
            },
            &shutdown,
        );
    }
    router_threads.extend(
        router_sockets
            .serve(
                route_receiver,
                config.domain_suffix.clone(),
                plain,
                move || router_shutdown.clone().cancelled_owned(),
            )
            .map_err(|source| ServerError::Bind {
                addr: router_addr,
                source,
            })?,
    );
    let api_shutdown = shutdown.clone();
    let api_scheme = if api_tls.is_some() { "https" } else { "http" };
    if let Some(listener) = runtime_listener {
        tokio::spawn(api::serve(
            listener,
            api::runtime_routes(state.clone()),
            None,
            shutdown.clone(),
        ));
    }
    if let Some(listener) = metrics_listener {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving /metrics without the token");
        }
        tokio::spawn(api::serve_metrics(
            listener,
            state.clone(),
            shutdown.clone(),
        ));
    }
    let api_task = tokio::spawn(api::serve(
        api_listener,
        api::routes(state),
        api_tls,
        api_shutdown,
    ));
    let info = ServerInfo {
        api_url: format!("{api_scheme}://{api_addr}"),
        router_url,
        https_url,
        pid: std::process::id(),
    };
    write_server_info(&config.server_info_path(), &info)
        .map_err(data_error(&config.server_info_path()))?;
    tracing::info!(api = %info.api_url, router = %info.router_url, data = %data.display(), "berth server ready");
    if let Some(ready) = ready {
        let _ = ready.send(info);
    }

    shutdown.cancelled().await;
    tracing::info!("shutting down: stopping instances");
    let _ = tokio::task::spawn_blocking(move || {
        for thread in router_threads {
            let _ = thread.join();
        }
    })
    .await;
    let _ = reconciler_task.await;
    let _ = scheduler_task.await;
    if let Some(meter_task) = meter_task {
        let _ = meter_task.await;
    }
    let _ = autoscaler_task.await;
    resources.shutdown().await;
    // Followed logs would keep the API open; it has had its chance to finish.
    if tokio::time::timeout(std::time::Duration::from_secs(2), api_task)
        .await
        .is_err()
    {
        tracing::warn!("the API did not finish in time");
    }
    // Every instance has stopped and no deploy runs: the images' stacked
    // roots wait unmounted for the next start (which mounts them again).
    berth_image::ImageStore::new(&resources.images_dir(), Default::default()).unmount_all();
    let _ = std::fs::remove_file(config.server_info_path());
    Ok(())
}
