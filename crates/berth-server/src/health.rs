//! Health checks: a TCP connect, or an HTTP request (GET unless the check
//! names another method, with its headers) that must answer 2xx/3xx.

use std::net::SocketAddr;
use std::time::Duration;

use berth_spec::HealthCheck;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// The network namespace an instance listens in, when not the server's.
pub type Namespace = Option<std::sync::Arc<berth_runtime::netns::NetNs>>;

/// A future a [`HealthProbe`] returns.
pub type ProbeFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// How the reconciler checks an instance: over the network in production
/// ([`NetworkProbe`]); unit tests of the reconciler ask their fake driver.
pub trait HealthProbe: Send + Sync {
    /// One check of the instance at `addr`; `Err` says why it failed.
    fn probe<'a>(
        &'a self,
        addr: SocketAddr,
        netns: &'a Namespace,
        check: &'a HealthCheck,
    ) -> ProbeFuture<'a, Result<(), String>>;

    /// Checks until the first success or `deadline`; returns the time it took.
    fn wait_until_healthy<'a>(
        &'a self,
        addr: SocketAddr,
        netns: &'a Namespace,
        check: &'a HealthCheck,
        deadline: Instant,
    ) -> ProbeFuture<'a, Result<Duration, String>>;
}

/// Checks over the network: [`probe`] and [`wait_until_healthy`].
pub struct NetworkProbe;

impl HealthProbe for NetworkProbe {
    fn probe<'a>(
        &'a self,
        addr: SocketAddr,
        netns: &'a Namespace,
        check: &'a HealthCheck,
    ) -> ProbeFuture<'a, Result<(), String>> {
        Box::pin(probe(addr, netns, check))
    }

    fn wait_until_healthy<'a>(
        &'a self,
        addr: SocketAddr,
        netns: &'a Namespace,
        check: &'a HealthCheck,
        deadline: Instant,
    ) -> ProbeFuture<'a, Result<Duration, String>> {
        Box::pin(wait_until_healthy(addr, netns, check, deadline))
    }
}

/// Runs one check against `addr` (inside `netns` when given); `Err` says why it failed.
pub async fn probe(addr: SocketAddr, netns: &Namespace, check: &HealthCheck) -> Result<(), String> {
    let attempt = async {
        let connected = match netns {
            Some(netns) => netns.connect(addr).await,
            None => TcpStream::connect(addr).await,
        };
        let mut stream = connected.map_err(|err| format!("connect to {addr}: {err}"))?;
        let Some(path) = &check.http_path else {
            return Ok(());
        };
        let method = check.method();
        let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        // The check's own Host or User-Agent replaces berth's (a Host sent
        // twice is a 400).
        let names = |name: &str| {
            check
                .headers
                .keys()
                .any(|given| given.eq_ignore_ascii_case(name))
        };
        if !names("host") {
            request.push_str("Host: localhost\r\n");
        }
        if !names("user-agent") {
            request.push_str("User-Agent: berth-health\r\n");
        }
        for (name, value) in &check.headers {
            if !name.eq_ignore_ascii_case("connection")
                && !name.eq_ignore_ascii_case("content-length")
            {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        if !matches!(method, "GET" | "HEAD" | "OPTIONS" | "DELETE") {
            request.push_str("Content-Length: 0\r\n");
        }
        request.push_str("\r\n");
        let port = addr.port();
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|err| format!("send {method} {path} to port {port}: {err}"))?;
        let mut head = [0u8; 12];
        stream
            .read_exact(&mut head)
            .await
            .map_err(|err| format!("read answer to {method} {path} on port {port}: {err}"))?;
        let status = std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| format!("{method} {path} on port {port}: not an HTTP answer"))?;
        if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("{method} {path} on port {port} answered {status}"))
        }
    };
    match timeout(check.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
    }
}

