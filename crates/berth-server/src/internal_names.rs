//! Private names: an instance reaches its own app, and the apps that let
//! it, at `APP.internal` and `GROUP.APP.internal`, the way Fly's
//! `APP.internal` and Render's private services work.
//!
//! Each name gets a loopback address of the instance's namespace
//! (`127.0.54.N`), written into the `/etc/hosts` mounted over the
//! instance's. Berth listens there on port 80 and on the target's fixed
//! port, and forwards each connection (any protocol: it is TCP) to a
//! healthy instance of the target, picked like the router picks one: the
//! fewest connections and requests in flight. A target scaled to zero is
//! woken and the connection held until an instance is up. The address is
//! on the caller's own loopback, so it works whatever address the target
//! binds; port 80 is free there because an instance cannot bind below
//! 1024.
//!
//! An app's own processes and jobs always reach it; other apps only when
//! its spec lists them in `[internal] allow`. That list is checked on every
//! connection, so taking an app off it closes the door at once; an app
//! added to it gets the names in instances that start after the change.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use berth_router::{Backend, InFlight, InternalAccess, RouteTable};
use berth_runtime::net::InstanceNetwork;
use berth_spec::AppSpec;
use tokio::sync::watch;

/// The port every private name answers on.
pub const INTERNAL_HTTP_PORT: u16 = 80;
/// The first address given to a name inside a namespace.
const FIRST_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 54, 1);
/// How long a connection waits for a target with no instance ready, at most.
const HOLD_AT_MOST: Duration = Duration::from_secs(60);

/// One app an instance may reach.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    app: String,
    access: InternalAccess,
}

/// One name and where it leads.
#[derive(Debug, Clone, PartialEq)]
struct Name {
    /// `APP.internal` or `GROUP.APP.internal`.
    host: String,
    app: String,
    /// `None` for `APP.internal`: any group that serves HTTP.
    group: Option<String>,
    address: Ipv4Addr,
    ports: Vec<u16>,
}

/// Serves private names in instances' namespaces, from the route table the
/// reconciler publishes.
#[derive(Clone)]
pub struct InternalNames {
    routes: watch::Receiver<Arc<RouteTable>>,
}

impl InternalNames {
    /// Names served from `routes`.
    pub fn new(routes: watch::Receiver<Arc<RouteTable>>) -> InternalNames {
        InternalNames { routes }
    }

    /// Gives an instance of `app` (running `spec`, whose groups are
    /// `groups`, listening itself on `own_port` when fixed) its private
    /// names: listeners kept by `network`, and the hosts file to mount over
    /// its `/etc/hosts`.
    pub fn attach(
        &self,
        app: &str,
        spec: &AppSpec,
        groups: &[String],
        own_port: Option<u16>,
        network: &mut InstanceNetwork,
    ) -> Result<std::path::PathBuf, String> {
        let own = Target {
            app: app.to_string(),
            access: InternalAccess {
                groups: groups
                    .iter()
                    .filter(|group| spec.serves_http(group))
                    .cloned()
                    .collect(),
                port: spec.http.internal_port,
                callers: spec.internal.allow.clone(),
            },
        };
        let table = self.routes.borrow().clone();
        let mut targets = vec![own];
        let mut peers: Vec<Target> = table
            .apps
            .iter()
            .filter(|(peer, route)| peer.as_str() != app && route.internal.admits(peer, app))
            .map(|(peer, route)| Target {
                app: peer.clone(),
                access: (*route.internal).clone(),
            })
            .collect();
        peers.sort_by(|a, b| a.app.cmp(&b.app));
        targets.extend(peers);
        let names = names_for(&targets, own_port);
        for name in &names {
            for &port in &name.ports {
                let at = SocketAddr::from((name.address, port));
                let listener = network
                    .netns
                    .listen(at)
                    .map_err(|err| format!("cannot listen on {at} for {}: {err}", name.host))?;
                let forward = Forwarding {
                    caller: app.to_string(),
                    app: name.app.clone(),
                    group: name.group.clone(),
                    routes: self.routes.clone(),
                };
                network.keep(tokio::spawn(forward.serve(listener)));
            }
        }
        let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        berth_runtime::net::shared_file("hosts", "txt", &hosts_file(&host_hosts, &names))
    }
}

