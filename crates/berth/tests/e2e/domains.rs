//! End to end: custom domains. The router serves a domain for the app it
//! was given to, by `berth domains add` or `[http_service] domains`; a
//! name another app has, or one that is not a domain, is refused.

use crate::support::deploy_plain;
use berth_testkit::{TestServer, http_get};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// The status and body the router gives a request for `host`.
async fn through_router(server: &TestServer, host: &str) -> (u16, String) {
    let answer = http_get(server.router, host, "/").await.unwrap();
    (answer.status, answer.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_a_domain_for_the_app_that_has_it() {
    setup();
    let server = TestServer::start().await;
    deploy_plain(&server, "shop", "").await;
    let blog_dir = deploy_plain(
        &server,
        "blog",
        "[http_service]\ndomains = [\"Blog.Example.org\"]\n",
    )
    .await;

    // Unknown until added.
    let (status, _) = through_router(&server, "www.example.org").await;
    assert_eq!(status, 404);
    server
        .ok(&["domains", "add", "www.example.org", "--app", "shop"])
        .await;
    let (status, body) = through_router(&server, "WWW.example.org:443").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("plain says hi"), "{body}");
    // From the spec, kept lowercase.
    let (status, _) = through_router(&server, "blog.example.org").await;
    assert_eq!(status, 200);

    let listed = server.ok(&["domains", "list", "--json"]).await.json();
    let rows: Vec<(String, String, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["name"].as_str().unwrap().to_string(),
                row["app"].as_str().unwrap().to_string(),
                row["from_spec"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("blog.example.org".into(), "blog".into(), true),
            ("www.example.org".into(), "shop".into(), false),
        ]
    );
    let events = server.ok(&["events", "--app", "shop"]).await.stdout;
    assert!(events.contains("domain www.example.org added"), "{events}");

    // A name another app has, and names that are not domains.
    let taken = server
        .fails(&["domains", "add", "www.example.org", "--app", "blog"])
        .await;
    assert!(
        taken.stderr.contains("belongs to app `shop`"),
        "{}",
        taken.stderr
    );
    for bad in [
        "not a domain",
        "*.example.org",
        "127.0.0.1",
        "shop.localhost",
    ] {
        let refused = server
            .fails(&["domains", "add", bad, "--app", "shop"])
            .await;
        assert!(
            refused.stderr.contains("is not a domain berth can serve"),
            "{bad}: {}",
            refused.stderr
        );
    }
    // A deploy naming another app's domain fails before the build, and the
    // release that serves goes on serving.
    std::fs::write(
        blog_dir.path().join("berth.toml"),
        "app = \"blog\"\n[http_service]\ndomains = [\"blog.example.org\", \"www.example.org\"]\n",
    )
    .unwrap();
    let failed = server.fails_in(blog_dir.path(), &["up"]).await;
    assert!(
        failed
            .stderr
            .contains("`www.example.org` belongs to app `shop`"),
        "{}",
        failed.stderr
    );
    assert_eq!(through_router(&server, "blog.example.org").await.0, 200);
    // A bad one in berth.toml is shown where it is.
    std::fs::write(
        blog_dir.path().join("berth.toml"),
        "app = \"blog\"\n[http_service]\ndomains = [\"blog..example.org\"]\n",
    )
    .unwrap();
    let failed = server.fails_in(blog_dir.path(), &["up"]).await;
    assert!(
        failed
            .stderr
            .contains("berth.toml:3:12: [http_service] domains:"),
        "{}",
        failed.stderr
    );

    // Removed, it is unknown again.
    server
        .ok(&["domains", "remove", "www.example.org", "--app", "shop"])
        .await;
    let (status, _) = through_router(&server, "www.example.org").await;
    assert_eq!(status, 404);
    let missing = server
        .fails(&["domains", "remove", "www.example.org", "--app", "shop"])
        .await;
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_own_name_under_the_suffix_is_never_another_apps_domain() {
    setup();
    let server = TestServer::start_with(&["--domain", "apps.example.com"]).await;
    deploy_plain(&server, "shop", "").await;
    deploy_plain(&server, "evil", "").await;
    // shop.apps.example.com is shop's: evil cannot take it as a domain…
    let taken = server
        .fails(&["domains", "add", "shop.apps.example.com", "--app", "evil"])
        .await;
    assert!(
        taken.stderr.contains("where app `shop` is served"),
        "{}",
        taken.stderr
    );
    // …nor by its spec.
    let dir = berth_testkit::example("plain");
    std::fs::write(
        dir.path().join("berth.toml"),
        "app = \"evil\"\n[http_service]\ndomains = [\"shop.apps.example.com\"]\n",
    )
    .unwrap();
    let refused = server.fails_in(dir.path(), &["up"]).await;
    assert!(
        refused.stderr.contains("where app `shop` is served"),
        "{}",
        refused.stderr
    );
    let (status, body) = through_router(&server, "shop.apps.example.com").await;
    assert_eq!(status, 200, "{body}");
    // A domain that holds the name a new app would be served at: the app
    // is not made.
    server
        .ok(&["domains", "add", "blog.apps.example.com", "--app", "evil"])
        .await;
    let held = server.fails(&["apps", "create", "blog"]).await;
    assert!(
        held.stderr.contains("is a domain of app `evil`"),
        "{}",
        held.stderr
    );
}
