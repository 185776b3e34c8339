//! The network of an instance that has a namespace of its own.
//!
//! Inside, the loopback is the instance's own. The router and the health
//! checks reach the app at `127.0.0.1:PORT` inside it (sockets made in the
//! namespace, see berth-runtime's `netns`). The app reaches berth's
//! services at the same addresses as any other app — `DATABASE_URL`,
//! `REDIS_URL`, `SHUTTLE_API` name `127.0.0.1:PORT` — because berth listens
//! on those ports inside the namespace and bridges each connection to the
//! host's loopback. Nothing else on the host (other apps' instances, other
//! apps' Redis) is reachable from inside.
//!
//! The world outside, two ways (the server's [`Networks`] picks one):
//!
//! - **direct** (root with nftables): the namespace has a veth link to the
//!   host (`eth0` inside, `bthN` outside, a /30 of `10.233.0.0/16`, see
//!   berth-runtime's `uplink`) and a default route through it; the host
//!   forwards and masquerades what comes out of `bth*` and drops anything
//!   from `bth*` addressed to the host itself or to another instance
//!   ([`RULESET`]). Any protocol gets out, as from a container. Namespaces
//!   with their links are made ahead of need by a pool thread, so a cold
//!   start does not wait for one. Every sandboxed instance gets one.
//! - **proxy** (no nftables, or `BERTH_EGRESS=proxy`): only apps that listen
//!   on a fixed port get a namespace (several instances of them fit side by
//!   side); inside, an HTTP proxy at `127.0.0.1:65080` (`HTTP_PROXY`,
//!   `HTTPS_PROXY` and their lower-case spellings point at it; `NO_PROXY`
//!   keeps loopback direct) opens connections from the host: `CONNECT
//!   host:port` for HTTPS and any TCP, and absolute-form requests for plain
//!   HTTP. It refuses the host's own addresses. Apps on `$PORT` stay in the
//!   host's namespace, where nothing stands between them and the world.

pub mod netns;
pub mod uplink;

mod bridge;
mod dns;
mod egress;
mod files;
mod nft;
mod pool;
mod switch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::task::JoinHandle;

pub use dns::{Resolvers, relay_plan};
pub use egress::{EGRESS_PORT, EgressPolicy, egress_env};
pub use files::shared_file;
pub use nft::RULESET;

use bridge::bridge;
use dns::relay_dns;
use egress::egress;
use netns::NetNs;
use nft::install_direct_egress;
use pool::NamespacePool;

/// A namespace and the bridges into it; dropping it stops the bridges
/// (the namespace goes when its last process does).
pub struct InstanceNetwork {
    /// The namespace.
    pub netns: Arc<NetNs>,
    bridges: Vec<JoinHandle<()>>,
    /// What the instance's env gains (the proxy's address, in proxy mode).
    pub env: Vec<(String, String)>,
    /// The private ranges it may reach (direct mode), taken back with it.
    _allowance: Option<nft::Allowance>,
    /// Bytes sent upstream through its egress proxy (proxy mode).
    proxied: Option<Arc<AtomicU64>>,
}

impl Drop for InstanceNetwork {
    fn drop(&mut self) {
        for bridge in &self.bridges {
            bridge.abort();
        }
    }
}

impl InstanceNetwork {
    /// Keeps `task` (a listener serving the namespace) for as long as the
    /// network lives: it stops with it.
    pub fn keep(&mut self, task: JoinHandle<()>) {
        self.bridges.push(task);
    }

