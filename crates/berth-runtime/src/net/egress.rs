//! The HTTP egress proxy inside a namespace (proxy mode): `CONNECT` and
//! absolute-form requests, opened from the host, never to the host itself.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::bridge::MAX_CONNECTIONS;

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
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// Loopback destinations too. The server never sets it (instances
    /// reach berth's services through the bridges, and other apps not at
    /// all); the proxy's own unit tests do, to have an upstream to reach.
    pub allow_loopback: bool,
    /// Private ranges the app may reach (its `[egress] allow`).
    pub allow: Vec<berth_proto::Ipv4Cidr>,
    /// When set, the only host names the proxy opens (a build's registries):
    /// an entry is a name, or `*.` and a domain for any name below it.
    pub hosts: Option<Vec<String>>,
}

impl EgressPolicy {
    /// Whether `host` (a name or an address, from `CONNECT host:port` or
    /// an absolute URL) is one the policy names, or any when it names none.
    pub fn allows_host(&self, host: &str) -> bool {
        let Some(hosts) = &self.hosts else {
            return true;
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        hosts
            .iter()
            .any(|allowed| match allowed.strip_prefix("*.") {
                Some(domain) => host.ends_with(&format!(".{domain}")),
                None => host == *allowed,
            })
    }
}

impl EgressPolicy {
    /// Whether the proxy may open `ip`: never this host (its loopback, its
    /// own interfaces' addresses, IPv4 written as IPv6 included), nor an
    /// unspecified, link-local or multicast address; a private or reserved
    /// IPv4 address (or a unique-local IPv6 one) only in a range the app
    /// allows.
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
        if ip.is_unspecified() || ip.is_multicast() || link_local || own.contains(&ip) {
            return false;
        }
        match ip {
            IpAddr::V4(v4) => {
                !berth_proto::Ipv4Cidr::is_private(v4)
                    || self.allow.iter().any(|range| range.contains(v4))
            }
            // Unique local addresses (fc00::/7): the LAN's.
            IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) != 0xfc00,
        }
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
/// Every byte it writes upstream (what the instance sent out, the egress
/// a platform bills) is added to `sent`.
pub(super) async fn egress(
    listener: tokio::net::TcpListener,
    policy: EgressPolicy,
    sent: Arc<AtomicU64>,
) {
    let policy = Arc::new(policy);
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
        let policy = policy.clone();
        let sent = sent.clone();
        tokio::spawn(async move {
            let _ = proxy_one(client, &policy, sent).await;
            drop(slot);
        });
    }
}

/// How long a client may take to send its request head.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn proxy_one(
    mut client: tokio::net::TcpStream,
    policy: &EgressPolicy,
    sent: Arc<AtomicU64>,
) -> std::io::Result<()> {
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
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    if !policy.allows_host(host) {
        let reason = format!(
            "berth's egress proxy does not open {authority}: a build reaches only its registries and the hosts [build] hosts names"
        );
        client
            .write_all(&proxy_answer("403 Forbidden", &reason))
            .await?;
        return Ok(());
    }
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
    let own = super::netns::host_addresses();
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
        Ok(stream) => Counted {
            inner: stream,
            written: sent,
        },
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

/// A stream that adds every byte written to it to a counter as it goes,
/// so a long-lived connection is counted while it lasts.
struct Counted<S> {
    inner: S,
    written: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(count)) = written {
            self.written.fetch_add(count as u64, Ordering::Relaxed);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A proxy on loopback, and the count of bytes it sent upstream.
    async fn proxy(allow_loopback: bool) -> (SocketAddr, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        tokio::spawn(egress(
            listener,
            EgressPolicy {
                allow_loopback,
                ..EgressPolicy::default()
            },
            sent.clone(),
        ));
        (addr, sent)
    }

    #[tokio::test]
    async fn a_build_policy_opens_only_the_hosts_it_names() {
        let policy = EgressPolicy {
            allow_loopback: true,
            hosts: Some(vec!["localhost".into(), "*.crates.io".into()]),
            ..EgressPolicy::default()
        };
        assert!(policy.allows_host("index.crates.io"));
        assert!(policy.allows_host("LOCALHOST."));
        assert!(!policy.allows_host("crates.io.evil.example"));
        assert!(!policy.allows_host("127.0.0.1"));
        // Through the proxy: a named host is opened, another refused before
        // any lookup or connection.
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = upstream.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = upstream.accept().await {
                let _ = stream.write_all(b"upstream").await;
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(egress(listener, policy, Arc::default()));
        for (target, expected) in [
            (format!("localhost:{port}"), "HTTP/1.1 200"),
            (format!("127.0.0.1:{port}"), "HTTP/1.1 403"),
        ] {
            let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
            client
                .write_all(
                    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
                )
                .await
                .unwrap();
            let mut answer = vec![0u8; 256];
            let read = client.read(&mut answer).await.unwrap();
            let answer = String::from_utf8_lossy(&answer[..read]);
            assert!(answer.starts_with(expected), "{target}: {answer}");
        }
    }

    #[test]
    fn the_policy_refuses_this_host_in_every_spelling() {
        let own: Vec<std::net::IpAddr> = vec!["10.1.2.3".parse().unwrap()];
        let strict = EgressPolicy::default();
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
        for allowed in ["93.184.216.34", "2606:2800:220:1::1", "198.51.100.2"] {
            assert!(strict.allows(allowed.parse().unwrap(), &own), "{allowed}");
        }
        // The LAN and cloud metadata only where the app allows them.
        for private in [
            "10.1.2.4",
            "192.168.1.1",
            "172.16.0.9",
            "fd00::1",
            "100.64.1.1",
        ] {
            assert!(!strict.allows(private.parse().unwrap(), &own), "{private}");
        }
        let lan = EgressPolicy {
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            ..EgressPolicy::default()
        };
        assert!(lan.allows("10.1.2.4".parse().unwrap(), &own));
        assert!(
            !lan.allows("10.1.2.3".parse().unwrap(), &own),
            "still not the host"
        );
        assert!(!lan.allows("169.254.169.254".parse().unwrap(), &own));
        assert!(!lan.allows("192.168.1.1".parse().unwrap(), &own));
        let tests = EgressPolicy {
            allow_loopback: true,
            ..EgressPolicy::default()
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

        let (open, sent) = proxy(true).await;
        let mut client = tokio::net::TcpStream::connect(open).await.unwrap();
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
        // What went upstream is counted as the instance's egress while the
        // connection is open; the proxy's own answer is not.
        assert_eq!(sent.load(Ordering::Relaxed), 9);

        let mut client = tokio::net::TcpStream::connect(proxy(false).await.0)
            .await
            .unwrap();
        client
            .write_all(format!("CONNECT {echo_addr} HTTP/1.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

        let (open, _) = proxy(true).await;
        let mut client = tokio::net::TcpStream::connect(open).await.unwrap();
        client
            .write_all(b"GET /relative HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
}
