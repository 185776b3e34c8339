//! The network of an instance that has a namespace of its own.
//!
//! Inside, only the loopback exists. The router and the health checks reach
//! the app at `127.0.0.1:PORT` inside it (sockets made in the namespace, see
//! berth-runtime's `netns`). The app reaches berth's services at the same
//! addresses as any other app — `DATABASE_URL`, `REDIS_URL`, `SHUTTLE_API`
//! name `127.0.0.1:PORT` — because berth listens on those ports inside the
//! namespace and bridges each connection to the host's loopback. Nothing
//! else on the host (other apps' instances, other apps' Redis) is reachable
//! from inside.

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
    pub fn prepare(resources: &Resources, app: &str, spec: &AppSpec) -> Result<Self, String> {
        let netns =
            NetNs::create().map_err(|err| format!("cannot make a network namespace: {err}"))?;
        let mut bridges = Vec::new();
        for port in resources.loopback_ports(app, spec) {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let listener = netns
                .listen(addr)
                .map_err(|err| format!("cannot listen on {addr} in the namespace: {err}"))?;
            bridges.push(tokio::spawn(bridge(listener, addr)));
        }
        Ok(InstanceNetwork { netns, bridges })
    }
}

/// Accepts inside the namespace and connects each to `target` on the host.
async fn bridge(listener: tokio::net::TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut inside, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let Ok(mut outside) = tokio::net::TcpStream::connect(target).await else {
                return;
            };
            let _ = inside.set_nodelay(true);
            let _ = outside.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
        });
    }
}
