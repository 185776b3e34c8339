//! The router over real loopback sockets: backends are small hyper servers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_router::{AppRoute, Backend, RouteTable};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A backend that answers with its name, and echoes after an upgrade.
async fn start_backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = service_fn(move |mut request: Request<Incoming>| async move {
                    if request.headers().contains_key("upgrade") {
                        let upgrade = hyper::upgrade::on(&mut request);
                        tokio::spawn(async move {
                            let mut io = TokioIo::new(upgrade.await.unwrap());
                            let mut buffer = [0u8; 5];
                            io.read_exact(&mut buffer).await.unwrap();
                            io.write_all(&buffer).await.unwrap();
                        });
                        let mut response = Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                        response
                            .headers_mut()
                            .insert("upgrade", "echo".parse().unwrap());
                        response
                            .headers_mut()
                            .insert("connection", "upgrade".parse().unwrap());
                        return Ok::<_, Infallible>(response);
                    }
                    let header = |name: &str| {
                        request
                            .headers()
                            .get_all(name)
                            .iter()
                            .map(|value| value.to_str().unwrap().to_string())
                            .collect::<Vec<_>>()
                            .join(" | ")
                    };
                    let mut response = Response::new(Full::new(Bytes::from(format!(
                        "{name} {}",
                        header("x-forwarded-for")
                    ))));
                    response
                        .headers_mut()
                        .insert("x-saw-forwarded", header("forwarded").parse().unwrap());
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

async fn start_router(table: RouteTable) -> (SocketAddr, watch::Sender<Arc<RouteTable>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (sender, receiver) = watch::channel(Arc::new(table));
    tokio::spawn(berth_router::serve(
        listener,
        receiver,
        "localhost".into(),
        berth_router::Edge::default(),
        std::future::pending(),
    ));
    (addr, sender)
}

/// Sends one HTTP/1.1 request and returns (status, body).
async fn get(router: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(router).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let status = raw[9..12].parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

fn route(backends: Vec<Arc<Backend>>) -> AppRoute {
    AppRoute {
        backends,
        ..AppRoute::default()
    }
}

#[tokio::test]
async fn requests_reach_the_app_named_by_the_host_and_spread_over_instances() {
    let a = Arc::new(Backend::new(start_backend("a").await, "web-a".into()));
    let b = Arc::new(Backend::new(start_backend("b").await, "web-b".into()));
    let table = RouteTable {
        domains: HashMap::new(),
        tls_internal_domains: Default::default(),
        apps: HashMap::from([("hello".to_string(), route(vec![a, b]))]),
    };
    let (router, _table) = start_router(table).await;

    let mut seen = Vec::new();
    for _ in 0..4 {
        let (status, body) = get(router, "hello.localhost:8080", "/").await;
        assert_eq!(status, 200);
        assert!(
            body.ends_with("127.0.0.1"),
            "X-Forwarded-For is set: {body}"
        );
        seen.push(body.split(' ').next().unwrap().to_string());
    }
    seen.sort();
    assert_eq!(seen, ["a", "a", "b", "b"]);
}

#[tokio::test]
async fn unknown_apps_get_404_and_apps_without_instances_503() {
    let table = RouteTable {
        domains: HashMap::new(),
        tls_internal_domains: Default::default(),
        apps: HashMap::from([(
            "sleepy".to_string(),
            AppRoute {
                unavailable_reason: Some("it is crash-looping".into()),
                ..AppRoute::default()
            },
        )]),
    };
    let (router, _table) = start_router(table).await;
    let (status, body) = get(router, "nope.localhost", "/").await;
    assert_eq!(status, 404);
    assert!(
        body.contains("no app for the host `nope.localhost`"),
        "{body}"
    );
    let (status, body) = get(router, "sleepy.localhost", "/").await;
    assert_eq!(status, 503);
    assert!(body.contains("it is crash-looping"), "{body}");
}

#[tokio::test]
async fn a_dead_instance_gives_502_and_a_live_one_is_retried_first() {
    let dead_addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let dead = Arc::new(Backend::new(dead_addr, "web-dead".into()));
    // Held for a replacement that never comes, then 502 with the reason.
    let mut only_dead = route(vec![dead.clone()]);
    only_dead.admission.hold_timeout = Duration::from_millis(300);
    let (router, table) = start_router(RouteTable {
        domains: HashMap::new(),
        tls_internal_domains: Default::default(),
        apps: HashMap::from([("hello".to_string(), only_dead)]),
    })
    .await;
    let (status, body) = get(router, "hello.localhost", "/").await;
    assert_eq!(status, 502);
    assert!(body.contains("web-dead"), "{body}");

    let live = Arc::new(Backend::new(start_backend("live").await, "web-live".into()));
    table
        .send(Arc::new(RouteTable {
            domains: HashMap::new(),
            tls_internal_domains: Default::default(),
            apps: HashMap::from([("hello".to_string(), route(vec![dead, live]))]),
        }))
        .unwrap();
    for _ in 0..4 {
        let (status, body) = get(router, "hello.localhost", "/").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("live"));
    }
}

#[tokio::test]
async fn a_request_that_finds_its_only_instance_dead_waits_for_the_replacement() {
    let dead_addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let dead = Arc::new(Backend::new(dead_addr, "web-dead".into()));
    let (router, table) = start_router(RouteTable {
        domains: HashMap::new(),
        tls_internal_domains: Default::default(),
        apps: HashMap::from([("hello".to_string(), route(vec![dead.clone()]))]),
    })
    .await;
    let request = tokio::spawn(async move { get(router, "hello.localhost", "/").await });
    // The reconciler's next tables: the dead instance out, then a new one in.
    tokio::time::sleep(Duration::from_millis(200)).await;
    table
        .send(Arc::new(RouteTable {
            domains: HashMap::new(),
            tls_internal_domains: Default::default(),
            apps: HashMap::from([("hello".to_string(), route(vec![]))]),
        }))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let new = Arc::new(Backend::new(start_backend("new").await, "web-new".into()));
    table
        .send(Arc::new(RouteTable {
            domains: HashMap::new(),
            tls_internal_domains: Default::default(),
            apps: HashMap::from([("hello".to_string(), route(vec![new]))]),
        }))
        .unwrap();
    let (status, body) = request.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("new"), "{body}");
}

#[tokio::test]
async fn upgrades_pass_through_both_ways() {
    let backend = Arc::new(Backend::new(start_backend("ws").await, "web-ws".into()));
    let (router, _table) = start_router(RouteTable {
        domains: HashMap::new(),
        tls_internal_domains: Default::default(),
        apps: HashMap::from([("hello".to_string(), route(vec![backend.clone()]))]),
    })
    .await;
    let mut stream = TcpStream::connect(router).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: hello.localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"));
    assert_eq!(
        backend.in_flight(),
        1,
        "an open upgraded connection counts as in flight"
    );
    stream.write_all(b"hello").await.unwrap();
    let mut echoed = [0u8; 5];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello");
}

/// A backend that takes `delay` per request and records the most requests
/// it ever had at once.
async fn start_slow_backend(
    delay: std::time::Duration,
    most: Arc<std::sync::atomic::AtomicUsize>,
) -> SocketAddr {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let now = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (now, most) = (now.clone(), most.clone());
            tokio::spawn(async move {
                let service = service_fn(move |_request: Request<Incoming>| {
                    let (now, most) = (now.clone(), most.clone());
                    async move {
                        let current = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(current, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("slow"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_hard_limit_requests_queue_and_beyond_the_queue_get_503() {
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let addr = start_slow_backend(std::time::Duration::from_millis(150), most.clone()).await;
    let mut app = route(vec![Arc::new(Backend::new(addr, "web-1".into()))]);
    app.admission.hard_limit = Some(2);
    app.admission.queue_limit = 4;
    let (router, _table) = start_router(RouteTable {
        domains: HashMap::new(),
        tls_internal_domains: Default::default(),
        apps: HashMap::from([("slow".to_string(), app)]),
    })
    .await;
    // 6 at once: 2 in flight, 4 queued, all answered; never more than 2 at the instance.
    let requests: Vec<_> = (0..6)
        .map(|_| tokio::spawn(async move { get(router, "slow.localhost", "/").await }))
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), (200, "slow".to_string()));
    }
    assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 2);
    // 10 at once: the queue holds 4, so some get 503 with Retry-After.
    let requests: Vec<_> = (0..10)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(router).await.unwrap();
                stream
                    .write_all(
                        b"GET / HTTP/1.1\r\nHost: slow.localhost\r\nConnection: close\r\n\r\n",
                    )
                    .await
                    .unwrap();
                let mut raw = String::new();
                stream.read_to_string(&mut raw).await.unwrap();
                raw
            })
        })
        .collect();
    let mut rejected = 0;
    for request in requests {
        let raw = request.await.unwrap();
        if raw.starts_with("HTTP/1.1 503") {
            rejected += 1;
            assert!(raw.to_ascii_lowercase().contains("retry-after: 1"), "{raw}");
            assert!(raw.contains("at capacity"), "{raw}");
        } else {
            assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        }
    }
    assert!((1..=4).contains(&rejected), "{rejected} rejected");
    assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_an_app_with_no_instance_is_held_while_one_starts() {
    let backend = start_backend("woken").await;
    let (sender_slot, wakes) = (
        Arc::new(std::sync::Mutex::new(
            None::<watch::Sender<Arc<RouteTable>>>,
        )),
        Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    );
    let mut app = route(Vec::new());
    let (slot, counter) = (sender_slot.clone(), wakes.clone());
    app.admission.wake = Some(berth_router::Waker(Arc::new(move |name: &str| {
        assert_eq!(name, "sleepy");
        if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            let slot = slot.clone();
            tokio::spawn(async move {
                // The "start": 300 ms later one instance is in the table.
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                let sender = slot.lock().unwrap().take().unwrap();
                let mut started = route(vec![Arc::new(Backend::new(backend, "web-1".into()))]);
                started.admission.wake = None;
                sender.send_replace(Arc::new(RouteTable {
                    domains: HashMap::new(),
                    tls_internal_domains: Default::default(),
                    apps: HashMap::from([("sleepy".to_string(), started)]),
                }));
                *slot.lock().unwrap() = Some(sender);
            });
        }
    })));
    let (router, sender) = start_router(RouteTable {
        domains: HashMap::new(),
        tls_internal_domains: Default::default(),
        apps: HashMap::from([("sleepy".to_string(), app)]),
    })
    .await;
    *sender_slot.lock().unwrap() = Some(sender);
    let requests: Vec<_> = (0..20)
        .map(|_| tokio::spawn(async move { get(router, "sleepy.localhost", "/").await }))
        .collect();
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200);
        assert!(body.starts_with("woken"), "{body}");
    }
    assert!(wakes.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn a_start_that_never_comes_or_fails_answers_503_with_the_reason() {
    let mut never = route(Vec::new());
    never.admission.wake = Some(berth_router::Waker(Arc::new(|_: &str| {})));
    never.admission.hold_timeout = std::time::Duration::from_millis(300);
    let mut failing = route(Vec::new());
    failing.admission.wake = Some(berth_router::Waker(Arc::new(|_: &str| {})));
    failing.failing = true;
    failing.unavailable_reason = Some("it is crash-looping (exit code 1)".into());
    let (router, _table) = start_router(RouteTable {
        domains: HashMap::new(),
        tls_internal_domains: Default::default(),
        apps: HashMap::from([
            ("never".to_string(), never),
            ("failing".to_string(), failing),
        ]),
    })
    .await;
    let started = std::time::Instant::now();
    let (status, body) = get(router, "never.localhost", "/").await;
    assert_eq!(status, 503);
    assert!(body.contains("no instance started within"), "{body}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    let (status, body) = get(router, "failing.localhost", "/").await;
    assert_eq!(status, 503);
    assert!(body.contains("crash-looping (exit code 1)"), "{body}");
}

#[tokio::test]
async fn two_host_headers_get_400_and_a_clients_forwarded_header_is_replaced() {
    let a = Arc::new(Backend::new(start_backend("a").await, "web-a".into()));
    let table = RouteTable {
        domains: HashMap::new(),
        tls_internal_domains: Default::default(),
        apps: HashMap::from([("hello".to_string(), route(vec![a]))]),
    };
    let (router, _table) = start_router(table).await;
    let send = |request: &'static str| async move {
        let mut stream = TcpStream::connect(router).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        raw
    };
    let raw = send(
        "GET / HTTP/1.1\r\nHost: hello.localhost\r\nHost: other.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(raw.contains("more than one Host header"), "{raw}");

    let raw = send(
        "GET / HTTP/1.1\r\nHost: hello.localhost\r\nForwarded: for=10.9.9.9;proto=https\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let seen = raw
        .lines()
        .find_map(|line| line.strip_prefix("x-saw-forwarded: "))
        .unwrap_or_else(|| panic!("{raw}"));
    assert_eq!(
        seen.trim(),
        "for=127.0.0.1;proto=http;host=\"hello.localhost\""
    );
}

#[tokio::test]
async fn over_tls_the_app_is_told_the_client_used_https() {
    let a = Arc::new(Backend::new(start_backend("a").await, "web-a".into()));
    let table = RouteTable {
        domains: HashMap::new(),
        tls_internal_domains: Default::default(),
        apps: HashMap::from([("hello".to_string(), route(vec![a]))]),
    };
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = berth_tls::LocalCa::open_or_create(ca_dir.path()).unwrap();
    let root = ca.root_pem().to_string();
    let certificates = Arc::new(berth_tls::Certificates::new(
        ca,
        Arc::new(|_: &str| true),
        Arc::new(|_: &str| false),
        Arc::new(berth_tls::Challenges::default()),
        &ca_dir.path().join("certs"),
    ));
    let config = berth_tls::server_config(certificates).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_sender, receiver) = watch::channel(Arc::new(table));
    tokio::spawn(berth_router::serve(
        listener,
        receiver,
        "localhost".into(),
        berth_router::Edge {
            tls: Some(config),
            acme_http: None,
            https_port: None,
            trusted_proxies: Arc::from(Vec::new()),
            host_filter: None,
            access_log: None,
        },
        std::future::pending(),
    ));
    let answer = berth_testkit::https_get(addr, "hello.localhost", "/", &root)
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.alpn.as_deref(), Some("h2"));
    assert_eq!(
        answer.headers["x-saw-forwarded"].to_str().unwrap(),
        "for=127.0.0.1;proto=https;host=\"hello.localhost\""
    );
}

#[tokio::test]
async fn a_trusted_proxys_forwarded_headers_are_kept_and_anyone_elses_replaced() {
    let a = Arc::new(Backend::new(start_backend("a").await, "web-a".into()));
    let table = RouteTable {
        domains: HashMap::new(),
        tls_internal_domains: Default::default(),
        apps: HashMap::from([("hello".to_string(), route(vec![a]))]),
    };
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_sender, receiver) = watch::channel(Arc::new(table));
    tokio::spawn(berth_router::serve(
        listener,
        receiver,
        "localhost".into(),
        berth_router::Edge {
            trusted_proxies: Arc::from(vec!["127.0.0.9".parse().unwrap()]),
            ..berth_router::Edge::default()
        },
        std::future::pending(),
    ));
    let send_from = |source: &'static str| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let mut stream = socket
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        stream
            .write_all(
                b"GET / HTTP/1.1\r\nHost: hello.localhost\r\nX-Forwarded-For: 203.0.113.5\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        raw
    };
    let trusted = send_from("127.0.0.9").await;
    assert!(trusted.ends_with("a 203.0.113.5, 127.0.0.9"), "{trusted}");
    assert!(trusted.contains("proto=http"), "{trusted}");
    let stranger = send_from("127.0.0.3").await;
    assert!(stranger.ends_with("a 127.0.0.3"), "{stranger}");
}
