//! `berth server`'s flags: where it listens, where certificates come
//! from, the limits it keeps.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Args, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    /// Manage the server instead of running it here.
    #[command(subcommand)]
    pub action: Option<ServerAction>,
    /// Where the API listens. On an address beyond loopback it is served
    /// over TLS (clients pin it with `berth login`).
    #[arg(long = "api", env = "BERTH_API_ADDR", default_value = "127.0.0.1:8079")]
    pub api_addr: SocketAddr,
    /// Serve the API over TLS on loopback too.
    #[arg(long)]
    pub api_tls: bool,
    /// Also serve `GET /metrics` here, without the API token (for a
    /// Prometheus on this host or a private network; nothing else is
    /// served there).
    #[arg(long = "metrics", value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// A name or address the API's certificate holds besides this host's
    /// own: the one clients dial (repeatable).
    #[arg(long = "api-name", value_parser = api_name)]
    pub api_names: Vec<String>,
    /// Where the router listens (default: 127.0.0.1:8080; 0.0.0.0:80
    /// with --public).
    #[arg(long = "router", env = "BERTH_ROUTER_ADDR")]
    pub router_addr: Option<SocketAddr>,
    /// Where the router serves HTTPS (HTTP/2 and HTTP/1.1), with
    /// certificates of berth's own CA (`berth certs root`) or the ACME
    /// CA's. Default: none; 0.0.0.0:443 with --public.
    #[arg(long = "https", env = "BERTH_HTTPS_ADDR")]
    pub https_addr: Option<SocketAddr>,
    /// Serve the internet: the router on 0.0.0.0:80 and HTTPS on
    /// 0.0.0.0:443 (unless --router or --https say otherwise), with
    /// certificates from Let's Encrypt (or --acme-directory).
    #[arg(
        long,
        env = "BERTH_PUBLIC",
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::SetTrue
    )]
    pub public: bool,
    /// Custom domains get certificates from this ACME directory (default
    /// with --acme-email: Let's Encrypt); without either, from berth's own CA.
    #[arg(long, env = "BERTH_ACME_DIRECTORY")]
    pub acme_directory: Option<String>,
    /// The contact address given to the ACME CA (expiry notices).
    #[arg(long, env = "BERTH_ACME_EMAIL")]
    pub acme_email: Option<String>,
    /// A root certificate (PEM) to trust for the ACME directory's own
    /// HTTPS: a private CA such as step-ca, or a test CA.
    #[arg(long, env = "BERTH_ACME_CA_ROOT")]
    pub acme_ca_root: Option<PathBuf>,
    /// A proxy or load balancer in front of berth (an address or range,
    /// repeatable): the client address and X-Forwarded-* headers it sends
    /// are believed, for apps' edge rules and headers. Others' are replaced.
    #[arg(long = "trusted-proxy")]
    pub trusted_proxies: Vec<berth_proto::IpRange>,
    /// Keep a tunnel to a `berth relay` (`HOST:PORT`) for a machine the
    /// internet cannot connect to: the relay forwards its apps' HTTPS
    /// (undecrypted) and HTTP here. Needs --tunnel-token.
    #[arg(long, env = "BERTH_TUNNEL")]
    pub tunnel: Option<String>,
    /// The token `berth relay token add` printed.
    #[arg(long, env = "BERTH_TUNNEL_TOKEN", hide_env_values = true, value_parser = tunnel_token)]
    pub tunnel_token: Option<berth_tunnel::TunnelToken>,
    /// A file holding the token (what `berth server install` writes, so
    /// the token is in no unit file or command line).
    #[arg(long, conflicts_with = "tunnel_token")]
    pub tunnel_token_file: Option<PathBuf>,
    /// Where per-app cargo target dirs live (default: DATA/build).
    #[arg(long, env = "BERTH_BUILD_CACHE")]
    pub build_cache: Option<PathBuf>,
    /// MiB kept free on the data dir's disk; below it the server refuses
    /// deploys and other writes, and says why.
    #[arg(long, default_value_t = 512)]
    pub disk_reserve_mib: u64,
    /// Memory a build may use, in MiB (as root, builds run sandboxed).
    #[arg(long, default_value_t = 4096)]
    pub build_memory: u64,
    /// How long a build may take before it is stopped (`90s`, `30m`, `1h`).
    #[arg(long, default_value = "30m", value_parser = berth_spec::parse_duration)]
    pub build_timeout: std::time::Duration,
    /// Apps are served at APP.DOMAIN as well as APP.localhost.
    #[arg(long, env = "BERTH_DOMAIN", default_value = "localhost")]
    pub domain: String,
    /// Largest accepted upload in MiB.
    #[arg(long, default_value_t = 200)]
    pub max_upload_mib: u64,
    /// How often the meter writes usage and budgets are evaluated (a
    /// budget acts about this long after it is crossed).
    #[arg(long, default_value = "10s", value_parser = berth_spec::parse_duration)]
    pub meter_interval: std::time::Duration,
    /// Images pushed to the built-in registry this recently are kept by its
    /// garbage collection even when no tag or release names them.
    #[arg(long, default_value = "24h", value_parser = berth_spec::parse_duration)]
    pub registry_grace: std::time::Duration,
    /// Meter nothing: no usage, no budgets acting (for benchmarks).
    #[arg(long)]
    pub no_meter: bool,
    /// A folder of price tables (TOML) replacing or adding to berth's, for budgets.
    #[arg(long)]
    pub prices: Option<PathBuf>,
    /// What this server costs a month, for budgets priced as `own-server`.
    #[arg(long)]
    pub server_usd: Option<f64>,
    /// Releases of each app kept ready for rollback; older slugs (and those
    /// of failed deploys and destroyed apps) are deleted.
    #[arg(long, default_value_t = 10)]
    pub keep_releases: u32,
    /// As root, run instances as plain processes of this user: no own user,
    /// namespaces or cgroup limits (for development machines and benchmarks).
    #[arg(
        long,
        env = "BERTH_NO_ISOLATION",
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::SetTrue
    )]
    pub no_isolation: bool,
    /// Where instances of image releases run: berth's own sandbox
    /// (`embedded`), or containers of a Docker engine (`docker`).
    #[arg(long, value_enum, default_value_t = Runtime::Embedded)]
    pub runtime: Runtime,
    /// The Docker engine's socket, for `--runtime docker`.
    #[arg(
        long,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    pub docker_host: String,
}

