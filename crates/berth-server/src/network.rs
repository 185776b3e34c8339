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

use std::net::SocketAddr;
use std::sync::Arc;

use berth_runtime::netns::NetNs;
use berth_spec::AppSpec;
use tokio::task::JoinHandle;

use crate::resources::Resources;

/// A namespace and the bridges into it; dropping it stops the bridges
/// (the namespace goes when its last process does).
pub struct InstanceNetwork {
    /// The namespace.
    pub netns: Arc<NetNs>,
    bridges: Vec<JoinHandle<()>>,
    /// What the instance's env gains (the proxy's address, in proxy mode).
    pub env: Vec<(String, String)>,
}

impl Drop for InstanceNetwork {
    fn drop(&mut self) {
        for bridge in &self.bridges {
            bridge.abort();
        }
    }
}

impl InstanceNetwork {
    /// A new namespace for an instance of `app`, with bridges to the
    /// services it uses.
    fn prepare(
        netns: Arc<NetNs>,
        resources: &Resources,
        app: &str,
        spec: &AppSpec,
        proxy: Option<EgressPolicy>,
        resolvers: &Resolvers,
    ) -> Result<Self, String> {
        let mut bridges = Vec::new();
        let mut env = Vec::new();
        if let Some(policy) = proxy {
            let egress_addr = SocketAddr::from(([127, 0, 0, 1], EGRESS_PORT));
            let listener = netns
                .listen(egress_addr)
                .map_err(|err| format!("cannot listen on {egress_addr} in the namespace: {err}"))?;
            bridges.push(tokio::spawn(egress(listener, policy)));
            env = egress_env();
        }
        for port in resources.loopback_ports(app, spec) {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let listener = netns
                .listen(addr)
                .map_err(|err| format!("cannot listen on {addr} in the namespace: {err}"))?;
            bridges.push(tokio::spawn(bridge(listener, addr)));
        }
        for &resolver in &resolvers.relayed {
            // An IPv6 loopback may be missing inside: then it is not relayed.
            let Ok(datagrams) = netns.bind_udp(resolver) else {
                continue;
            };
            bridges.push(tokio::spawn(relay_dns(datagrams, resolver)));
            if let Ok(listener) = netns.listen(resolver) {
                bridges.push(tokio::spawn(bridge(listener, resolver)));
            }
        }
        Ok(InstanceNetwork {
            netns,
            bridges,
            env,
        })
    }
}

/// The host's nftables rules for direct egress, one table replaced whole
/// (several servers on one machine install the same one): what comes from
/// an instance's link (`bth*`) is masqueraded on its way out, may not reach
/// the host itself (input) or another instance (refused at once, so a
/// client fails fast instead of waiting out a connect timeout), and only
/// answers come back in.
pub const RULESET: &str = r#"table inet berth
delete table inet berth
table inet berth {
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "bth*" ct state established,related accept
        iifname "bth*" reject with icmpx admin-prohibited
    }
    chain forward {
        type filter hook forward priority filter; policy accept;
        iifname "bth*" oifname "bth*" reject with icmpx admin-prohibited
        iifname "bth*" ip daddr { 127.0.0.0/8, 10.233.0.0/16 } reject with icmpx admin-prohibited
        iifname "bth*" accept
        oifname "bth*" ct state established,related accept
        oifname "bth*" drop
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr 10.233.0.0/16 oifname != "bth*" masquerade
    }
}
"#;

