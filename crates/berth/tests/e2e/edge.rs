//! End to end: an app's `[edge]` rules at the router — clients kept out by
//! address, rate limits per client with 429 and Retry-After, a body limit
//! with 413, the refusals counted in `berth status` — and slow clients
//! that do not stop a healthy app from answering.

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
        "app = \"guarded\"\n[edge]\ndeny = [\"127.0.0.2\"]\nmax_body = 100\n\n\
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
    assert_eq!(status["edge"]["too_large"], 1, "{status}");
    let shown = server.ok(&["status", "--app", "guarded"]).await.stdout;
    assert!(
        shown.contains("edge:     2 denied by address, 1 rate-limited, 1 too large"),
        "{shown}"
    );
}
