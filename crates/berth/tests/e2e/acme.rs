//! End to end with a real ACME CA (Debian's pebble, on loopback, its DNS
//! answering every name with 127.0.0.1): a custom domain gets a
//! certificate from the CA, served over HTTPS and verified against the
//! CA's root; a domain the CA cannot validate has no stand-in certificate
//! and `berth domains check` says why. The app's `[edge]` rules keep
//! every client out, and the CA's HTTP-01 request still passes. A
//! certificate that cannot be renewed near its end is a webhook.

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
    let log = server.server_log();
    assert!(
        !log.lines()
            .any(|line| line.contains("HTTP-01 failed") && line.contains("www.example.org")),
        "HTTP-01 passed the deny-all rules:\n{log}"
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
    // berth status says the same, per domain.
    let status = server.ok(&["status", "--app", "shop"]).await.stdout;
    assert!(
        status.contains("domain:   www.example.org (certificate until 20"),
        "{status}"
    );
    assert!(
        status.contains("domain:   broken.example.org (no certificate: the CA could not validate"),
        "{status}"
    );
}

async fn server_for(plan: &PebblePlan) -> TestServer {
    let root_file = plan.listener_root.display().to_string();
    TestServer::start_with(&[
        "--https",
        "127.0.0.1:0",
        "--acme-directory",
        &plan.directory,
        "--acme-ca-root",
        &root_file,
    ])
    .await
}

async fn deploy_shop(server: &TestServer, domain: &str) -> tempfile::TempDir {
    let dir = example("plain");
    std::fs::write(
        dir.path().join("berth.toml"),
        format!("app = \"shop\"\n[http_service]\ndomains = [\"{domain}\"]\n"),
    )
    .unwrap();
    server.ok_in(dir.path(), &["up"]).await;
    dir
}

