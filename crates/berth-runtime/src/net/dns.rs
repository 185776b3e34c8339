//! DNS for instances whose resolver sits on the host's loopback: relayed
//! into each namespace at the same address.

use std::net::SocketAddr;
use std::sync::Arc;

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