/// Probes quickly until the first success or `deadline`. Returns the time it took.
pub async fn wait_until_healthy(
    addr: SocketAddr,
    netns: &Namespace,
    check: &HealthCheck,
    deadline: Instant,
) -> Result<Duration, String> {
    let started = Instant::now();
    // A cold start waits on this: for the first 50 ms, watch the port from a
    // blocking thread every 100 µs (tokio's timers tick in milliseconds; a
    // refused connect costs microseconds), inside the instance's namespace
    // when it has one, then probe as below. For a TCP check the watch's
    // connect is the check.
    let inside = netns.clone();
    let connected = tokio::task::spawn_blocking(move || {
        let watch = || {
            let until = std::time::Instant::now() + Duration::from_millis(50);
            while std::time::Instant::now() < until {
                if std::net::TcpStream::connect(addr).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            false
        };
        berth_runtime::with_exact_sleeps(|| match inside {
            Some(netns) => netns.within(watch).unwrap_or(false),
            None => watch(),
        })
    })
    .await
    .unwrap_or(false);
    if connected && check.http_path.is_none() {
        return Ok(started.elapsed());
    }
    // Every half millisecond for the first 50 ms, then backing off.
    let mut pause = Duration::from_micros(500);
    let mut last_error = "not checked yet".to_string();
    while Instant::now() < deadline {
        match probe(addr, netns, check).await {
            Ok(()) => return Ok(started.elapsed()),
            Err(err) => last_error = err,
        }
        tokio::time::sleep(pause).await;
        if started.elapsed() > Duration::from_millis(50) {
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
    Err(last_error)
}

/// What to add to "did not pass its health check" for an instance (its
/// process `pid`) that was to listen on `port`: where it listens instead,
/// and the setting that fits. Empty when it does listen on `port`, or the
/// check had no port.
pub fn listening_hint(pid: u32, port: Option<u16>) -> String {
    let Some(port) = port else {
        return String::new();
    };
    let ports = berth_runtime::listening_ports(pid);
    if ports.contains(&port) {
        return String::new();
    }
    let list = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    match ports.as_slice() {
        [] => format!("; it listens on no TCP port (berth gave it PORT={port})"),
        [only] => format!(
            "; it listens on {only}, not on PORT ({port}): set internal_port = {only} under [http_service] in berth.toml (or fly.toml), or make it listen on $PORT"
        ),
        _ => format!(
            "; it listens on {list}, not on PORT ({port}): set internal_port under [http_service] to the one that serves HTTP, or make it listen on $PORT"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn http_server(status: u16) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(
                        format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n").as_bytes(),
                    )
                    .await;
            }
        });
        addr
    }

    fn http_check(path: &str) -> HealthCheck {
        HealthCheck {
            http_path: Some(path.into()),
            ..HealthCheck::default()
        }
    }

    #[tokio::test]
    async fn http_checks_want_2xx_or_3xx() {
        assert!(
            probe(http_server(200).await, &None, &http_check("/healthz"))
                .await
                .is_ok()
        );
        assert!(
            probe(http_server(302).await, &None, &http_check("/"))
                .await
                .is_ok()
        );
        let failing = http_server(500).await;
        let err = probe(failing, &None, &http_check("/healthz"))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            format!("GET /healthz on port {} answered 500", failing.port())
        );
    }

    #[tokio::test]
    async fn an_http_check_sends_its_method_and_headers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, received) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buffer = vec![0u8; 2048];
            let read = stream.read(&mut buffer).await.unwrap();
            let _ = sender.send(String::from_utf8_lossy(&buffer[..read]).to_string());
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        });
        let check = HealthCheck {
            method: Some("HEAD".into()),
            headers: [
                ("X-Probe".to_string(), "fly".to_string()),
                ("Host".to_string(), "example.com".to_string()),
            ]
            .into(),
            ..http_check("/ready")
        };
        assert_eq!(probe(addr, &None, &check).await, Ok(()));
        let request = received.await.unwrap();
        assert!(request.starts_with("HEAD /ready HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("\r\nX-Probe: fly\r\n"), "{request}");
        // One Host: the check's.
        assert_eq!(request.matches("Host:").count(), 1, "{request}");
        assert!(request.contains("\r\nHost: example.com\r\n"), "{request}");
    }

    #[tokio::test]
    async fn tcp_checks_want_a_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(probe(addr, &None, &HealthCheck::default()).await.is_ok());
        drop(listener);
        assert!(probe(addr, &None, &HealthCheck::default()).await.is_err());
        let deadline = Instant::now() + Duration::from_millis(100);
        assert!(
            wait_until_healthy(addr, &None, &HealthCheck::default(), deadline)
                .await
                .is_err()
        );
    }
}
