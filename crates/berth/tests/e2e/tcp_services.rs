//! End to end: a fly.toml with an HTTP service and TCP services
//! (examples/echo): the TCP ones are reached on their public ports — as
//! bytes, through TLS berth ends, and with a PROXY protocol header — and a
//! connection wakes an app scaled to zero.

use std::time::Duration;

use berth_testkit::{TestServer, example, tls_connect};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// Sends `line` and reads the lines that come back, until `count` have.
async fn exchange<S>(stream: S, line: &str, count: usize) -> Vec<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(stream);
    reader
        .get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    let mut lines = Vec::new();
    while lines.len() < count {
        let mut got = String::new();
        let read = tokio::time::timeout(Duration::from_secs(30), reader.read_line(&mut got))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(read > 0, "closed after {lines:?}");
        lines.push(got.trim_end().to_string());
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn tcp_services_are_reached_on_their_public_ports_and_wake_the_app() {
    setup();
    let server = TestServer::start_with(&["--https", "127.0.0.1:0"]).await;
    let [plain, proxied, secure] = berth_testkit::free_ports();
    let dir = example("echo");
    std::fs::write(
        dir.path().join("fly.toml"),
        format!(
            r#"app = "tcp-echo"

[http_service]
  internal_port = 8080
  auto_stop_machines = "stop"
  auto_start_machines = true
  min_machines_running = 0
  idle_timeout = "2s"

[[services]]
  internal_port = 7000
  protocol = "tcp"
  [[services.ports]]
    port = {plain}
  [[services.ports]]
    port = {secure}
    handlers = ["tls"]
  [[services.tcp_checks]]
    interval = "5s"

[[services]]
  internal_port = 7001
  protocol = "tcp"
  [[services.ports]]
    port = {proxied}
    handlers = ["proxy_proto"]
"#
        ),
    )
    .unwrap();
    server.ok_in(dir.path(), &["up"]).await;
    let answer = server.get("tcp-echo", "/").await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "echo http"));

    // Bytes in, bytes out, from an instance of the app.
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", plain))
        .await
        .unwrap();
    let lines = exchange(stream, "hello over tcp", 1).await;
    assert!(lines[0].ends_with(": hello over tcp"), "{lines:?}");

    // The client's own address arrives first, in a PROXY v2 header.
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", proxied))
        .await
        .unwrap();
    let client = stream.local_addr().unwrap();
    let lines = exchange(stream, "who am i", 2).await;
    assert_eq!(lines[0], format!("from {client}"), "{lines:?}");
    assert!(lines[1].ends_with(": who am i"), "{lines:?}");

    // TLS ended by berth, with a certificate of its CA for the app's name.
    let root = server.ok(&["certs", "root"]).await.stdout;
    let stream = tls_connect(
        std::net::SocketAddr::from(([127, 0, 0, 1], secure)),
        "tcp-echo.localhost",
        &root,
        &[],
    )
    .await
    .expect("a TLS handshake with berth's certificate");
    let lines = exchange(stream, "over tls", 1).await;
    assert!(lines[0].ends_with(": over tls"), "{lines:?}");

    // Idle, the app scales to zero; a TCP connection wakes it.
    let status = server
        .wait_for_status("tcp-echo", Duration::from_secs(30), |status| {
            status["instances"].as_array().is_some_and(Vec::is_empty)
        })
        .await;
    assert!(
        status["instances"].as_array().unwrap().is_empty(),
        "{status:#}"
    );
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", plain))
        .await
        .unwrap();
    let lines = exchange(stream, "wake up", 1).await;
    assert!(lines[0].ends_with(": wake up"), "{lines:?}");
    let events = server.ok(&["events", "--app", "tcp-echo"]).await.stdout;
    assert!(events.contains("scale.from_zero"), "{events}");

    // The app's [edge] rules hold for its TCP services: a denied address
    // is closed on at once, and the refusal counted.
    server
        .ok(&["edge", "deny", "127.0.0.1", "--app", "tcp-echo"])
        .await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", plain))
        .await
        .unwrap();
    let _ = stream.write_all(b"let me in\n").await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer),
    )
    .await
    .expect("closed at once");
    assert!(read.is_err() || answer.is_empty(), "{answer:?}");
    // The counts are the reconciler's, published at its next pass.
    let mut shown = String::new();
    for _ in 0..100 {
        shown = server.ok(&["status", "--app", "tcp-echo"]).await.stdout;
        if shown.contains("1 denied by address") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(shown.contains("1 denied by address"), "{shown}");
    server
        .ok(&["edge", "remove", "127.0.0.1", "--app", "tcp-echo"])
        .await;

    // Another app cannot take a port this one's live release holds.
    let thief = example("echo");
    std::fs::write(
        thief.path().join("fly.toml"),
        format!("app = \"thief\"\n\n[[services]]\n  internal_port = 7000\n  [[services.ports]]\n    port = {plain}\n"),
    )
    .unwrap();
    let refused = server.fails_in(thief.path(), &["up"]).await;
    assert!(
        refused.stderr.contains(&format!(
            "port {plain} is the TCP service port of app `tcp-echo`"
        )),
        "{}",
        refused.stderr
    );

    // A port another process holds is an event of the app, not a crash.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = holder.local_addr().unwrap().port();
    std::fs::write(
        dir.path().join("fly.toml"),
        format!("app = \"tcp-echo\"\n\n[http_service]\n  internal_port = 8080\n\n[[services]]\n  internal_port = 7000\n  [[services.ports]]\n    port = {held}\n"),
    )
    .unwrap();
    server.ok_in(dir.path(), &["deploy"]).await;
    let mut events = String::new();
    for _ in 0..100 {
        events = server.ok(&["events", "--app", "tcp-echo"]).await.stdout;
        if events.contains("service.unbound") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        events.contains("service.unbound") && events.contains(&format!(":{held}")),
        "{events}"
    );
    assert_eq!(server.get("tcp-echo", "/").await.status, 200);
}