/// Installed when berth turns IPv4 forwarding on (it was off): the host
/// forwards nothing but its instances' traffic, as before.
const FORWARD_GUARD: &str = r#"table inet berth_forward_guard
delete table inet berth_forward_guard
table inet berth_forward_guard {
    chain forward {
        type filter hook forward priority filter; policy accept;
        iifname != "bth*" oifname != "bth*" drop
    }
}
"#;

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Runs `nft -f -` with `rules`.
fn nft(rules: &str) -> Result<(), String> {
    use std::io::Write;
    // Root's PATH has /usr/sbin; a service manager's may not.
    let program = if std::path::Path::new("/usr/sbin/nft").exists() {
        "/usr/sbin/nft"
    } else {
        "nft"
    };
    let mut child = std::process::Command::new(program)
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run nft: {err} (install nftables)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .map_err(|err| format!("cannot write to nft: {err}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|err| format!("nft: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft refused berth's rules: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Sets up direct egress on this host: the rules, and IPv4 forwarding.
fn install_direct_egress() -> Result<(), String> {
    let (network, prefix) = berth_runtime::uplink::NETWORK;
    let mask = u32::MAX << (32 - prefix);
    if let Some(clash) = berth_runtime::netns::host_addresses()
        .into_iter()
        .find(|ip| match ip {
            std::net::IpAddr::V4(v4) => {
                u32::from(*v4) & mask == u32::from(network) && !is_instance_gateway(*v4)
            }
            std::net::IpAddr::V6(_) => false,
        })
    {
        return Err(format!(
            "this host already uses {clash}, inside the instances' network {network}/{prefix}"
        ));
    }
    nft(RULESET)?;
    let forwarding = std::fs::read_to_string(IP_FORWARD).unwrap_or_default();
    if forwarding.trim() != "1" {
        nft(FORWARD_GUARD)?;
        std::fs::write(IP_FORWARD, "1")
            .map_err(|err| format!("cannot turn on IPv4 forwarding: {err}"))?;
    }
    Ok(())
}

/// Whether `ip` is the host side of an instance link (another berth
/// server's, on this machine).
fn is_instance_gateway(ip: std::net::Ipv4Addr) -> bool {
    u32::from(ip) % 4 == 1
}

/// How long the pool waits to refill while it still has one ready (the
/// start that took one is under way, and both want the CPU).
const REFILL_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// How many linked namespaces the pool keeps ready.
const SPARE_NAMESPACES: usize = 2;

/// Linked namespaces made ahead of need by a thread of their own (one takes
/// about half a millisecond: a veth pair, two addresses, a route).
struct NamespacePool {
    ready: std::sync::Mutex<Vec<Arc<NetNs>>>,
    wanted: std::sync::Condvar,
}

impl NamespacePool {
    fn start() -> Arc<NamespacePool> {
        let pool = Arc::new(NamespacePool {
            ready: std::sync::Mutex::new(Vec::new()),
            wanted: std::sync::Condvar::new(),
        });
        let filler = Arc::downgrade(&pool);
        let _ = std::thread::Builder::new()
            .name("berth-netns-pool".into())
            .spawn(move || {
                loop {
                    let Some(pool) = filler.upgrade() else { return };
                    let mut ready = pool.ready.lock().unwrap_or_else(|err| err.into_inner());
                    while ready.len() >= SPARE_NAMESPACES {
                        let (guard, _) = pool
                            .wanted
                            .wait_timeout(ready, std::time::Duration::from_secs(5))
                            .unwrap_or_else(|err| err.into_inner());
                        ready = guard;
                        if Arc::strong_count(&pool) == 1 {
                            return; // The server is gone.
                        }
                    }
                    let some_left = !ready.is_empty();
                    drop(ready);
                    if some_left {
                        // A start just took one: let it have the CPU first.
                        std::thread::sleep(REFILL_DELAY);
                    }
                    match NetNs::create_linked() {
                        Ok(netns) => pool
                            .ready
                            .lock()
                            .unwrap_or_else(|err| err.into_inner())
                            .push(netns),
                        Err(err) => {
                            tracing::warn!("cannot make a network namespace ahead: {err}");
                            drop(pool);
                            std::thread::sleep(std::time::Duration::from_secs(1));
                        }
                    }
                }
            });
        pool
    }

    /// A ready namespace, or a new one made now when none is.
    fn take(&self) -> std::io::Result<Arc<NetNs>> {
        let taken = self
            .ready
            .lock()
            .unwrap_or_else(|err| err.into_inner())
            .pop();
        self.wanted.notify_one();
        match taken {
            Some(netns) => Ok(netns),
            None => NetNs::create_linked(),
        }
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
                Mode::Proxy(EgressPolicy::from_env())
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
                    Mode::Proxy(EgressPolicy::from_env())
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
                "DNS: resolvers on the host's loopback are relayed into each instance's namespace"
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
    /// fixed port or not: a namespace with bridges to the
    /// services it uses, or `None` when it shares the host's network.
    pub fn prepare(
        &self,
        resources: &Resources,
        app: &str,
        spec: &AppSpec,
        fixed_port: bool,
    ) -> Result<Option<InstanceNetwork>, String> {
        let made = match &self.mode {
            Mode::Direct(pool) => pool.take().map(|netns| (netns, None)),
            Mode::Proxy(policy) if fixed_port => {
                NetNs::create().map(|netns| (netns, Some(*policy)))
            }
            _ => return Ok(None),
        };
        let (netns, proxy) =
            made.map_err(|err| format!("cannot make a network namespace: {err}"))?;
        InstanceNetwork::prepare(netns, resources, app, spec, proxy, &self.resolvers).map(Some)
    }
}

/// Accepts inside the namespace and connects each to `target` on the host.
async fn bridge(listener: tokio::net::TcpListener, target: SocketAddr) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let mut inside = match listener.accept().await {
            Ok((inside, _)) => inside,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(mut outside) = tokio::net::TcpStream::connect(target).await else {
                return;
            };
            let _ = inside.set_nodelay(true);
            let _ = outside.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
        });
    }
}

/// Where, inside an instance's namespace, the egress proxy listens.
pub const EGRESS_PORT: u16 = 65080;

/// The env that points HTTP clients at the egress proxy (both spellings:
/// curl reads only the lower-case `http_proxy`).
pub fn egress_env() -> Vec<(String, String)> {
    let proxy = format!("http://127.0.0.1:{EGRESS_PORT}");
    let direct = "localhost,127.0.0.1,::1".to_string();
    [
        ("HTTP_PROXY", &proxy),
        ("HTTPS_PROXY", &proxy),
        ("http_proxy", &proxy),
        ("https_proxy", &proxy),
        ("NO_PROXY", &direct),
        ("no_proxy", &direct),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.clone()))
    .collect()
}

