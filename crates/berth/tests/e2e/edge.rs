//! End to end: an app's `[edge]` rules at the router — clients kept out by
//! address, rate limits per client with 429 and Retry-After, a body limit
//! with 413, a header limit with 431, a connection limit per client, a
//! request timeout with 504, the refusals counted in `berth status` — and
//! slow clients that do not stop a healthy app from answering.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use berth_testkit::{TestServer, example};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// Sends `request` to the router from the local address `from`; the raw answer.
async fn from(router: SocketAddr, from: &str, request: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    let mut stream = socket.connect(router).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: guarded.localhost\r\nConnection: close\r\n\r\n")
}

/// A keep-alive connection from `from` that has had one answer from the app.
async fn kept_open(router: SocketAddr, from: &str) -> (tokio::net::TcpStream, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    let mut stream = socket.connect(router).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: guarded.localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buffer[..read]);
    }
    (stream, status_of(&String::from_utf8_lossy(&answer)))
}

fn status_of(answer: &str) -> u16 {
    answer
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_rules_keep_out_limit_and_count() {
    setup();
    let server = TestServer::start_with(&["--trusted-proxy", "127.0.0.9"]).await;
    let dir = example("plain");
    std::fs::write(
        dir.path().join("berth.toml"),
        "app = \"guarded\"\n[edge]\ndeny = [\"127.0.0.2\"]\nmax_body = 100\n\
         max_header = \"1kb\"\nmax_connections = 2\nrequest_timeout = \"1s\"\n\n\
         [[edge.rate_limits]]\nrequests = 3\nper = \"1m\"\npath = \"/limited\"\n",
    )
    .unwrap();
    server.ok_in(dir.path(), &["up"]).await;
    let router = server.router;

    // By address: .2 is denied, .3 is not.
    let denied = from(router, "127.0.0.2", &get("/")).await;
    assert_eq!(status_of(&denied), 403, "{denied}");
    assert_eq!(status_of(&from(router, "127.0.0.3", &get("/")).await), 200);
    // Through the trusted proxy, the client it names is the one judged;
    // anyone else naming a client is not believed.
    let via = |client: &str| {
        format!(
            "GET / HTTP/1.1\r\nHost: guarded.localhost\r\nX-Forwarded-For: {client}\r\nConnection: close\r\n\r\n"
        )
    };
    assert_eq!(
        status_of(&from(router, "127.0.0.9", &via("127.0.0.2")).await),
        403
    );
    assert_eq!(
        status_of(&from(router, "127.0.0.9", &via("127.0.0.3")).await),
        200
    );
    assert_eq!(
        status_of(&from(router, "127.0.0.3", &via("127.0.0.2")).await),
        200
    );

    // Three a minute under /limited, per client.
    for _ in 0..3 {
        assert_eq!(
            status_of(&from(router, "127.0.0.3", &get("/limited")).await),
            200
        );
    }
    let limited = from(router, "127.0.0.3", &get("/limited")).await;
    assert_eq!(status_of(&limited), 429, "{limited}");
    let retry_after: u64 = limited
        .lines()
        .find_map(|line| line.strip_prefix("retry-after: "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {limited}"));
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        status_of(&from(router, "127.0.0.3", &get("/other")).await),
        200
    );
    assert_eq!(
        status_of(&from(router, "127.0.0.4", &get("/limited")).await),
        200
    );

    // Bodies: 100 bytes pass, 101 do not.
    let post = |size: usize| {
        format!(
            "POST / HTTP/1.1\r\nHost: guarded.localhost\r\nConnection: close\r\nContent-Length: {size}\r\n\r\n{}",
            "x".repeat(size)
        )
    };
    assert_eq!(status_of(&from(router, "127.0.0.3", &post(100)).await), 200);
    let too_large = from(router, "127.0.0.3", &post(101)).await;
    assert_eq!(status_of(&too_large), 413, "{too_large}");
    // Over HTTP/2 (cleartext, prior knowledge) a body of unknown length has
    // no Transfer-Encoding to give it away: it is held to the limit as it
    // streams, refused (413) once over it, and passed while under.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<reqwest::Body>();
    // (The app answers after a pause, as one reading its body would: one
    // that answers at once gets its answer through, its body cut at the
    // limit.)
    let streamed = |size: usize| {
        http::Request::post(format!("http://{router}/sleep?ms=300"))
            .header("host", "guarded.localhost")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter([
                Ok::<_, std::io::Error>(vec![b'x'; size]),
            ])))
            .unwrap()
    };
    let over = h2.request(streamed(4096)).await.unwrap();
    assert_eq!(over.version(), http::Version::HTTP_2);
    assert_eq!(over.status(), 413);
    assert_eq!(h2.request(streamed(50)).await.unwrap().status(), 200);

    // Headers: a 2 KiB cookie is over the 1 KiB limit.
    let cookie = format!(
        "GET / HTTP/1.1\r\nHost: guarded.localhost\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        "c".repeat(2048)
    );
    let too_long = from(router, "127.0.0.3", &cookie).await;
    assert_eq!(status_of(&too_long), 431, "{too_long}");

    // Connections: two per client address; a third is refused until one
    // closes, and other clients are not affected.
    let (first, status) = kept_open(router, "127.0.0.6").await;
    assert_eq!(status, 200);
    let (_second, status) = kept_open(router, "127.0.0.6").await;
    assert_eq!(status, 200);
    let third = from(router, "127.0.0.6", &get("/")).await;
    assert_eq!(status_of(&third), 429, "{third}");
    assert!(third.contains("at most 2 connections"), "{third}");
    assert_eq!(status_of(&from(router, "127.0.0.7", &get("/")).await), 200);
    drop(first);
    let mut passed = false;
    // A try that comes before the router saw the close is refused (and
    // counted) once more.
    let mut refused_again = 0;
    for _ in 0..50 {
        match status_of(&from(router, "127.0.0.6", &get("/")).await) {
            200 => {
                passed = true;
                break;
            }
            429 => refused_again += 1,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(passed, "a closed connection frees its slot");

    // Time: an answer slower than request_timeout is the router's 504,
    // after about the timeout.
    let started = std::time::Instant::now();
    let slow = from(router, "127.0.0.3", &get("/sleep?ms=4000")).await;
    assert_eq!(status_of(&slow), 504, "{slow}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        status_of(&from(router, "127.0.0.3", &get("/sleep?ms=10")).await),
        200
    );

    // 500 clients that never finish their request head do not stop others.
    let mut slow = Vec::new();
    for index in 0..500 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        let source = format!("127.0.1.{}", index % 250 + 1);
        socket
            .bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))
            .unwrap();
        let mut stream = socket.connect(router).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: guarded.localhost\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    let answered =
        tokio::time::timeout(Duration::from_secs(5), from(router, "127.0.0.5", &get("/")))
            .await
            .expect("a healthy app answers while 500 slow clients hang on");
    assert_eq!(status_of(&answered), 200);
    drop(slow);

    // berth status counts what the rules refused.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = server.status("guarded").await;
    assert_eq!(status["edge"]["denied"], 2, "{status}");
    assert_eq!(status["edge"]["rate_limited"], 1, "{status}");
    // The 413 by Content-Length, the HTTP/2 body over the limit, the 431.
    assert_eq!(status["edge"]["too_large"], 3, "{status}");
    assert_eq!(
        status["edge"]["over_connections"],
        1 + refused_again,
        "{status}"
    );
    assert_eq!(status["edge"]["timed_out"], 1, "{status}");
    let shown = server.ok(&["status", "--app", "guarded"]).await.stdout;
    let expected = format!(
        "edge:     2 denied by address, 1 rate-limited, 3 too large, {} over the connection limit, 1 timed out",
        1 + refused_again
    );
    assert!(shown.contains(&expected), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_set_from_the_cli_apply_at_once_and_outlive_a_deploy() {
    setup();
    let server = TestServer::start().await;
    let dir = crate::support::deploy_plain(&server, "open", "").await;
    let router = server.router;
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: open.localhost\r\nConnection: close\r\n\r\n")
    };
    assert_eq!(status_of(&from(router, "127.0.0.2", &get("/")).await), 200);

    // A deny from the CLI applies without a deploy, and berth edge show
    // says where each rule comes from.
    server
        .ok(&["edge", "deny", "127.0.0.2", "--app", "open"])
        .await;
    assert_eq!(status_of(&from(router, "127.0.0.2", &get("/")).await), 403);
    assert_eq!(status_of(&from(router, "127.0.0.3", &get("/")).await), 200);
    server
        .ok(&["edge", "limit", "2/1m", "--path", "/api", "--app", "open"])
        .await;
    server
        .ok(&["edge", "set", "--max-body", "1kb", "--app", "open"])
        .await;
    let shown = server.ok(&["edge", "show", "--app", "open"]).await.stdout;
    for line in [
        "deny 127.0.0.2/32",
        "limit 2/1m burst 2 under /api",
        "max body 1024 bytes",
        "(berth edge)",
    ] {
        assert!(shown.contains(line), "{line}: {shown}");
    }

    // The rules outlive a deploy that adds its own; both apply.
    std::fs::write(
        dir.path().join("berth.toml"),
        "app = \"open\"\n[edge]\ndeny = [\"127.0.0.4\"]\n",
    )
    .unwrap();
    server.ok_in(dir.path(), &["up"]).await;
    assert_eq!(status_of(&from(router, "127.0.0.2", &get("/")).await), 403);
    assert_eq!(status_of(&from(router, "127.0.0.4", &get("/")).await), 403);
    for _ in 0..2 {
        assert_eq!(
            status_of(&from(router, "127.0.0.3", &get("/api/x")).await),
            200
        );
    }
    assert_eq!(
        status_of(&from(router, "127.0.0.3", &get("/api/x")).await),
        429
    );
    let edge = server
        .ok(&["--json", "edge", "show", "--app", "open"])
        .await
        .json();
    assert_eq!(edge["from_spec"]["deny"][0], "127.0.0.4/32", "{edge}");
    assert_eq!(edge["from_cli"]["deny"][0], "127.0.0.2/32", "{edge}");
    assert_eq!(edge["effective"]["deny"].as_array().unwrap().len(), 2);

    // Removing a rule lets the client back in; berth.toml's stay.
    server
        .ok(&["edge", "remove", "127.0.0.2", "--app", "open"])
        .await;
    assert_eq!(status_of(&from(router, "127.0.0.2", &get("/")).await), 200);
    server.ok(&["edge", "clear", "--app", "open"]).await;
    assert_eq!(status_of(&from(router, "127.0.0.4", &get("/")).await), 403);

    // Bad input: each a clear error, and nothing changes.
    for (args, expected) in [
        (
            vec!["edge", "deny", "10.1.0.0/8", "--app", "open"],
            "has bits set",
        ),
        (
            vec!["edge", "allow", "example.org", "--app", "open"],
            "example.org",
        ),
        (
            vec!["edge", "limit", "0/1m", "--app", "open"],
            "a rate of zero",
        ),
        (
            vec!["edge", "set", "--max-connections", "0", "--app", "open"],
            "max connections must be 1 or more",
        ),
        (vec!["edge", "deny", "10.0.0.1", "--app", "ghost"], "ghost"),
    ] {
        let failed = server.fails(&args).await;
        assert!(
            failed.stderr.contains(expected),
            "{args:?}: {}",
            failed.stderr
        );
    }
    let edge = server.api_get("/v1/apps/open/edge").await.1;
    assert!(edge["from_cli"].as_object().unwrap().is_empty(), "{edge}");

    // The API checks too: a zero rate sent directly is refused.
    let refused = reqwest::Client::new()
        .put(format!("{}/v1/apps/open/edge", server.api_url))
        .bearer_auth(&server.token)
        .json(&serde_json::json!({
            "rate_limits": [{"requests": 0, "per_ms": 1000, "burst": 1}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    assert!(refused.text().await.unwrap().contains("zero requests"));
    let events = server.ok(&["events", "--app", "open"]).await.stdout;
    assert!(events.contains("edge.changed"), "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_holds_its_connection_slot_until_it_closes() {
    setup();
    let server = TestServer::start().await;
    let dir = example("hello");
    std::fs::write(
        dir.path().join("berth.toml"),
        "app = \"hello\"\n[edge]\nmax_connections = 1\n",
    )
    .unwrap();
    server.ok_in(dir.path(), &["up"]).await;
    let router = server.router;
    let get = "GET / HTTP/1.1\r\nHost: hello.localhost\r\nConnection: close\r\n\r\n";

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new("127.0.0.8".parse().unwrap(), 0))
        .unwrap();
    let mut ws = socket.connect(router).await.unwrap();
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: hello.localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(ws.read_u8().await.unwrap());
    }
    assert!(
        String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // The tunnel is open: the address's one connection is taken.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = from(router, "127.0.0.8", get).await;
    assert_eq!(status_of(&refused), 429, "{refused}");
    assert_eq!(status_of(&from(router, "127.0.0.9", get).await), 200);
    // Closed, it frees the slot.
    drop(ws);
    let mut passed = false;
    for _ in 0..50 {
        if status_of(&from(router, "127.0.0.8", get).await) == 200 {
            passed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(passed, "a closed WebSocket frees its slot");
}