    /// Bytes the instance sent out through its egress proxy so far; `None`
    /// without one (direct egress, counted on its link instead).
    pub fn proxied_bytes(&self) -> Option<u64> {
        self.proxied
            .as_ref()
            .map(|sent| sent.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// A new namespace for an instance of `app`, with bridges to the
    /// services it uses.
    fn prepare(
        netns: Arc<NetNs>,
        loopback_ports: &[u16],
        proxy: Option<EgressPolicy>,
        resolvers: &Resolvers,
    ) -> Result<Self, String> {
        let mut bridges = Vec::new();
        let mut env = Vec::new();
        let mut proxied = None;
        if let Some(policy) = proxy {
            let egress_addr = SocketAddr::from(([127, 0, 0, 1], EGRESS_PORT));
            let listener = netns
                .listen(egress_addr)
                .map_err(|err| format!("cannot listen on {egress_addr} in the namespace: {err}"))?;
            let sent = Arc::new(AtomicU64::new(0));
            bridges.push(tokio::spawn(egress(listener, policy, sent.clone())));
            proxied = Some(sent);
            env = egress_env();
        }
        for &port in loopback_ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let listener = netns
                .listen(addr)
                .map_err(|err| format!("cannot listen on {addr} in the namespace: {err}"))?;
            bridges.push(tokio::spawn(bridge(listener, addr)));
        }
        for &(inside, resolver) in &resolvers.relayed {
            // An IPv6 loopback may be missing inside: then it is not relayed.
            let Ok(datagrams) = netns.bind_udp(inside) else {
                continue;
            };
            bridges.push(tokio::spawn(relay_dns(datagrams, resolver)));
            if let Ok(listener) = netns.listen(inside) {
                bridges.push(tokio::spawn(bridge(listener, resolver)));
            }
        }
        Ok(InstanceNetwork {
            netns,
            bridges,
            env,
            _allowance: None,
            proxied,
        })
    }
}

/// The server's way of giving instances networks of their own.
pub struct Networks {
    mode: Mode,
    /// The resolvers instances use.
    resolvers: Resolvers,
}

enum Mode {
    /// Instances share the host's network (no root, or isolation off).
    Shared,
    /// Fixed-port apps get a namespace with the HTTP egress proxy.
    Proxy(EgressPolicy),
    /// Every sandboxed process gets a linked namespace from the pool.
    Direct(Arc<NamespacePool>),
}

impl Networks {
    /// Instances share the host's network (no root, or isolation off):
    /// nothing is ever prepared.
    pub fn none() -> Networks {
        Networks {
            mode: Mode::Shared,
            resolvers: Resolvers::default(),
        }
    }

    /// Chooses the egress for a server whose instances are sandboxed:
    /// direct when this host allows it (and `BERTH_EGRESS` is not `proxy`),
    /// else the proxy, saying why once. `BERTH_EGRESS=direct` that cannot
    /// be had is an error.
    pub fn detect() -> Result<Networks, String> {
        let asked = std::env::var("BERTH_EGRESS").unwrap_or_default();
        let mode = match asked.as_str() {
            "proxy" => {
                tracing::info!(
                    "egress: through the HTTP proxy in each namespace (BERTH_EGRESS=proxy); apps on $PORT share the host's network"
                );
                Mode::Proxy(EgressPolicy::default())
            }
            "" | "direct" => match install_direct_egress() {
                Ok(()) => {
                    tracing::info!(
                        "egress: direct, each instance in a network namespace of its own with a NATed veth link (10.233.0.0/16, bth*)"
                    );
                    Mode::Direct(NamespacePool::start())
                }
                Err(reason) if asked.is_empty() => {
                    tracing::warn!(
                        "egress: {reason}; instances on a fixed port reach the outside through an HTTP proxy, and apps on $PORT share the host's network"
                    );
                    Mode::Proxy(EgressPolicy::default())
                }
                Err(reason) => return Err(format!("BERTH_EGRESS=direct: {reason}")),
            },
            other => {
                return Err(format!(
                    "BERTH_EGRESS={other}: expected `direct` or `proxy`"
                ));
            }
        };
        let resolvers = Resolvers::from_env()?;
        if !resolvers.relayed.is_empty() {
            tracing::info!(
                resolvers = ?resolvers.relayed,
                "DNS: the host's resolvers are relayed into each instance's namespace"
            );
        }
        Ok(Networks { mode, resolvers })
    }