/// Which destinations the egress proxy may open.
#[derive(Debug, Clone, Copy)]
pub struct EgressPolicy {
    /// Loopback destinations too (only for tests: instances reach berth's
    /// services through the bridges, and other apps not at all).
    pub allow_loopback: bool,
}

impl EgressPolicy {
    /// The server's policy: loopback destinations only when
    /// `BERTH_TEST_EGRESS_LOOPBACK=1` (tests, which may send traffic to
    /// loopback and nowhere else, use it to check the proxy end to end).
    pub fn from_env() -> EgressPolicy {
        EgressPolicy {
            allow_loopback: std::env::var("BERTH_TEST_EGRESS_LOOPBACK").is_ok_and(|v| v == "1"),
        }
    }
}

impl EgressPolicy {
    /// Whether the proxy may open `ip`: never this host (its loopback, its
    /// own interfaces' addresses, IPv4 written as IPv6 included), nor an
    /// unspecified, link-local or multicast address.
    pub fn allows(&self, ip: std::net::IpAddr, own: &[std::net::IpAddr]) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        };
        !(ip.is_unspecified() || ip.is_multicast() || link_local || own.contains(&ip))
    }
}

/// A complete HTTP/1.1 answer of the proxy's own, with `reason` as its body.
fn proxy_answer(status: &str, reason: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{reason}",
        reason.len()
    )
    .into_bytes()
}

/// The largest request head the proxy reads.
const MAX_HEAD: usize = 16 * 1024;

/// An HTTP proxy for the world outside the namespace: `CONNECT host:port`
/// (HTTPS and any TCP) and absolute-form requests (`GET http://host/path`).
async fn egress(listener: tokio::net::TcpListener, policy: EgressPolicy) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // Out of descriptors, say: wait instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // Over the cap: the connection is dropped.
        };
        tokio::spawn(async move {
            let _ = proxy_one(client, policy).await;
            drop(slot);
        });
    }
}

