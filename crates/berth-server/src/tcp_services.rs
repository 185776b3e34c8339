//! TCP services: fly's `[[services]]` whose ports have no `http` handler (a
//! database, SMTP, a game server). The server listens on each service's
//! public ports, on the address the router's HTTP listens on, and forwards
//! each connection as bytes to a healthy instance of the app at the
//! service's internal port — ending TLS first on a `tls` port (with the
//! router's certificates, by SNI) and sending a PROXY protocol v2 header
//! with the client's address first on a `proxy_proto` port. An app that
//! scales from zero is woken, and the connection waits for an instance as
//! an HTTP request would. A port two apps claim goes to the first by name;
//! a port the server cannot bind is an event of the app, tried again when
//! the routes change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use berth_proto::EventKind;
use berth_router::RouteTable;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::internal_names::reach_instance;

/// Listens for the TCP services the route table names.
pub(crate) struct TcpServices {
    /// The route table the reconciler publishes.
    pub(crate) routes: watch::Receiver<Arc<RouteTable>>,
    /// The address public ports are bound on (the router's HTTP one's).
    pub(crate) bind_ip: IpAddr,
    /// The router's HTTPS settings, for `tls` ports; `None` without HTTPS.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// Where bind failures are recorded.
    pub(crate) store: Arc<berth_store::Store>,
}

impl TcpServices {
    /// Runs until `shutdown`: binds and drops listeners as the routes change.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let tls = self.tls.take().map(|config| {
            // Bytes, not HTTP: no ALPN protocol is offered.
            let mut config = (*config).clone();
            config.alpn_protocols.clear();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let mut listening: HashMap<u16, (String, JoinHandle<()>)> = HashMap::new();
        let mut reported: HashSet<(String, u16)> = HashSet::new();
        loop {
            let table = self.routes.borrow_and_update().clone();
            let wanted = claimed_ports(&table);
            let mut released = Vec::new();
            listening.retain(|port, (app, task)| {
                let keep = wanted.get(port) == Some(app);
                if !keep {
                    task.abort();
                    released.push(std::mem::replace(task, tokio::spawn(async {})));
                }
                keep
            });
            // Their listeners close when the tasks are gone: then the port
            // is free for its next owner.
            for task in released {
                let _ = task.await;
            }
            for (port, app) in wanted {
                if listening.contains_key(&port) {
                    continue;
                }
                let at = SocketAddr::new(self.bind_ip, port);
                match TcpListener::bind(at).await {
                    Ok(listener) => {
                        tracing::info!(%app, port, "forwarding a TCP service");
                        reported.remove(&(app.clone(), port));
                        let forward = Forwarding {
                            app: app.clone(),
                            port,
                            routes: self.routes.clone(),
                            tls: tls.clone(),
                        };
                        listening.insert(port, (app, tokio::spawn(forward.serve(listener))));
                    }
                    Err(err) => {
                        if reported.insert((app.clone(), port)) {
                            let message = format!(
                                "cannot listen on {at} for its TCP service: {err}; it is tried again at the next deploy or scale"
                            );
                            tracing::warn!(%app, "{message}");
                            let _ =
                                self.store
                                    .record_event(&app, EventKind::ServiceUnbound, &message);
                        }
                    }
                }
            }
            tokio::select! {
                changed = self.routes.changed() => if changed.is_err() { break },
                () = shutdown.cancelled() => break,
            }
        }
        for (_, (_, task)) in listening {
            task.abort();
        }
    }
}

/// Each public port and the app that gets it: the first by name of those
/// that claim it.
fn claimed_ports(table: &RouteTable) -> BTreeMap<u16, String> {
    let mut apps: Vec<(&String, &berth_router::AppRoute)> = table.apps.iter().collect();
    apps.sort_by(|a, b| a.0.cmp(b.0));
    let mut wanted = BTreeMap::new();
    for (app, route) in apps {
        for service in route.tcp.iter() {
            wanted
                .entry(service.public_port)
                .or_insert_with(|| app.clone());
        }
    }
    wanted
}