    /// The resolv.conf to mount over an instance's `/etc/resolv.conf`, if
    /// the server was given one.
    pub fn resolv_conf(&self) -> Option<&std::path::Path> {
        self.resolvers.mounted.as_deref()
    }

    /// The network of a new sandboxed instance of `app`, listening on a
    /// fixed port or not: a namespace with bridges to the services it uses,
    /// from which it may reach the public internet and the private ranges
    /// in `allow` — or `None` when it shares the host's network.
    pub fn prepare(
        &self,
        loopback_ports: &[u16],
        fixed_port: bool,
        allow: &[berth_proto::Ipv4Cidr],
    ) -> Result<Option<InstanceNetwork>, String> {
        let made = match &self.mode {
            Mode::Direct(pool) => pool.take().map(|netns| (netns, None)),
            Mode::Proxy(policy) if fixed_port => NetNs::create().map(|netns| {
                let policy = EgressPolicy {
                    allow: allow.to_vec(),
                    ..policy.clone()
                };
                (netns, Some(policy))
            }),
            _ => return Ok(None),
        };
        let (netns, proxy) =
            made.map_err(|err| format!("cannot make a network namespace: {err}"))?;
        let allowance = match netns.uplink() {
            Some(uplink) => nft::allow(uplink.address, allow)?,
            None => None,
        };
        let mut network = InstanceNetwork::prepare(netns, loopback_ports, proxy, &self.resolvers)?;
        network._allowance = allowance;
        Ok(Some(network))
    }

    /// The network of an instance whose namespace a container engine made
    /// (`fd`, see [`NetNs::adopt`]): what [`Networks::prepare`] gives a
    /// namespace of berth's own — a link out with the same rules (or the
    /// egress proxy), bridges to `loopback_ports`. Needs a server that
    /// gives instances networks of their own.
    pub fn adopt(
        &self,
        fd: std::os::fd::OwnedFd,
        loopback_ports: &[u16],
        allow: &[berth_proto::Ipv4Cidr],
    ) -> Result<InstanceNetwork, String> {
        let (netns, proxy) = match &self.mode {
            Mode::Direct(_) => (NetNs::adopt(fd, true), None),
            Mode::Proxy(policy) => (
                NetNs::adopt(fd, false),
                Some(EgressPolicy {
                    allow: allow.to_vec(),
                    ..policy.clone()
                }),
            ),
            Mode::Shared => {
                return Err(
                    "a container's network needs berth running as root with isolation on".into(),
                );
            }
        };
        let netns = netns.map_err(|err| format!("cannot link the container's network: {err}"))?;
        let allowance = match netns.uplink() {
            Some(uplink) => nft::allow(uplink.address, allow)?,
            None => None,
        };
        let mut network = InstanceNetwork::prepare(netns, loopback_ports, proxy, &self.resolvers)?;
        network._allowance = allowance;
        Ok(network)
    }

    /// The network of a build: a namespace without a link to the host
    /// whatever the mode, whose only way out is the egress proxy, open to
    /// `hosts` alone (see [`EgressPolicy::hosts`]), with bridges to
    /// `loopback_ports`. `None` when namespaces cannot be made here (not
    /// root).
    pub fn prepare_build(
        &self,
        loopback_ports: &[u16],
        hosts: Vec<String>,
    ) -> Result<Option<InstanceNetwork>, String> {
        if matches!(self.mode, Mode::Shared) {
            return Ok(None);
        }
        let netns =
            NetNs::create().map_err(|err| format!("cannot make a network namespace: {err}"))?;
        let policy = EgressPolicy {
            hosts: Some(hosts),
            ..EgressPolicy::default()
        };
        InstanceNetwork::prepare(netns, loopback_ports, Some(policy), &self.resolvers).map(Some)
    }
}