/// The names of `targets` (the caller's own app first), with addresses in
/// order from [`FIRST_ADDRESS`]; a name's ports are 80 and the target's
/// fixed port, unless that is the caller's own (`own_port`), which it
/// listens on itself.
fn names_for(targets: &[Target], own_port: Option<u16>) -> Vec<Name> {
    let mut names = Vec::new();
    let mut next = u32::from(FIRST_ADDRESS);
    for target in targets {
        let mut ports = vec![INTERNAL_HTTP_PORT];
        if let Some(port) = target.access.port
            && port != INTERNAL_HTTP_PORT
            && Some(port) != own_port
        {
            ports.push(port);
        }
        let groups = std::iter::once(None).chain(target.access.groups.iter().map(Some));
        for group in groups {
            let host = match group {
                Some(group) => format!("{group}.{}.internal", target.app),
                None => format!("{}.internal", target.app),
            };
            names.push(Name {
                host,
                app: target.app.clone(),
                group: group.cloned(),
                address: Ipv4Addr::from(next),
                ports: ports.clone(),
            });
            next += 1;
        }
    }
    names
}

/// The host's hosts file with the private names added.
fn hosts_file(host_hosts: &str, names: &[Name]) -> String {
    let mut text = host_hosts.trim_end().to_string();
    text.push_str("\n\n# Private names, from berth: APP.internal and GROUP.APP.internal\n");
    for name in names {
        text.push_str(&format!("{}\t{}\n", name.address, name.host));
    }
    text
}

/// Where connections to one name go.
struct Forwarding {
    caller: String,
    app: String,
    group: Option<String>,
    routes: watch::Receiver<Arc<RouteTable>>,
}