/// Where connections to one public port go.
struct Forwarding {
    app: String,
    port: u16,
    routes: watch::Receiver<Arc<RouteTable>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Connections one public port carries at once, at most: past it, new
/// ones wait in the kernel's backlog (the server's descriptors are shared
/// with the router and the API).
const MAX_CONNECTIONS_PER_PORT: usize = 1024;

impl Forwarding {
    async fn serve(self, listener: TcpListener) {
        let forwarding = Arc::new(self);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS_PER_PORT));
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let Ok((client, peer)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let forwarding = forwarding.clone();
            tokio::spawn(async move {
                forwarding.forward(client, peer).await;
                drop(slot);
            });
        }
    }

    async fn forward(&self, client: TcpStream, peer: SocketAddr) {
        let _ = client.set_nodelay(true);
        let local = client.local_addr().unwrap_or(peer);
        let Some((service, route)) = self.service() else {
            return;
        };
        // The app's [edge] rules hold here too: its allowed and denied
        // addresses, and the connections one address may hold.
        if !route.edge.admits_address(&route.traffic.edge, peer.ip()) {
            return;
        }
        let _slot = match route.edge.max_connections {
            Some(limit) => match berth_router::edge_rules::ConnectionSlot::take(
                &route.traffic,
                peer.ip(),
                limit,
            ) {
                Some(slot) => Some(slot),
                None => return,
            },
            None => None,
        };
        if service.tls {
            let Some(acceptor) = &self.tls else {
                tracing::info!(app = %self.app, port = self.port, "a TLS port of a TCP service needs the server's HTTPS (--https): connection closed");
                return;
            };
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(client));
            let Ok(Ok(client)) = handshake.await else {
                return;
            };
            self.carry(client, peer, local, &service).await;
        } else {
            self.carry(client, peer, local, &service).await;
        }
    }

    /// The service on this port and its app's route, as the current route
    /// table has them.
    fn service(&self) -> Option<(berth_router::TcpRoute, berth_router::AppRoute)> {
        let table = self.routes.borrow().clone();
        let route = table.apps.get(&self.app)?;
        let service = route
            .tcp
            .iter()
            .find(|service| service.public_port == self.port)?;
        Some((service.clone(), route.clone()))
    }

    async fn carry<S>(
        &self,
        mut client: S,
        peer: SocketAddr,
        local: SocketAddr,
        service: &berth_router::TcpRoute,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let port = self.port;
        let reached = reach_instance(
            &self.routes,
            &self.app,
            Some(service.internal_port),
            |route| {
                let service = route.tcp.iter().find(|tcp| tcp.public_port == port)?;
                Some(service.backends.clone())
            },
        )
        .await;
        let Some((mut upstream, in_flight)) = reached else {
            return;
        };
        let _open = OpenConnection::count(&self.routes, &self.app);
        if service.proxy_proto {
            let header = match service.proxy_proto_version {
                1 => proxy_v1(peer, local),
                _ => berth_router::proxy_v2::encode(peer, local),
            };
            if upstream.write_all(&header).await.is_err() {
                return;
            }
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        drop(in_flight);
    }
}

/// A PROXY protocol v1 line (`proxy_proto_options = { version = "v1" }`).
fn proxy_v1(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        client.ip(),
        local.ip(),
        client.port(),
        local.port()
    )
    .into_bytes()
}

/// One open TCP service connection, counted in the app's traffic while it
/// lives: the autoscaler does not stop an app that has one.
struct OpenConnection(Option<Arc<berth_router::AppTraffic>>);

impl OpenConnection {
    fn count(routes: &watch::Receiver<Arc<RouteTable>>, app: &str) -> OpenConnection {
        let traffic = routes
            .borrow()
            .apps
            .get(app)
            .map(|route| route.traffic.clone());
        if let Some(traffic) = &traffic {
            traffic
                .tcp_open
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            traffic
                .requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        OpenConnection(traffic)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(traffic) = &self.0 {
            traffic
                .tcp_open
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_with(ports: &[u16]) -> berth_router::AppRoute {
        berth_router::AppRoute {
            tcp: ports
                .iter()
                .map(|&public_port| berth_router::TcpRoute {
                    public_port,
                    internal_port: 5432,
                    tls: false,
                    proxy_proto: false,
                    proxy_proto_version: 2,
                    backends: Vec::new(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_proxy_v1_line_names_the_client_first() {
        let line = proxy_v1(
            "192.0.2.7:51000".parse().unwrap(),
            "127.0.0.1:15432".parse().unwrap(),
        );
        assert_eq!(line, b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 15432\r\n");
    }

    #[test]
    fn a_port_two_apps_claim_goes_to_the_first_by_name() {
        let mut table = RouteTable::default();
        table.apps.insert("zeta".into(), route_with(&[15432, 2525]));
        table.apps.insert("alpha".into(), route_with(&[15432]));
        table.apps.insert("web".into(), route_with(&[]));
        let claimed = claimed_ports(&table);
        assert_eq!(
            claimed,
            BTreeMap::from([(2525, "zeta".to_string()), (15432, "alpha".to_string())])
        );
    }
}