/// Connections one instance may have open through a bridge or the proxy.
const MAX_CONNECTIONS: usize = 256;

/// How long a client may take to send its request head.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn proxy_one(mut client: tokio::net::TcpStream, policy: EgressPolicy) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let end = loop {
        let read = match tokio::time::timeout(HEAD_TIMEOUT, client.read(&mut chunk)).await {
            Ok(read) => read?,
            Err(_) => return Ok(()),
        };
        if read == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..read]);
        if let Some(at) = head.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() > MAX_HEAD {
            client
                .write_all(&proxy_answer("431 Request Header Fields Too Large", ""))
                .await?;
            return Ok(());
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let request_line = text.lines().next().unwrap_or_default().to_string();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        client
            .write_all(&proxy_answer("400 Bad Request", "not a proxy request"))
            .await?;
        return Ok(());
    };
    let (authority, rewritten) = if method.eq_ignore_ascii_case("CONNECT") {
        (target.to_string(), None)
    } else {
        let Some(rest) = target.strip_prefix("http://") else {
            client
                .write_all(&proxy_answer("400 Bad Request", "not a proxy request"))
                .await?;
            return Ok(());
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let authority = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        // One request per connection: a client reusing it for another host
        // must not reach this one (it reconnects once this closes).
        let mut forwarded = format!("{method} {path} {version}\r\n");
        for line in text.lines().skip(1) {
            let name = line.split(':').next().unwrap_or_default().trim();
            if line.is_empty()
                || name.eq_ignore_ascii_case("connection")
                || name.eq_ignore_ascii_case("proxy-connection")
                || name.eq_ignore_ascii_case("keep-alive")
            {
                continue;
            }
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
        forwarded.push_str("Connection: close\r\n\r\n");
        let mut forwarded = forwarded.into_bytes();
        forwarded.extend_from_slice(&head[end..]);
        (authority, Some(forwarded))
    };
    let addresses: Vec<SocketAddr> = match tokio::net::lookup_host(&authority).await {
        Ok(found) => found.collect(),
        Err(err) => {
            let reason = format!("cannot resolve {authority}: {err}");
            client
                .write_all(&proxy_answer("502 Bad Gateway", &reason))
                .await?;
            return Ok(());
        }
    };
    let own = berth_runtime::netns::host_addresses();
    let allowed: Vec<SocketAddr> = addresses
        .into_iter()
        .filter(|addr| policy.allows(addr.ip(), &own))
        .collect();
    if allowed.is_empty() {
        let reason = format!(
            "berth's egress proxy does not open {authority}: the host's loopback is closed to instances (berth's services are bridged in at their usual addresses)"
        );
        client
            .write_all(&proxy_answer("403 Forbidden", &reason))
            .await?;
        return Ok(());
    }
    let mut upstream = match tokio::net::TcpStream::connect(&allowed[..]).await {
        Ok(stream) => stream,
        Err(err) => {
            let reason = format!("cannot connect to {authority}: {err}");
            client
                .write_all(&proxy_answer("502 Bad Gateway", &reason))
                .await?;
            return Ok(());
        }
    };
    match rewritten {
        None => {
            client
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await?;
            upstream.write_all(&head[end..]).await?;
        }
        Some(forwarded) => upstream.write_all(&forwarded).await?,
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// The resolvers instances use, and how they reach those on the host's
/// loopback.
///
/// An instance sees the host's `/etc/resolv.conf` (or the file
/// `BERTH_RESOLV_CONF` names, mounted over it in the instance). A resolver
/// there on a loopback address — systemd-resolved's `127.0.0.53`, a local
/// dnsmasq or unbound — would be the namespace's own loopback, where
/// nothing answers: berth listens on that address and port inside the
/// namespace (UDP and TCP) and relays each query to the host's resolver.
/// Other resolvers are reached over the instance's link like any host.
#[derive(Debug, Clone, Default)]
pub struct Resolvers {
    /// A resolv.conf to mount over the instance's `/etc/resolv.conf`.
    pub mounted: Option<std::path::PathBuf>,
    /// Resolvers on a loopback address, relayed into each namespace.
    pub relayed: Vec<SocketAddr>,
}

impl Resolvers {
    /// Reads `BERTH_RESOLV_CONF`, else `/etc/resolv.conf`.
    pub fn from_env() -> Result<Resolvers, String> {
        let chosen = std::env::var_os("BERTH_RESOLV_CONF").map(std::path::PathBuf::from);
        let path = chosen
            .clone()
            .unwrap_or_else(|| std::path::PathBuf::from("/etc/resolv.conf"));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // No resolv.conf: the resolver library's defaults, nothing to relay.
            Err(_) if chosen.is_none() => String::new(),
            Err(err) => return Err(format!("BERTH_RESOLV_CONF={}: {err}", path.display())),
        };
        Ok(Resolvers {
            relayed: loopback_nameservers(&text),
            mounted: chosen,
        })
    }
}

/// The `nameserver` lines of a resolv.conf that name a loopback address,
/// as the port-53 addresses to relay.
pub fn loopback_nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then(|| words.next())?
        })
        .filter_map(|address| address.parse::<std::net::IpAddr>().ok())
        .filter(|address| address.is_loopback())
        .map(|address| SocketAddr::new(address, 53))
        .collect()
}

