//! Server configuration: where data lives and where the server listens.

use std::net::SocketAddr;
use std::path::PathBuf;

/// How a server is set up. Built by the binary from flags and env.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Everything berth keeps: store, logs, slugs, token.
    pub data_dir: PathBuf,
    /// Where the API listens (loopback by default).
    pub api_addr: SocketAddr,
    /// Where the router listens.
    pub router_addr: SocketAddr,
    /// Where `GET /metrics` is also served, without the token (for a
    /// Prometheus on this host or a private network).
    pub metrics_addr: Option<SocketAddr>,
    /// Where the router serves HTTPS, if it does.
    pub https_addr: Option<SocketAddr>,
    /// Where custom domains' certificates come from, when from an ACME CA.
    pub acme: Option<berth_tls::AcmeSettings>,
    /// Serve the API over TLS even on loopback (it always is elsewhere).
    pub api_tls: bool,
    /// Names and addresses the API's certificate holds besides this host's
    /// own (the host name a remote client dials).
    pub api_names: Vec<String>,
    /// A relay to keep a tunnel to (`--tunnel HOST:PORT`) and its token.
    pub tunnel: Option<(String, berth_tunnel::TunnelToken)>,
    /// Proxies in front of the router whose `X-Forwarded-*` are believed.
    pub trusted_proxies: Vec<berth_proto::IpRange>,
    /// Per-app build directories (cargo's target dirs). Defaults to
    /// `<data>/build`; servers may share one.
    pub build_cache_dir: PathBuf,
    /// Apps are served at `APP.<domain_suffix>` (and always `APP.localhost`).
    pub domain_suffix: String,
    /// Largest accepted upload, compressed.
    pub max_upload_bytes: u64,
    /// Largest accepted source tree, unpacked.
    pub max_source_bytes: u64,
    /// Releases of each app whose slugs are kept for rollback (besides the
    /// one it runs); older slugs, and those of failed deploys and destroyed
    /// apps, are deleted.
    pub keep_releases: u32,
    /// Bytes kept free on the data dir's disk: below, the API refuses to
    /// write (507) and says why.
    pub disk_reserve_bytes: u64,
    /// With `--runtime docker`: the Docker engine's socket, where image
    /// instances run.
    pub docker_socket: Option<String>,
    /// What a build may use when it runs sandboxed (as root).
    pub build_limits: crate::BuildLimits,
    /// Whether instances are isolated (own user, namespaces, cgroup) when
    /// running as root. Off: plain processes, as without root.
    pub isolation: bool,
    /// How often the meter writes usage and budgets are evaluated;
    /// `None`: no metering (and no budget acts).
    pub meter_interval: Option<std::time::Duration>,
    /// What the registry's collection keeps untagged (`--registry-grace`).
    pub registry_grace: std::time::Duration,
    /// Price tables replacing or adding to the shipped ones (`--prices`).
    pub prices_dir: Option<PathBuf>,
    /// What this server costs a month, for `own-server` prices.
    pub server_usd: Option<f64>,
}

impl ServerConfig {
    /// A config with defaults for everything but the data dir.
    pub fn new(data_dir: PathBuf) -> Self {
        ServerConfig {
            build_cache_dir: data_dir.join("build"),
            data_dir,
            api_addr: SocketAddr::from(([127, 0, 0, 1], 8079)),
            router_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_addr: None,
            https_addr: None,
            acme: None,
            trusted_proxies: Vec::new(),
            api_tls: false,
            api_names: Vec::new(),
            tunnel: None,
            domain_suffix: "localhost".into(),
            max_upload_bytes: 200 * 1024 * 1024,
            max_source_bytes: 512 * 1024 * 1024,
            keep_releases: 10,
            isolation: true,
            build_limits: crate::BuildLimits::default(),
            disk_reserve_bytes: 512 * 1024 * 1024,
            meter_interval: Some(std::time::Duration::from_secs(10)),
            registry_grace: std::time::Duration::from_secs(24 * 3600),
            prices_dir: None,
            server_usd: None,
            docker_socket: None,
        }
    }

    /// The SQLite state store.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("berth.db")
    }

    /// The log database.
    pub fn logs_path(&self) -> PathBuf {
        self.data_dir.join("logs.db")
    }

    /// Release slugs.
    pub fn slugs_dir(&self) -> PathBuf {
        self.data_dir.join("slugs")
    }

    /// Scratch space for uploads.
    pub fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join("tmp")
    }

    /// berth's own CA and certificates.
    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }

    /// The API token (mode 0600).
    pub fn token_path(&self) -> PathBuf {
        self.data_dir.join("token")
    }

    /// Where a running server writes its addresses.
    pub fn server_info_path(&self) -> PathBuf {
        self.data_dir.join("server.json")
    }
}
