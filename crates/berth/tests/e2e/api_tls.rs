//! End to end: the API over TLS. `berth login` pins the server's CA on
//! first contact and keeps the context; later commands use it; a server
//! whose certificate changed is refused with the reason.

use berth_testkit::TestServer;

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_pins_the_servers_certificate_and_a_changed_one_is_refused() {
    setup();
    let mut server = TestServer::start_with(&["--api-tls"]).await;
    assert!(server.api_url.starts_with("https://"), "{}", server.api_url);
    // The local CLI trusts its own server's CA from the data dir.
    server.ok(&["apps", "create", "shop"]).await;

    let home = tempfile::tempdir().unwrap();
    let url = server.api_url.clone();
    let token = server.token.clone();
    let login = server
        .berth_at_home(
            home.path(),
            &["login", &url, "--token", &token, "--name", "prod"],
        )
        .run()
        .await
        .success();
    assert!(
        login.stderr.contains("SHA-256 fingerprint"),
        "{}",
        login.stderr
    );
    let context = home.path().join(".config/berth/contexts/prod.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&context).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the context holds the token");
    let listed = server
        .berth_at_home(home.path(), &["--context", "prod", "apps", "--json"])
        .run()
        .await
        .success();
    assert!(listed.stdout.contains("\"shop\""), "{}", listed.stdout);

    // A wrong token is refused at login, and nothing is kept.
    let refused = server
        .berth_at_home(
            home.path(),
            &["login", &url, "--token", "nope", "--name", "bad"],
        )
        .run()
        .await
        .failure();
    assert!(
        refused.stderr.contains("cannot log in"),
        "{}",
        refused.stderr
    );
    assert!(!home.path().join(".config/berth/contexts/bad.json").exists());

    // The server gets a new CA (reinstalled, or someone in between): refused.
    server.kill9().await;
    std::fs::remove_dir_all(server.data_dir().join("tls")).unwrap();
    server.restart().await;
    let changed = server
        .berth_at_home(home.path(), &["--context", "prod", "apps"])
        .run()
        .await
        .failure();
    assert!(
        changed
            .stderr
            .contains("no longer presents the certificate pinned when you logged in"),
        "{}",
        changed.stderr
    );
    // Logging in again does not quietly pin the new CA: both fingerprints
    // are shown and nothing is sent.
    let again = server
        .berth_at_home(
            home.path(),
            &["login", &url, "--token", &token, "--name", "prod"],
        )
        .run()
        .await
        .failure();
    assert!(
        again.stderr.contains("pinned a CA") && again.stderr.contains("Nothing was sent"),
        "{}",
        again.stderr
    );
    // The new CA's fingerprint, read on the server, is what lets it in.
    let root = server.ok(&["certs", "root"]).await;
    let fingerprint = root
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("SHA-256 fingerprint: "))
        .unwrap_or_else(|| panic!("{}", root.stderr))
        .to_string();
    assert!(
        root.stdout.starts_with("-----BEGIN CERTIFICATE-----"),
        "{}",
        root.stdout
    );
    let with_pin = |fingerprint: String| {
        let (home, url, token) = (home.path(), url.clone(), token.clone());
        let server = &server;
        async move {
            server
                .berth_at_home(
                    home,
                    &[
                        "login",
                        &url,
                        "--token",
                        &token,
                        "--name",
                        "prod",
                        "--replace-pin",
                        "--fingerprint",
                        &fingerprint,
                    ],
                )
                .run()
                .await
        }
    };
    let mismatched = with_pin("00".repeat(32)).await.failure();
    assert!(
        mismatched.stderr.contains("nothing was sent"),
        "{}",
        mismatched.stderr
    );
    with_pin(fingerprint.to_lowercase()).await.success();
    let listed = server
        .berth_at_home(home.path(), &["--context", "prod", "apps", "--json"])
        .run()
        .await
        .success();
    assert!(listed.stdout.contains("\"shop\""), "{}", listed.stdout);
    // Plain --server to an https API says to log in first.
    let plain = server
        .berth_at_home(home.path(), &["--server", &url, "--token", &token, "apps"])
        .run()
        .await
        .failure();
    assert!(plain.stderr.contains("berth login"), "{}", plain.stderr);
}