/// Sends `line` on a connection kept open; returns the instance that
/// echoed it.
async fn echoed_by(connection: &mut BufReader<tokio::net::TcpStream>, line: &str) -> String {
    connection
        .get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    let mut got = String::new();
    let read = tokio::time::timeout(Duration::from_secs(30), connection.read_line(&mut got))
        .await
        .expect("an answer in time")
        .unwrap();
    assert!(read > 0, "the connection was closed");
    let (instance, echoed) = got.trim_end().split_once(": ").expect("INSTANCE: LINE");
    assert_eq!(echoed, line);
    instance.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_tcp_connection_open_through_a_redeploy_is_drained_not_cut() {
    setup();
    let server = TestServer::start().await;
    let [port] = berth_testkit::free_ports();
    let dir = example("echo");
    let write_spec = |release: &str| {
        std::fs::write(
            dir.path().join("fly.toml"),
            format!(
                r#"app = "tcp-drain"

[env]
  RELEASE = "{release}"

[http_service]
  internal_port = 8080
  auto_stop_machines = false
  min_machines_running = 1

[[services]]
  internal_port = 7000
  [[services.ports]]
    port = {port}
"#
            ),
        )
        .unwrap();
    };
    write_spec("one");
    server.ok_in(dir.path(), &["up"]).await;
    let connect = || async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        BufReader::new(stream)
    };
    let mut held = connect().await;
    let old = echoed_by(&mut held, "before the deploy").await;

    write_spec("two");
    server.ok_in(dir.path(), &["deploy"]).await;

    // New connections go to the new release's instance...
    let mut fresh = connect().await;
    let new = echoed_by(&mut fresh, "after the deploy").await;
    assert_ne!(new, old, "a new connection reached the retired instance");
    // ...while the one opened before is still carried by the old one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(echoed_by(&mut held, "still here").await, old);
    let status = server.status("tcp-drain").await;
    let present = |status: &serde_json::Value, id: &str| {
        status["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|instance| instance["id"] == id)
    };
    assert!(present(&status, &old), "{status:#}");

    // When it closes, the drained instance stops: well before the 30 s a
    // drain may take at most.
    drop(held);
    let status = server
        .wait_for_status("tcp-drain", Duration::from_secs(15), |status| {
            !present(status, &old)
        })
        .await;
    assert!(!present(&status, &old), "{status:#}");
    assert_eq!(echoed_by(&mut fresh, "the new one stays").await, new);
}