/// Clients relayed at once per instance (each client address — a resolver
/// library uses a new port per lookup — has its own socket towards the
/// resolver); a new one beyond takes the place of the longest quiet.
const DNS_CLIENTS: usize = 32;
/// A relayed client's socket goes after this long without an answer.
const DNS_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// One client of the relay: its socket towards the resolver and the task
/// that passes the answers back.
struct DnsClient {
    outside: Arc<tokio::net::UdpSocket>,
    last_query: std::time::Instant,
    answers: tokio::task::AbortHandle,
}

/// Relays DNS datagrams from inside a namespace (`inside`, bound at the
/// resolver's address there) to the resolver `target` on the host, and its
/// answers back to whoever asked. Its answer tasks end with it.
async fn relay_dns(inside: tokio::net::UdpSocket, target: SocketAddr) {
    use std::collections::HashMap;
    let inside = Arc::new(inside);
    let mut clients: HashMap<SocketAddr, DnsClient> = HashMap::new();
    let mut answer_tasks = tokio::task::JoinSet::new();
    let mut query = vec![0u8; 65_535];
    loop {
        let Ok((length, client)) = inside.recv_from(&mut query).await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        while answer_tasks.try_join_next().is_some() {}
        clients.retain(|_, known| !known.answers.is_finished());
        if !clients.contains_key(&client) && clients.len() >= DNS_CLIENTS {
            let quietest = clients
                .iter()
                .min_by_key(|(_, known)| known.last_query)
                .map(|(address, _)| *address);
            if let Some(known) = quietest.and_then(|address| clients.remove(&address)) {
                known.answers.abort();
            }
        }
        let outside = match clients.get_mut(&client) {
            Some(known) => {
                known.last_query = std::time::Instant::now();
                known.outside.clone()
            }
            None => {
                let local = if target.is_ipv6() {
                    "[::1]:0"
                } else {
                    "127.0.0.1:0"
                };
                let Ok(outside) = tokio::net::UdpSocket::bind(local).await else {
                    continue;
                };
                if outside.connect(target).await.is_err() {
                    continue;
                }
                let outside = Arc::new(outside);
                let answers =
                    answer_tasks.spawn(relay_answers(outside.clone(), inside.clone(), client));
                clients.insert(
                    client,
                    DnsClient {
                        outside: outside.clone(),
                        last_query: std::time::Instant::now(),
                        answers,
                    },
                );
                outside
            }
        };
        let _ = outside.send(&query[..length]).await;
    }
}