async fn events(server: &TestServer) -> String {
    server.ok(&["events", "--app", "shop"]).await.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_renewed_before_it_expires_with_no_failed_request() {
    setup();
    let mut plan = PebblePlan::new();
    // Renewal falls due at two thirds: 20 s after issuance.
    plan.validity = Some(Duration::from_secs(30));
    let server = server_for(&plan).await;
    let https = server.https.expect("HTTPS");
    let pebble = plan.start(server.router.port(), https.port()).await;
    let ca_root = pebble.issuing_root().await;
    let _dir = deploy_shop(&server, "renew.example.org").await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        if let Ok(answer) = https_get(https, "renew.example.org", "/", &ca_root).await {
            break answer.certificate;
        }
        assert!(
            Instant::now() < deadline,
            "no first certificate\n{}",
            pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Requests keep coming while the certificate changes; none may fail.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut served = 0;
    loop {
        let answer = https_get(https, "renew.example.org", "/", &ca_root)
            .await
            .unwrap_or_else(|err| panic!("a request failed during renewal: {err}"));
        assert_eq!(answer.status, 200, "{}", answer.body);
        served += 1;
        if answer.certificate != first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not renewed:\n{}\n{}",
            server.server_log(),
            pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served > 10, "requests were served throughout: {served}");
    let events = events(&server).await;
    assert!(
        events.contains("certificate for renew.example.org renewed"),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_cannot_be_renewed_warns_the_webhooks() {
    setup();
    let mut plan = PebblePlan::new();
    // Renewal falls due 20 s after issuance, and the certificate is then
    // within days of its end.
    plan.validity = Some(Duration::from_secs(30));
    let server = server_for(&plan).await;
    let https = server.https.expect("HTTPS");
    let sink = berth_testkit::HttpSink::start().await;
    server
        .ok(&[
            "notify",
            "add",
            "webhook",
            &format!("http://{}/certs", sink.addr),
            "--events",
            "cert.*",
        ])
        .await;
    let pebble = plan.start(server.router.port(), https.port()).await;
    let ca_root = pebble.issuing_root().await;
    let _dir = deploy_shop(&server, "lapse.example.org").await;
    served_with(https, "lapse.example.org", &ca_root, &server).await;
    // The CA goes away before the renewal.
    drop(pebble);
    let deadline = Instant::now() + Duration::from_secs(60);
    let warning = loop {
        let warnings: Vec<serde_json::Value> = sink
            .received()
            .iter()
            .filter(|request| request.header("berth-event") == Some("cert.expiring"))
            .map(|request| serde_json::from_slice(&request.body).unwrap())
            .collect();
        if let Some(warning) = warnings.into_iter().next() {
            break warning;
        }
        assert!(
            Instant::now() < deadline,
            "no cert.expiring webhook\n{}",
            server.server_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(warning["app"], "shop", "{warning}");
    assert_eq!(warning["data"]["domain"], "lapse.example.org", "{warning}");
    assert!(warning["data"]["expires"].is_string(), "{warning}");
    let message = warning["message"].as_str().unwrap();
    assert!(
        message.contains("lapse.example.org") && message.contains("cannot be renewed"),
        "{message}"
    );
    assert!(
        message.contains("the CA cannot be reached"),
        "the cause is said: {message}"
    );
    let events = events(&server).await;
    assert!(events.contains("cannot be renewed"), "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_that_is_down_at_issuance_is_tried_again_and_the_certificate_comes() {
    setup();
    let plan = PebblePlan::new();
    let server = server_for(&plan).await;
    let https = server.https.expect("HTTPS");
    let _dir = deploy_shop(&server, "later.example.org").await;
    // The CA is not there yet: the failure is an event with the next try.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = events(&server).await;
        if events.contains("no certificate for later.example.org: the CA cannot be reached") {
            assert!(events.contains("trying again at"), "{events}");
            break;
        }
        assert!(Instant::now() < deadline, "no failure event: {events}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let check = server
        .ok(&["domains", "check", "later.example.org", "--json"])
        .await
        .json();
    assert!(
        check["problem"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{check}"
    );
    // Up now: the retry (after about 30 s) gets the certificate.
    let pebble = plan.start(server.router.port(), https.port()).await;
    let ca_root = pebble.issuing_root().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(answer) = https_get(https, "later.example.org", "/", &ca_root).await {
            assert_eq!(answer.status, 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered:\n{}\n{}",
            server.server_log(),
            pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        events(&server)
            .await
            .contains("certificate for later.example.org issued")
    );
}

/// Waits for `name` to be served over HTTPS with a certificate `root` verifies.
async fn served_with(
    https: std::net::SocketAddr,
    name: &str,
    root: &str,
    server: &TestServer,
) -> berth_testkit::HttpsAnswer {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match https_get(https, name, "/", root).await {
            Ok(answer) => return answer,
            Err(err) => assert!(
                Instant::now() < deadline,
                "{name} not served: {err}\n{}",
                server.server_log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_own_name_gets_the_cas_certificate_and_internal_names_berths() {
    setup();
    let plan = PebblePlan::new();
    let root_file = plan.listener_root.display().to_string();
    let server = TestServer::start_with(&[
        "--https",
        "127.0.0.1:0",
        "--domain",
        "example.net",
        "--acme-directory",
        &plan.directory,
        "--acme-ca-root",
        &root_file,
    ])
    .await;
    let https = server.https.expect("HTTPS");
    let pebble = plan.start(server.router.port(), https.port()).await;
    let ca_root = pebble.issuing_root().await;
    let berth_root = server.ok(&["certs", "root"]).await.stdout;

    // shop.example.net: the CA's, as soon as the app exists.
    let _shop = crate::support::deploy_plain(&server, "shop", "").await;
    let answer = served_with(https, "shop.example.net", &ca_root, &server).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        https_get(https, "shop.example.net", "/", &berth_root)
            .await
            .is_err(),
        "not berth's own certificate"
    );
    let check = server
        .ok(&["domains", "check", "shop.example.net", "--json"])
        .await
        .json();
    assert!(
        check["issuer"].as_str().unwrap().starts_with("acme ("),
        "{check}"
    );
    assert!(check["expires"].is_string(), "{check}");
    let events = events(&server).await;
    assert!(
        events.contains("certificate for shop.example.net issued"),
        "{events}"
    );

    // A domain added --tls internal, and every name of an app with
    // tls = "internal": berth's own CA, never asked of the ACME CA.
    server
        .ok(&[
            "domains",
            "add",
            "lan.example.org",
            "--tls",
            "internal",
            "--app",
            "shop",
        ])
        .await;
    let _intranet =
        crate::support::deploy_plain(&server, "intranet", "[http_service]\ntls = \"internal\"\n")
            .await;
    for name in ["lan.example.org", "intranet.example.net", "shop.localhost"] {
        let answer = served_with(https, name, &berth_root, &server).await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.body);
    }
    let check = server
        .ok(&["domains", "check", "lan.example.org"])
        .await
        .stdout;
    assert!(check.contains("berth's own CA (tls internal)"), "{check}");
    let listed = server.ok(&["domains", "list"]).await.stdout;
    assert!(
        listed
            .lines()
            .any(|line| line.contains("lan.example.org") && line.contains("internal")),
        "{listed}"
    );
    let asked = pebble.log();
    assert!(
        asked.contains("shop.example.net"),
        "the CA logs names:\n{asked}"
    );
    for name in ["lan.example.org", "intranet.example.net", "shop.localhost"] {
        assert!(
            !asked.contains(name),
            "{name} was asked of the CA:\n{asked}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_ca_wants_replaced_is_renewed_early() {
    setup();
    let plan = PebblePlan::new();
    let mut server = server_for(&plan).await;
    let https = server.https.expect("HTTPS");
    let pebble = plan.start(server.router.port(), https.port()).await;
    let ca_root = pebble.issuing_root().await;
    let _dir = deploy_shop(&server, "ari.example.org").await;
    let first = served_with(https, "ari.example.org", &ca_root, &server)
        .await
        .certificate;

    // The CA revokes it; its renewal information (RFC 9773) then puts the
    // window in the past. pebble's certificates last years: without the
    // window berth would not renew for a long time.
    let account_dir = server.data_dir().join("tls/acme");
    let account = std::fs::read_dir(&account_dir)
        .unwrap()
        .filter_map(Result::ok)
        .find(|entry| entry.file_name().to_string_lossy().starts_with("account-"))
        .expect("berth's ACME account");
    pebble
        .revoke(&std::fs::read_to_string(account.path()).unwrap(), &first)
        .await;
    // The window is asked for at start (and when the CA's Retry-After says).
    server.restart().await;
    let https = server.https.expect("HTTPS");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = served_with(https, "ari.example.org", &ca_root, &server).await;
        if answer.certificate != first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not renewed early:\n{}\n{}",
            server.server_log(),
            pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = events(&server).await;
    assert!(
        events.contains(
            "certificate for ari.example.org renewed early (the CA's renewal window ends"
        ),
        "{events}"
    );
    // The new certificate's window is asked for too, and shown.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let check = server
            .ok(&["domains", "check", "ari.example.org", "--json"])
            .await
            .json();
        let renews = check["renews"].as_str().unwrap_or_default().to_string();
        if renews.contains("in the CA's renewal window") {
            break;
        }
        assert!(Instant::now() < deadline, "{check}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
