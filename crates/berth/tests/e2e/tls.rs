//! End to end: the router's HTTPS with certificates of berth's own CA —
//! HTTP/2 by ALPN, a certificate per name berth serves and none for
//! anything else, and a root that stays the same across restarts.

use berth_testkit::{TestServer, example, https_get};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_and_their_domains_are_served_over_https_with_berths_own_ca() {
    setup();
    let mut server = TestServer::start_with(&["--https", "127.0.0.1:0"]).await;
    let https = server.https.expect("the server says where HTTPS listens");
    let dir = example("plain");
    std::fs::write(
        dir.path().join("berth.toml"),
        "app = \"shop\"\n[http_service]\ndomains = [\"www.example.org\"]\n",
    )
    .unwrap();
    server.ok_in(dir.path(), &["up"]).await;
    let root = server.ok(&["certs", "root"]).await.stdout;
    assert!(root.starts_with("-----BEGIN CERTIFICATE-----"), "{root}");

    for name in ["shop.localhost", "www.example.org"] {
        let answer = https_get(https, name, "/", &root)
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(answer.status, 200, "{name}: {}", answer.body);
        assert!(answer.body.starts_with("plain says hi"), "{}", answer.body);
        assert_eq!(answer.alpn.as_deref(), Some("h2"), "{name}");
    }
    // No certificate is made for a name berth does not serve.
    for name in ["bank.example.com", "nope.localhost"] {
        let refused = https_get(https, name, "/", &root).await;
        assert!(refused.is_err(), "{name}: {refused:?}");
    }
    // A client that does not trust berth's root refuses the certificate.
    let other = TestServer::start().await;
    let other_root = other.ok(&["certs", "root"]).await.stdout;
    assert_ne!(other_root, root, "each server has a CA of its own");
    assert!(
        https_get(https, "shop.localhost", "/", &other_root)
            .await
            .is_err()
    );
    drop(other);

    // The root trusted once stays valid after a restart.
    server.restart().await;
    let https = server.https.expect("HTTPS after the restart");
    assert_eq!(server.ok(&["certs", "root"]).await.stdout, root);
    server
        .wait_for_status("shop", std::time::Duration::from_secs(30), |status| {
            status["instances"]
                .as_array()
                .is_some_and(|all| all.iter().any(|instance| instance["healthy"] == true))
        })
        .await;
    let answer = https_get(https, "shop.localhost", "/", &root)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_https_redirects_plain_requests_and_hsts_is_sent_over_https() {
    setup();
    let server =
        TestServer::start_with(&["--https", "127.0.0.1:0", "--trusted-proxy", "127.0.0.9"]).await;
    let https = server.https.expect("HTTPS");
    let dir = example("plain");
    std::fs::write(
        dir.path().join("berth.toml"),
        "app = \"secure\"\n[http_service]\nforce_https = true\nhsts = true\n",
    )
    .unwrap();
    server.ok_in(dir.path(), &["up"]).await;
    let plain_dir = example("plain");
    std::fs::write(plain_dir.path().join("berth.toml"), "app = \"open\"\n").unwrap();
    server.ok_in(plain_dir.path(), &["up"]).await;
    let root = server.ok(&["certs", "root"]).await.stdout;

    let redirected = berth_testkit::http_get(server.router, "secure.localhost:8080", "/a?b=1")
        .await
        .unwrap();
    assert_eq!(redirected.status, 308, "{}", redirected.body);
    let location = format!("https://secure.localhost:{}/a?b=1", https.port());
    assert!(redirected.body.contains(&location), "{}", redirected.body);
    let answer = https_get(https, "secure.localhost", "/", &root)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.headers["strict-transport-security"]
            .to_str()
            .unwrap(),
        "max-age=31536000"
    );
    // A proxy in front that took the client's HTTPS (trusted, and saying
    // so) is not redirected in a loop; the same header from anyone else
    // changes nothing.
    let proxied = |from: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let mut stream = socket.connect(server.router).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: secure.localhost\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    };
    let through_proxy = proxied("127.0.0.9").await;
    assert!(through_proxy.starts_with("HTTP/1.1 200"), "{through_proxy}");
    let claimed = proxied("127.0.0.1").await;
    assert!(claimed.starts_with("HTTP/1.1 308"), "{claimed}");
    // A Host that is not a host name is refused, not redirected to.
    let crafted = berth_testkit::http_get(server.router, "secure.evil.com/.localhost", "/")
        .await
        .unwrap();
    assert_eq!(crafted.status, 400, "{}", crafted.body);
    // Apps that do not ask keep plain HTTP and get no HSTS.
    let open = berth_testkit::http_get(server.router, "open.localhost", "/")
        .await
        .unwrap();
    assert_eq!(open.status, 200);
    let answer = https_get(https, "open.localhost", "/", &root)
        .await
        .unwrap();
    assert!(answer.headers.get("strict-transport-security").is_none());
}