/// Sends what the resolver answers on `outside` to `client` through
/// `inside`, until it has been quiet for [`DNS_IDLE`].
async fn relay_answers(
    outside: Arc<tokio::net::UdpSocket>,
    inside: Arc<tokio::net::UdpSocket>,
    client: SocketAddr,
) {
    let mut answer = vec![0u8; 65_535];
    while let Ok(Ok(length)) = tokio::time::timeout(DNS_IDLE, outside.recv(&mut answer)).await {
        let _ = inside.send_to(&answer[..length], client).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn proxy(allow_loopback: bool) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(egress(listener, EgressPolicy { allow_loopback }));
        addr
    }

    #[test]
    fn the_policy_refuses_this_host_in_every_spelling() {
        let own: Vec<std::net::IpAddr> = vec!["10.1.2.3".parse().unwrap()];
        let strict = EgressPolicy {
            allow_loopback: false,
        };
        for refused in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "::ffff:0.0.0.0",
            "::",
            "169.254.169.254",
            "fe80::1",
            "10.1.2.3",
            "::ffff:10.1.2.3",
            "224.0.0.1",
        ] {
            assert!(!strict.allows(refused.parse().unwrap(), &own), "{refused}");
        }
        for allowed in ["93.184.216.34", "2606:2800:220:1::1", "10.1.2.4"] {
            assert!(strict.allows(allowed.parse().unwrap(), &own), "{allowed}");
        }
        let tests = EgressPolicy {
            allow_loopback: true,
        };
        assert!(tests.allows("::ffff:127.0.0.1".parse().unwrap(), &own));
        assert!(!tests.allows("10.1.2.3".parse().unwrap(), &own));
    }

    #[tokio::test]
    async fn connect_tunnels_bytes_and_loopback_is_refused_unless_allowed() {
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    while let Ok(read) = stream.read(&mut buffer).await {
                        if read == 0 || stream.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });

        let mut client = tokio::net::TcpStream::connect(proxy(true).await)
            .await
            .unwrap();
        client
            .write_all(
                format!("CONNECT {echo_addr} HTTP/1.1\r\nHost: {echo_addr}\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut answer = [0u8; 39];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer[..], b"HTTP/1.1 200 Connection Established\r\n\r\n");
        client.write_all(b"tunnelled").await.unwrap();
        let mut echoed = [0u8; 9];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"tunnelled");

        let mut client = tokio::net::TcpStream::connect(proxy(false).await)
            .await
            .unwrap();
        client
            .write_all(format!("CONNECT {echo_addr} HTTP/1.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

        let mut client = tokio::net::TcpStream::connect(proxy(true).await)
            .await
            .unwrap();
        client
            .write_all(b"GET /relative HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }

    #[test]
    fn only_loopback_nameservers_are_relayed() {
        let relayed = loopback_nameservers(
            "# systemd-resolved\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n\
             nameserver ::1\nsearch example.com\nnameserver\n",
        );
        assert_eq!(
            relayed,
            [
                "127.0.0.53:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }

    #[tokio::test]
    async fn the_dns_relay_answers_more_clients_than_it_keeps_sockets_for() {
        // A "resolver" that answers each datagram with itself reversed.
        let resolver = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = resolver.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            while let Ok((length, from)) = resolver.recv_from(&mut buffer).await {
                buffer[..length].reverse();
                let _ = resolver.send_to(&buffer[..length], from).await;
            }
        });
        let inside = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay_at = inside.local_addr().unwrap();
        let relay = tokio::spawn(relay_dns(inside, target));
        // Each lookup from a port of its own, as resolver libraries do.
        for lookup in 0..DNS_CLIENTS * 2 {
            let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let query = format!("query {lookup}");
            client.send_to(query.as_bytes(), relay_at).await.unwrap();
            let mut answer = [0u8; 512];
            let (length, from) = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                client.recv_from(&mut answer),
            )
            .await
            .unwrap_or_else(|_| panic!("lookup {lookup} got no answer"))
            .unwrap();
            assert_eq!(
                from, relay_at,
                "the answer comes from the resolver's address"
            );
            let expected: Vec<u8> = query.bytes().rev().collect();
            assert_eq!(&answer[..length], &expected[..]);
        }
        relay.abort();
    }
}
