//! End to end with a real ACME CA (Debian's pebble, on loopback, its DNS
//! answering every name with 127.0.0.1): a custom domain gets a
//! certificate from the CA, served over HTTPS and verified against the
//! CA's root; a domain the CA cannot validate has no stand-in certificate
//! and `berth domains check` says why. The app's `[edge]` rules keep
//! every client out, and the CA's HTTP-01 request still passes.

use std::time::{Duration, Instant};

use berth_testkit::{PebblePlan, TestServer, example, https_get};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_domain_gets_a_certificate_from_the_acme_ca() {
    setup();
    let plan = PebblePlan::new();
    let root_file = plan.listener_root.display().to_string();
    let server = TestServer::start_with(&[
        "--https",
        "127.0.0.1:0",
        "--acme-directory",
        &plan.directory,
        "--acme-ca-root",
        &root_file,
        "--acme-email",
        "ops@example.org",
    ])
    .await;
    let https = server.https.expect("HTTPS");
    let pebble = plan.start(server.router.port(), https.port()).await;
    let ca_root = pebble.issuing_root().await;
    // A name the CA will look for at an address where nothing answers.
    pebble.resolve("broken.example.org", "127.0.0.2").await;

    let dir = example("plain");
    std::fs::write(
        dir.path().join("berth.toml"),
        "app = \"shop\"\n[edge]\nallow = [\"10.9.9.9\"]\n",
    )
    .unwrap();
    server.ok_in(dir.path(), &["up"]).await;
    server
        .ok(&["domains", "add", "www.example.org", "--app", "shop"])
        .await;
    server
        .ok(&["domains", "add", "broken.example.org", "--app", "shop"])
        .await;

    let deadline = Instant::now() + Duration::from_secs(90);
    let answer = loop {
        match https_get(https, "www.example.org", "/", &ca_root).await {
            Ok(answer) => break answer,
            Err(err) => assert!(
                Instant::now() < deadline,
                "no certificate from the CA: {err}\n{}\n{}",
                server.server_log(),
                pebble.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // The certificate verified; the app's rules keep this client out.
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.alpn.as_deref(), Some("h2"));
    assert!(
        !server.server_log().contains("HTTP-01 failed"),
        "HTTP-01 passed the deny-all rules:\n{}",
        server.server_log()
    );
    let events = server.ok(&["events", "--app", "shop"]).await.stdout;
    assert!(
        events.contains("certificate for www.example.org issued"),
        "{events}"
    );
    let check = server
        .ok(&["domains", "check", "www.example.org", "--json"])
        .await
        .json();
    assert!(check["expires"].is_string(), "{check}");
    assert!(check["problem"].is_null(), "{check}");
    // The key is the server's alone.
    let key = server.data_dir().join("tls/certs/www.example.org.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // The broken one: both challenges fail, no stand-in certificate, and
    // the check says what the CA said and when berth tries again.
    let deadline = Instant::now() + Duration::from_secs(90);
    let check = loop {
        let check = server
            .ok(&["domains", "check", "broken.example.org", "--json"])
            .await
            .json();
        if check["next_attempt"].is_string() {
            break check;
        }
        assert!(
            Instant::now() < deadline,
            "no diagnosis: {check}\n{}\n{}",
            server.server_log(),
            pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let problem = check["problem"].as_str().unwrap();
    assert!(
        problem.contains("HTTP-01") && problem.contains("TLS-ALPN-01"),
        "{problem}"
    );
    assert!(problem.contains("127.0.0.2"), "{problem}");
    assert!(
        https_get(https, "broken.example.org", "/", &ca_root)
            .await
            .is_err()
    );
    let shown = server
        .ok(&["domains", "check", "broken.example.org"])
        .await
        .stdout;
    assert!(
        shown.contains("problem:") && shown.contains("next try:"),
        "{shown}"
    );
    let events = server.ok(&["events", "--app", "shop"]).await.stdout;
    assert!(
        events.contains("no certificate for broken.example.org"),
        "{events}"
    );
}