/// Where instances of image releases run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    /// berth's own sandbox over the image's root.
    Embedded,
    /// Containers of a Docker engine (its API, on a unix socket).
    Docker,
}

/// The server as a service: its state, stopping it, its log, systemd.
#[derive(Debug, Subcommand, Clone)]
pub enum ServerAction {
    /// Whether the server of this data dir runs: pid, version, uptime,
    /// addresses, apps and instances.
    Status,
    /// Stop the server: its instances get SIGTERM, and this returns once
    /// they and the server have exited.
    Stop {
        /// How long to wait for it (`30s`, `5m`).
        #[arg(long, default_value = "3m", value_parser = berth_spec::parse_duration)]
        timeout: std::time::Duration,
    },
    /// The server's log (DATA/server.log).
    Logs {
        /// Keep printing what it writes.
        #[arg(short, long)]
        follow: bool,
        /// How many of the last lines to print first.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
    },
    /// Run the server as a systemd service, restarted always and started at
    /// boot, with these server flags (`berth server install --public
    /// --domain example.com`); or on another machine over SSH (`berth
    /// server install ssh://root@host FLAGS…`), kept as a context.
    Install(Box<InstallArgs>),
    /// Stop the systemd service and remove it (the data dir stays).
    Uninstall,
    /// Replace the server's binary with this one and restart it, its apps
    /// coming back: the local server, or the current context's when
    /// `berth server install ssh://…` installed it.
    Upgrade {
        /// Where the binary goes (default: where the running server's is);
        /// given, the upgrade is of this machine's server.
        #[arg(long)]
        binary: Option<PathBuf>,
        /// How long the old server may take to stop (`30s`, `5m`).
        #[arg(long, default_value = "3m", value_parser = berth_spec::parse_duration)]
        timeout: std::time::Duration,
    },
}

