//! DNS for instances: every resolver the host uses is relayed into each
//! namespace at a loopback address there.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// The resolvers instances use, and how they reach them.
///
/// An instance's network reaches neither the host nor private ranges, and
/// the host's resolver usually sits on one of those: systemd-resolved's
/// `127.0.0.53`, a local dnsmasq, a cloud VPC's `10.0.0.2` or
/// `169.254.169.253`, a home router's `192.168.1.1`. So no instance talks
/// to a resolver itself: berth listens inside each namespace (UDP and TCP)
/// and relays each query from the host. A resolver on the host's loopback
/// is relayed at its own address; any other at `127.0.53.N` inside, named
/// in a resolv.conf berth writes (the host's, or the one `BERTH_RESOLV_CONF`
/// names, with only its `nameserver` lines changed) and mounts over the
/// instance's `/etc/resolv.conf`.
#[derive(Debug, Clone, Default)]
pub struct Resolvers {
    /// A resolv.conf to mount over the instance's `/etc/resolv.conf`.
    pub mounted: Option<std::path::PathBuf>,
    /// (address inside the namespace, resolver on the host), port 53.
    pub relayed: Vec<(SocketAddr, SocketAddr)>,
}

impl Resolvers {
    /// Reads `BERTH_RESOLV_CONF`, else `/etc/resolv.conf`; writes the
    /// instances' resolv.conf under `/run/berth` when one is needed.
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
        let (inside, relayed) = relay_plan(&text);
        let mounted = if inside != text || chosen.is_some() {
            Some(super::files::shared_file("resolv", "conf", &inside)?)
        } else {
            None
        };
        Ok(Resolvers { mounted, relayed })
    }
}

/// The resolv.conf instances see and the relays it needs: each
/// `nameserver` on a loopback address kept (and relayed at that address),
/// any other replaced by `127.0.53.N` (relayed to it).
pub fn relay_plan(resolv_conf: &str) -> (String, Vec<(SocketAddr, SocketAddr)>) {
    let mut relayed = Vec::new();
    let mut inside = String::new();
    for line in resolv_conf.lines() {
        let mut words = line.split_whitespace();
        let server = (words.next() == Some("nameserver"))
            .then(|| words.next())
            .flatten()
            .and_then(|address| address.parse::<IpAddr>().ok());
        match server {
            Some(address) if address.is_loopback() => {
                let at = SocketAddr::new(address, 53);
                relayed.push((at, at));
                inside.push_str(line);
            }
            Some(address) => {
                let number = relayed.len() as u8 + 1;
                let at = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 53, number)), 53);
                relayed.push((at, SocketAddr::new(address, 53)));
                inside.push_str(&format!("nameserver {}", at.ip()));
            }
            None => inside.push_str(line),
        }
        inside.push('\n');
    }
    (inside, relayed)
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
pub(super) async fn relay_dns(inside: tokio::net::UdpSocket, target: SocketAddr) {
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
                let local = match (target.is_ipv6(), target.ip().is_loopback()) {
                    (true, true) => "[::1]:0",
                    (true, false) => "[::]:0",
                    (false, true) => "127.0.0.1:0",
                    (false, false) => "0.0.0.0:0",
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

    #[test]
    fn every_nameserver_is_relayed_from_a_loopback_address_inside() {
        let (inside, relayed) = relay_plan(
            "# systemd-resolved\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n\
             nameserver ::1\nsearch example.com\nnameserver\n",
        );
        let addr = |text: &str| text.parse::<SocketAddr>().unwrap();
        assert_eq!(
            relayed,
            [
                (addr("127.0.0.53:53"), addr("127.0.0.53:53")),
                (addr("127.0.53.2:53"), addr("10.0.0.2:53")),
                (addr("[::1]:53"), addr("[::1]:53")),
            ]
        );
        assert_eq!(
            inside,
            "# systemd-resolved\nnameserver 127.0.0.53\nnameserver 127.0.53.2\n\
             nameserver ::1\nsearch example.com\nnameserver\n"
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