impl Forwarding {
    async fn serve(self, listener: tokio::net::TcpListener) {
        let forwarding = Arc::new(self);
        loop {
            let Ok((client, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let forwarding = forwarding.clone();
            tokio::spawn(async move { forwarding.forward(client).await });
        }
    }

    /// Carries `client`'s connection to an instance of the target, or
    /// closes it when the caller may not reach it or none comes up in time.
    async fn forward(&self, mut client: tokio::net::TcpStream) {
        let reached = reach_instance(&self.routes, &self.app, None, |route| {
            if !route.internal.admits(&self.app, &self.caller) {
                tracing::info!(
                    caller = %self.caller,
                    target = %self.app,
                    "private connection refused: the target no longer lists the caller in [internal] allow"
                );
                return None;
            }
            Some(
                route
                    .backends
                    .iter()
                    .filter(|backend| {
                        self.group
                            .as_ref()
                            .is_none_or(|group| &backend.group == group)
                    })
                    .cloned()
                    .collect(),
            )
        })
        .await;
        if let Some((mut upstream, in_flight)) = reached {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            drop(in_flight);
        }
    }
}

/// A connection to an instance of `app`, picked like the router picks one
/// (the fewest connections and requests in flight) from what `candidates`
/// gives for the app's route, at `port` of its address when given. An app
/// with none ready is woken (when it scales from zero) and the connection
/// waits for one, up to its hold time. `None`: the app is gone,
/// `candidates` refused, or none came up in time. The connection counts as
/// in flight on its instance while the returned guard lives.
pub(crate) async fn reach_instance(
    routes: &watch::Receiver<Arc<RouteTable>>,
    app: &str,
    port: Option<u16>,
    candidates: impl Fn(&berth_router::AppRoute) -> Option<Vec<Arc<Backend>>>,
) -> Option<(tokio::net::TcpStream, InFlight)> {
    let mut routes = routes.clone();
    let mut woken = false;
    let mut failed: Vec<u64> = Vec::new();
    let mut hold_until: Option<tokio::time::Instant> = None;
    loop {
        let table = routes.borrow_and_update().clone();
        let route = table.apps.get(app)?;
        let mut choices = candidates(route)?;
        choices.retain(|backend| !failed.contains(&backend.key));
        // A crash-looping app will not come up in time: no waiting.
        if choices.is_empty() && route.failing {
            return None;
        }
        let deadline = *hold_until.get_or_insert_with(|| {
            tokio::time::Instant::now() + route.admission.hold_timeout.min(HOLD_AT_MOST)
        });
        let turn = rand::random::<u32>() as usize;
        if let Some(backend) = berth_router::balance::pick(&choices, turn, None)
            && let Some(in_flight) = InFlight::try_start(backend.clone())
        {
            match dial(&backend, port).await {
                Ok(upstream) => return Some((upstream, in_flight)),
                Err(_) => {
                    failed.push(backend.key);
                    continue;
                }
            }
        }
        if !woken && let Some(wake) = &route.admission.wake {
            (wake.0)(app);
            woken = true;
        }
        tokio::time::timeout_at(deadline, routes.changed())
            .await
            .ok()?
            .ok()?;
    }
}

async fn dial(backend: &Backend, port: Option<u16>) -> std::io::Result<tokio::net::TcpStream> {
    let addr = match port {
        Some(port) => SocketAddr::new(backend.addr.ip(), port),
        None => backend.addr,
    };
    let dial = async {
        match &backend.netns {
            Some(netns) => netns.connect(addr).await,
            None => tokio::net::TcpStream::connect(addr).await,
        }
    };
    tokio::time::timeout(Duration::from_secs(5), dial)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(app: &str, groups: &[&str], port: Option<u16>) -> Target {
        Target {
            app: app.into(),
            access: InternalAccess {
                groups: groups.iter().map(|group| group.to_string()).collect(),
                port,
                callers: Vec::new(),
            },
        }
    }

    #[test]
    fn each_app_and_group_gets_a_name_and_an_address_of_its_own() {
        let names = names_for(
            &[
                target("shop", &["web", "admin"], Some(8080)),
                target("api", &["web"], None),
            ],
            None,
        );
        let shown: Vec<(String, String, Vec<u16>)> = names
            .iter()
            .map(|name| {
                (
                    name.host.clone(),
                    name.address.to_string(),
                    name.ports.clone(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("shop.internal".into(), "127.0.54.1".into(), vec![80, 8080]),
                (
                    "web.shop.internal".into(),
                    "127.0.54.2".into(),
                    vec![80, 8080]
                ),
                (
                    "admin.shop.internal".into(),
                    "127.0.54.3".into(),
                    vec![80, 8080]
                ),
                ("api.internal".into(), "127.0.54.4".into(), vec![80]),
                ("web.api.internal".into(), "127.0.54.5".into(), vec![80]),
            ]
        );
        assert_eq!(names[2].group.as_deref(), Some("admin"));
        assert_eq!(names[0].group, None);
    }

    #[test]
    fn a_name_leaves_the_port_its_caller_listens_on_to_the_caller() {
        let names = names_for(&[target("shop", &["web"], Some(8080))], Some(8080));
        assert!(names.iter().all(|name| name.ports == [80]));
    }

    #[test]
    fn the_hosts_file_keeps_the_hosts_entries_and_adds_the_names() {
        let names = names_for(&[target("shop", &["web"], None)], None);
        let text = hosts_file("127.0.0.1\tlocalhost\n::1\tlocalhost\n\n", &names);
        assert!(text.starts_with("127.0.0.1\tlocalhost\n::1\tlocalhost\n\n# Private names"));
        assert!(text.ends_with("127.0.54.1\tshop.internal\n127.0.54.2\tweb.shop.internal\n"));
    }

    #[test]
    fn an_app_is_reached_by_itself_and_the_apps_it_lists() {
        let access = InternalAccess {
            callers: vec!["frontend".into()],
            ..InternalAccess::default()
        };
        assert!(access.admits("api", "api"));
        assert!(access.admits("api", "frontend"));
        assert!(!access.admits("api", "other"));
    }
}