/// `berth server install`'s flags.
#[derive(Debug, Args, Clone)]
pub struct InstallArgs {
    /// Only print the unit (running this binary where it is now).
    #[arg(long)]
    pub print: bool,
    /// On a host without systemd: start the server in the background now,
    /// as the unit would (it is not restarted at boot or when it stops).
    #[arg(long)]
    pub no_systemd: bool,
    /// Where the binary is installed (default: /usr/local/bin/berth).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Over SSH: the private key to log in with (`ssh -i`).
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// Over SSH: an option for ssh (`-o`), repeatable
    /// (`--ssh-option StrictHostKeyChecking=accept-new`).
    #[arg(long = "ssh-option")]
    pub ssh_options: Vec<String>,
    /// Over SSH: the data dir on the remote host (default:
    /// /var/lib/berth).
    #[arg(long)]
    pub remote_data: Option<String>,
    /// Over SSH: the name of the context kept for it (default: from the
    /// host).
    #[arg(long)]
    pub name: Option<String>,
    /// `ssh://[USER@]HOST[:PORT]` to install there, then the flags for
    /// `berth server`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub flags: Vec<String>,
}

impl InstallArgs {
    /// The `ssh://` target, when the first word names one.
    pub fn ssh_target(&self) -> Option<String> {
        self.flags
            .first()
            .filter(|first| first.starts_with("ssh://"))
            .cloned()
    }

    /// The flags for `berth server`, after any target.
    pub fn server_flags(&self) -> &[String] {
        let skip = usize::from(self.ssh_target().is_some());
        &self.flags[skip..]
    }
}

/// A `--tunnel-token`.
fn tunnel_token(text: &str) -> Result<berth_tunnel::TunnelToken, String> {
    berth_tunnel::TunnelToken::parse(text).map_err(|err| err.to_string())
}

/// An `--api-name`: an IP address or a domain name.
fn api_name(text: &str) -> Result<String, String> {
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(ip.to_string());
    }
    berth_proto::validate_domain(text)
        .map_err(|why| format!("neither an IP address nor a usable name: {why}"))
}

impl ServerArgs {
    /// The router's and HTTPS's addresses: as given, else loopback:8080
    /// and no HTTPS, or with `--public` the internet's ports 80 and 443.
    pub fn listeners(&self) -> (SocketAddr, Option<SocketAddr>) {
        let any = std::net::Ipv4Addr::UNSPECIFIED;
        let router = self.router_addr.unwrap_or(if self.public {
            SocketAddr::from((any, 80))
        } else {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 8080))
        });
        let https = self
            .https_addr
            .or(self.public.then(|| SocketAddr::from((any, 443))));
        (router, https)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn listeners(args: &[&str]) -> (String, Option<String>) {
        let cli = Cli::try_parse_from(["berth", "server"].iter().chain(args)).unwrap();
        let Command::Server(server) = cli.command else {
            panic!("not server");
        };
        let (router, https) = server.listeners();
        (router.to_string(), https.map(|addr| addr.to_string()))
    }

    #[test]
    fn public_serves_ports_80_and_443_unless_told_otherwise() {
        assert_eq!(listeners(&[]), ("127.0.0.1:8080".into(), None));
        assert_eq!(
            listeners(&["--public", "--domain", "example.com"]),
            ("0.0.0.0:80".into(), Some("0.0.0.0:443".into()))
        );
        assert_eq!(
            listeners(&["--public", "--https", "0.0.0.0:8443"]),
            ("0.0.0.0:80".into(), Some("0.0.0.0:8443".into()))
        );
        assert_eq!(
            listeners(&["--router", "127.0.0.1:9000"]),
            ("127.0.0.1:9000".into(), None)
        );
    }
}
