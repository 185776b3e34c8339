//! End to end: the dashboard in a real browser. Debian's Chromium,
//! headless, driven through chromedriver (WebDriver) from this test: it is
//! sent to sign in without a session, signs in with the token, sees the
//! app, scales it to two from the form and sees two instances, follows a
//! line the app prints live, and rolls back from the releases table. A
//! screenshot of each page is written under `target/dashboard/`. Forms
//! without the session's CSRF token, and requests without a session, are
//! refused.

use std::path::PathBuf;
use std::time::Duration;

use berth_testkit::TestServer;
use fantoccini::{Client, ClientBuilder, Locator};

use crate::support::deploy_plain;

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// A headless Chromium under chromedriver, gone with it.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

impl Browser {
    async fn start() -> Browser {
        let chromium = ["chromium", "chromium-browser"]
            .iter()
            .flat_map(|name| {
                std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                    .map(move |dir| dir.join(name))
                    .collect::<Vec<_>>()
            })
            .find(|path| path.is_file())
            .expect("Chromium (.ci/run installs Debian's chromium)");
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1600",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        // The port is free when picked; another test may take it before
        // chromedriver binds it: then it exits, and another port is tried.
        for _ in 0..5 {
            let [port] = berth_testkit::free_ports::<1>();
            let mut driver = tokio::process::Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("chromedriver (.ci/run installs chromium-driver)");
            for _ in 0..100 {
                if driver.try_wait().unwrap().is_some() {
                    break;
                }
                let connected = ClientBuilder::new(connector.clone())
                    .capabilities(capabilities.clone())
                    .connect(&format!("http://127.0.0.1:{port}"))
                    .await;
                if let Ok(client) = connected {
                    let shots =
                        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard");
                    std::fs::create_dir_all(&shots).unwrap();
                    return Browser {
                        client,
                        _driver: driver,
                        _profile: profile,
                        shots,
                    };
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("no Chromium session from chromedriver");
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_string()
    }

    /// Waits until `check` finds the page as wanted (up to 60 s).
    async fn until(&self, what: &str, check: impl AsyncFn(&Client) -> bool) {
        for _ in 0..600 {
            if check(&self.client).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let source = self.client.source().await.unwrap_or_default();
        panic!("the page never showed {what}:\n{source}");
    }
}

async fn count(client: &Client, css: &str) -> usize {
    client
        .find_all(Locator::Css(css))
        .await
        .map_or(0, |found| found.len())
}

async fn page_has(client: &Client, text: &str) -> bool {
    client
        .source()
        .await
        .is_ok_and(|source| source.contains(text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_scales_follows_logs_and_rolls_back() {
    setup();
    let server = TestServer::start().await;
    let _app = deploy_plain(&server, "shop", "").await;
    // A second release, to roll back from.
    server
        .ok(&["env", "set", "GREETING=hello", "--app", "shop"])
        .await;
    let browser = Browser::start().await;
    let ui = format!("{}/ui", server.api_url);

    // Without a session: sent to sign in.
    browser
        .client
        .goto(&format!("{ui}/apps/shop"))
        .await
        .unwrap();
    assert_eq!(browser.path().await, "/ui/login");
    browser.screenshot("login").await;
    // A wrong token is refused.
    let field = browser.client.find(Locator::Id("token")).await.unwrap();
    field.send_keys("not-the-token").await.unwrap();
    browser
        .client
        .find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .until("the refusal", async |client| {
            page_has(client, "not this server").await
        })
        .await;

    let field = browser.client.find(Locator::Id("token")).await.unwrap();
    field.send_keys(&server.token).await.unwrap();
    browser
        .client
        .find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .until("the app in the list", async |client| {
            page_has(client, "href=\"/ui/apps/shop\"").await
        })
        .await;
    assert_eq!(browser.path().await, "/ui");
    browser.screenshot("apps").await;

    browser
        .client
        .find(Locator::LinkText("shop"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(browser.path().await, "/ui/apps/shop");
    browser
        .until("one instance", async |client| {
            count(client, "tr.instance").await == 1
        })
        .await;
    browser.screenshot("app").await;
    // This month's usage, priced on every shipped provider's plans.
    assert_eq!(count(&browser.client, "#cost tbody tr").await, 5);
    assert!(page_has(&browser.client, "Google Cloud Run, request-based").await);
    assert!(page_has(&browser.client, "Fly.io Machines").await);
    assert!(page_has(&browser.client, "instance-hours").await);
    // Charts of traffic, CPU and memory.
    for caption in ["requests", "p99 latency", "CPU", "memory"] {
        assert!(
            page_has(
                &browser.client,
                &format!("<figcaption>{caption}</figcaption>")
            )
            .await,
            "{caption}"
        );
    }

    // Scale to two from the form; the instances table (htmx) shows both.
    let count_field = browser.client.find(Locator::Id("scale-web")).await.unwrap();
    count_field.clear().await.unwrap();
    count_field.send_keys("2").await.unwrap();
    browser
        .client
        .find(Locator::Id("scale-web-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(browser.path().await, "/ui/apps/shop");
    browser
        .until("two passing instances", async |client| {
            count(client, "tr.instance td.ok").await == 2
        })
        .await;
    browser.screenshot("scaled").await;
    if berth_runtime::can_isolate() {
        // Each instance's memory, from its cgroup.
        assert!(page_has(&browser.client, " MiB</td>").await);
    }

    // Live logs: a line the app prints shows up on the open page.
    browser
        .until("the live log stream open", async |client| {
            count(client, "#live-logs[data-state=\"open\"]").await == 1
        })
        .await;
    server
        .ok(&[
            "run",
            "--no-tty",
            "--app",
            "shop",
            "--",
            "echo",
            "seen-live-in-the-browser",
        ])
        .await;
    browser
        .until("the live line", async |client| {
            page_has(client, "seen-live-in-the-browser").await
        })
        .await;
    browser.screenshot("live-logs").await;

    // Roll back to v1 from the releases table.
    browser
        .client
        .find(Locator::Id("rollback-1"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let mut releases = serde_json::Value::Null;
    for _ in 0..600 {
        releases = server
            .ok(&["releases", "--app", "shop", "--json"])
            .await
            .json();
        let active = releases
            .as_array()
            .unwrap()
            .iter()
            .find(|release| release["status"] == "active")
            .cloned();
        if active.is_some_and(|release| release["version"].as_u64() > Some(2)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let newest = &releases.as_array().unwrap()[0];
    assert_eq!(newest["status"], "active", "{releases}");
    assert!(
        newest["cause"].as_str().unwrap().contains("v1"),
        "{releases}"
    );
    browser.client.refresh().await.unwrap();
    browser.screenshot("rolled-back").await;

    // The session cookie, as the browser holds it.
    let cookie = browser
        .client
        .get_named_cookie("berth_session")
        .await
        .unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(
        cookie.same_site().map(|same_site| same_site.to_string()),
        Some("Strict".to_string())
    );
    let session = format!("berth_session={}", cookie.value());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // A form posted from elsewhere, with the cookie but no CSRF token.
    let forged = http
        .post(format!("{ui}/apps/shop/scale"))
        .header("cookie", &session)
        .header("origin", "http://evil.example")
        .form(&[("process", "web"), ("count", "0")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let wrong = http
        .post(format!("{ui}/apps/shop/scale"))
        .header("cookie", &session)
        .form(&[("process", "web"), ("count", "0"), ("csrf", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    // No session: pages send to sign-in, the rest is refused.
    let page = http.get(format!("{ui}/apps/shop")).send().await.unwrap();
    assert_eq!(page.status(), 303);
    let post = http
        .post(format!("{ui}/apps/shop/scale"))
        .form(&[("process", "web"), ("count", "0")])
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 401);
    // Every page says what may run in it.
    let login = http.get(format!("{ui}/login")).send().await.unwrap();
    let policy = login.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    // Nothing was scaled down by the refused forms.
    let status = server
        .ok(&["status", "--app", "shop", "--json"])
        .await
        .json();
    assert_eq!(status["processes"][0]["desired"], 2, "{status}");
    browser.client.close().await.unwrap();
}
