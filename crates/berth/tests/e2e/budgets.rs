//! End to end: usage, cost and budgets that act. A test price table makes
//! each request cost a tenth of a cent, so a budget of a few cents is
//! crossed by a bounded number of requests: the 50% and 80% alerts reach a
//! webhook on loopback (signature checked), the app is scaled to zero soon
//! after 100% and answers with the budget page, its PostgreSQL rows are
//! intact, and `berth budget resume` brings it back. `berth usage` counts
//! exactly what was sent. Cap and throttle act as named; bad input gets
//! clear errors.

use std::time::{Duration, Instant};

use berth_testkit::{HttpSink, Received, TestServer, example};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::support::deploy_plain;

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// A price table where a request costs $0.001 and nothing else costs.
const TEST_PRICES: &str = r#"provider = "test"
title = "Test prices"
valid_from = "2026-12-01"
source = "the budgets test"

[[plans]]
name = "requests"
title = "A tenth of a cent a request"
billed_time = "instance"
usd_per_million_requests = 1000
"#;

fn price_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("test.toml"), TEST_PRICES).unwrap();
    dir
}

/// What the test sent through the router, to compare with `berth usage`.
#[derive(Default)]
struct Sent {
    requests: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Sent {
    async fn request(
        &mut self,
        server: &TestServer,
        app: &str,
        method: &str,
        path: &str,
        body: &str,
    ) -> berth_testkit::Answer {
        let answer = server.request(app, method, path, body).await;
        self.requests += 1;
        self.bytes_in += body.len() as u64;
        self.bytes_out += answer.body.len() as u64;
        answer
    }
}

/// Sums of `berth usage --app APP --by minute --json`: requests, bytes
/// in, bytes out, and the instance-seconds of group `process`.
async fn usage(server: &TestServer, app: &str, process: &str) -> (u64, u64, u64, f64) {
    let report = server
        .ok(&[
            "usage", "--app", app, "--by", "minute", "--since", "1d", "--json",
        ])
        .await
        .json();
    let mut sums = (0, 0, 0, 0.0);
    for row in report["rows"].as_array().unwrap() {
        sums.0 += row["requests"].as_u64().unwrap();
        sums.1 += row["bytes_in"].as_u64().unwrap();
        sums.2 += row["bytes_out"].as_u64().unwrap();
        if row["process"] == process {
            sums.3 += row["instance_seconds"].as_f64().unwrap();
        }
    }
    sums
}

/// Waits until usage stops changing across two meter flushes (2 s each).
async fn settled_usage(server: &TestServer, app: &str, process: &str) -> (u64, u64, u64, f64) {
    let mut last = usage(server, app, process).await;
    loop {
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        let now = usage(server, app, process).await;
        if (now.0, now.1, now.2) == (last.0, last.1, last.2) {
            return now;
        }
        last = now;
    }
}

/// The budget webhooks `sink` got, as JSON, with their signature checked
/// against `secret`.
fn alerts(sink: &HttpSink, secret: &str) -> Vec<serde_json::Value> {
    sink.received()
        .iter()
        .map(|request| verified(request, secret))
        .collect()
}

fn verified(request: &Received, secret: &str) -> serde_json::Value {
    let header = request
        .header("berth-signature")
        .expect("a signature header");
    let (timestamp, signature) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .expect("t=…,v1=…");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&request.body);
    mac.verify_slice(&hex::decode(signature).unwrap())
        .expect("the signature verifies with the webhook's secret");
    serde_json::from_slice(&request.body).unwrap()
}

/// Waits up to `seconds` for an alert of `event` at `threshold` (any when `None`).
async fn wait_alert(
    sink: &HttpSink,
    secret: &str,
    event: &str,
    threshold: Option<u64>,
    seconds: u64,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let found = alerts(sink, secret).into_iter().find(|alert| {
            alert["event"] == event
                && threshold.is_none_or(|at| alert["data"]["threshold"].as_u64() == Some(at))
        });
        if let Some(found) = found {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no {event} {threshold:?} within {seconds}s; got {:?}",
            alerts(sink, secret)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Instances of `app` now (from the API: polled often).
async fn instances(server: &TestServer, app: &str) -> Vec<serde_json::Value> {
    let (status, body) = server.api_get(&format!("/v1/apps/{app}")).await;
    assert_eq!(status, 200, "{body}");
    body["instances"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_alerts_scales_to_zero_keeps_data_and_resumes() {
    setup();
    let prices = price_dir();
    let server = TestServer::start_with(&[
        "--meter-interval",
        "2s",
        "--prices",
        prices.path().to_str().unwrap(),
    ])
    .await;
    let app = example("todo");
    server.ok_in(app.path(), &["up"]).await;

    // Alerts go to a receiver on loopback, and to one that never answers:
    // the action must not wait for it.
    let sink = HttpSink::start().await;
    let added = server
        .ok(&[
            "notify",
            "add",
            "webhook",
            &format!("http://{}/hook", sink.addr),
            "--events",
            "budget.*",
            "--json",
        ])
        .await
        .json();
    let secret = added["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    server
        .ok(&[
            "notify",
            "add",
            "webhook",
            &format!("http://{silent_addr}/hook"),
        ])
        .await;
    let listed = server.ok(&["notify", "list", "--json"]).await.json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(
        listed[0].get("secret").is_none(),
        "secrets are shown once: {listed}"
    );

    // What came before counts too: the budget is set on top of it.
    assert_eq!(
        server
            .request("todo", "POST", "/todos", "keep me")
            .await
            .status,
        201
    );
    let (before, in_before, out_before, _) = settled_usage(&server, "todo", "web").await;
    let mut sent = Sent::default();
    let total = before + 20;
    let budget = format!("{:.3}", total as f64 * 0.001);
    let set = server
        .ok(&[
            "budget",
            "set",
            "--app",
            "todo",
            "--monthly-usd",
            &budget,
            "--on-exceed",
            "scale-to-zero",
            "--price-as",
            "test",
            "--json",
        ])
        .await
        .json();
    assert_eq!(set["source"], "berth budget set");
    assert!(set["hold"].is_null());
    let second = sent
        .request(&server, "todo", "POST", "/todos", "second row")
        .await;
    assert_eq!(second.status, 201);

    // Past half: the 50% alert, not yet the 80% one.
    while (before + sent.requests) * 2 <= total {
        assert_eq!(
            sent.request(&server, "todo", "GET", "/todos", "")
                .await
                .status,
            200
        );
    }
    let half = wait_alert(&sink, &secret, "budget.alert", Some(50), 30).await;
    assert_eq!(half["app"], "todo");
    assert!(half["data"]["spent_usd"].as_f64().unwrap() > 0.0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        alerts(&sink, &secret)
            .iter()
            .all(|alert| alert["data"]["threshold"] != 80)
    );
    while (before + sent.requests) * 10 <= total * 8 {
        sent.request(&server, "todo", "GET", "/todos", "").await;
    }
    wait_alert(&sink, &secret, "budget.alert", Some(80), 30).await;

    // Past 100%: scaled to zero soon after the meter sees it.
    let uptime_before = instances(&server, "todo").await[0]["uptime_ms"]
        .as_u64()
        .unwrap() as f64
        / 1000.0;
    let checked_at = Instant::now();
    while before + sent.requests <= total {
        sent.request(&server, "todo", "GET", "/todos", "").await;
    }
    let crossed = Instant::now();
    // It stopped between the last look that saw it and the first that did
    // not (each an API round trip, slower on a busy machine).
    let mut last_seen_running = Instant::now();
    loop {
        if instances(&server, "todo").await.is_empty() {
            break;
        }
        last_seen_running = Instant::now();
        assert!(
            crossed.elapsed() < Duration::from_secs(60),
            "still running 60 s after crossing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped_after = crossed.elapsed();
    let ran_at_least = uptime_before + (last_seen_running - checked_at).as_secs_f64();
    let ran_at_most = uptime_before + checked_at.elapsed().as_secs_f64();
    eprintln!("last request over the budget to its last instance stopped: {stopped_after:?}");
    // The alert arrives although another webhook never answers.
    let exceeded = wait_alert(&sink, &secret, "budget.exceeded", None, 30).await;
    assert_eq!(exceeded["data"]["actions"]["*"], "scale-to-zero");
    let page = sent.request(&server, "todo", "GET", "/todos", "").await;
    assert_eq!(page.status, 503, "{}", page.body);
    assert!(page.body.contains("budget was reached"), "{}", page.body);
    let shown = server.ok(&["budget", "show", "--app", "todo"]).await.stdout;
    assert!(shown.contains("in force: *: scale-to-zero"), "{shown}");
    let events = server.ok(&["events", "--app", "todo"]).await.stdout;
    assert!(events.contains("budget.exceeded"), "{events}");

    // Usage is exactly what was sent, the instance's time within a second
    // of its run (from its start to its exit, as the reconciler saw them).
    let (requests, bytes_in, bytes_out, web_seconds) = settled_usage(&server, "todo", "web").await;
    assert_eq!(
        requests - before,
        sent.requests,
        "requests after the baseline"
    );
    assert_eq!(bytes_in - in_before, sent.bytes_in, "request bytes");
    assert_eq!(bytes_out - out_before, sent.bytes_out, "answer bytes");
    eprintln!("metered {web_seconds:.2}s, ran {ran_at_least:.2}s to {ran_at_most:.2}s");
    assert!(
        web_seconds >= ran_at_least - 1.0 && web_seconds <= ran_at_most + 1.0,
        "metered {web_seconds:.2}s, ran {ran_at_least:.2}s to {ran_at_most:.2}s"
    );

    // Resumed: back at its scale, and the rows are where they were.
    let resumed = server
        .ok(&["budget", "resume", "--app", "todo", "--json"])
        .await
        .json();
    assert!(resumed["hold"].is_null(), "{resumed}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let answer = server.get("todo", "/todos").await;
        if answer.status == 200 {
            break answer.body;
        }
        assert!(
            Instant::now() < deadline,
            "not back: {} {}",
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(listed, "1\tkeep me\n2\tsecond row\n");
    wait_alert(&sink, &secret, "budget.resumed", None, 30).await;
    // Each threshold alerted once, and the action was taken once.
    let sent_alerts = alerts(&sink, &secret);
    for threshold in [50, 80, 100] {
        let count = sent_alerts
            .iter()
            .filter(|alert| {
                alert["event"] == "budget.alert" && alert["data"]["threshold"] == threshold
            })
            .count();
        assert_eq!(count, 1, "threshold {threshold}: {sent_alerts:?}");
    }
    let exceeded_count = sent_alerts
        .iter()
        .filter(|alert| alert["event"] == "budget.exceeded")
        .count();
    assert_eq!(exceeded_count, 1);
    let log = server.ok(&["notify", "log", "--json"]).await.json();
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|delivery| delivery["status"] == "delivered"),
        "{log}"
    );

    // The cost of this month, priced with the test table by the CLI.
    let cost = server
        .ok(&[
            "cost",
            "--app",
            "todo",
            "--prices",
            prices.path().to_str().unwrap(),
            "--json",
        ])
        .await
        .json();
    let test = cost["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|provider| provider["provider"] == "test")
        .unwrap()
        .clone();
    let (requests_now, ..) = usage(&server, "todo", "web").await;
    assert!(
        (test["total_usd"].as_f64().unwrap() - requests_now as f64 * 0.001).abs() < 1e-9,
        "{test}"
    );
    assert!(
        cost["providers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|provider| provider["provider"] == "fly")
    );
}

/// Waits until `app` runs `count` instances.
async fn wait_instances(server: &TestServer, app: &str, count: usize) {
    server
        .wait_for_status(app, Duration::from_secs(60), |status| {
            status["instances"]
                .as_array()
                .is_some_and(|all| all.len() == count)
        })
        .await;
}

/// Sets `app`'s budget to `requests` more than it made so far, acting with
/// `action` (and `extra` flags), priced with the test table.
async fn budget_past_now(
    server: &TestServer,
    app: &str,
    requests: u64,
    action: &str,
    extra: &[&str],
) {
    let (now, ..) = settled_usage(server, app, "web").await;
    let limit = (now + requests).to_string();
    let mut args = vec![
        "budget",
        "set",
        "--app",
        app,
        "--requests",
        &limit,
        "--on-exceed",
        action,
        "--price-as",
        "test",
    ];
    args.extend_from_slice(extra);
    server.ok(&args).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cap_and_throttle_act_as_named_and_bad_input_is_refused() {
    setup();
    let prices = price_dir();
    let server = TestServer::start_with(&[
        "--meter-interval",
        "2s",
        "--prices",
        prices.path().to_str().unwrap(),
    ])
    .await;
    let _app = deploy_plain(
        &server,
        "capped",
        "[budget]\nrequests = 1000000\nprice_as = \"test\"\non_exceed = \"cap\"\n",
    )
    .await;
    let shown = server
        .ok(&["budget", "show", "--app", "capped", "--json"])
        .await
        .json();
    assert_eq!(shown["source"], "berth.toml");
    server.ok(&["scale", "--app", "capped", "web=2"]).await;
    wait_instances(&server, "capped", 2).await;

    // Cap: one instance per group once crossed.
    budget_past_now(&server, "capped", 3, "cap", &[]).await;
    for _ in 0..4 {
        server.get("capped", "/").await;
    }
    wait_instances(&server, "capped", 1).await;
    server.ok(&["budget", "resume", "--app", "capped"]).await;
    wait_instances(&server, "capped", 2).await;

    // Throttle: a changed budget re-arms; past it, one request a second.
    budget_past_now(&server, "capped", 3, "throttle", &["--throttle-rps", "1"]).await;
    for _ in 0..4 {
        server.get("capped", "/").await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut limited = 0;
        for _ in 0..10 {
            if server.get("capped", "/").await.status == 429 {
                limited += 1;
            }
        }
        if limited >= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "never throttled");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        instances(&server, "capped").await.len(),
        2,
        "throttle stops nothing"
    );

    // Bad input.
    let negative = server
        .fails(&["budget", "set", "--app", "capped", "--monthly-usd", "-1"])
        .await;
    assert!(negative.stderr.contains("positive"), "{}", negative.stderr);
    let text = server
        .fails(&["budget", "set", "--app", "capped", "--monthly-usd", "ten"])
        .await;
    assert!(text.stderr.contains("ten"), "{}", text.stderr);
    let action = server
        .fails(&[
            "budget",
            "set",
            "--app",
            "capped",
            "--requests",
            "5",
            "--on-exceed",
            "explode",
        ])
        .await;
    assert!(action.stderr.contains("scale-to-zero"), "{}", action.stderr);
    let provider = server
        .fails(&[
            "budget",
            "set",
            "--app",
            "capped",
            "--requests",
            "5",
            "--price-as",
            "heroku",
        ])
        .await;
    assert!(
        provider.stderr.contains("unknown provider `heroku`"),
        "{}",
        provider.stderr
    );
    let unknown = server.fails(&["budget", "show", "--app", "nope"]).await;
    assert!(unknown.stderr.contains("nope"), "{}", unknown.stderr);
    let hook = server
        .fails(&["notify", "add", "webhook", "ftp://example.org/x"])
        .await;
    assert!(
        hook.stderr.contains("http:// or https://"),
        "{}",
        hook.stderr
    );
    let event = server
        .fails(&[
            "notify",
            "add",
            "webhook",
            "http://127.0.0.1:9/x",
            "--events",
            "budget.exploded",
        ])
        .await;
    assert!(
        event.stderr.contains("matches no event"),
        "{}",
        event.stderr
    );
    let bad_prices = tempfile::tempdir().unwrap();
    std::fs::write(
        bad_prices.path().join("bad.toml"),
        TEST_PRICES.replace(
            "usd_per_million_requests = 1000",
            "usd_per_million_requests = -3",
        ),
    )
    .unwrap();
    let cost = server
        .fails(&["cost", "--prices", bad_prices.path().to_str().unwrap()])
        .await;
    assert!(
        cost.stderr.contains("bad.toml:6:1") && cost.stderr.contains("-3"),
        "{}",
        cost.stderr
    );
    let month = server.fails(&["cost", "--month", "2026-13"]).await;
    assert!(month.stderr.contains("2026-13"), "{}", month.stderr);
    // A region Fly.io has no egress price for is said, not guessed.
    let far = server
        .ok(&["cost", "--region", "mars", "--json"])
        .await
        .json();
    let fly = far["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|provider| provider["provider"] == "fly")
        .unwrap()
        .clone();
    assert!(fly["notes"].to_string().contains("`mars`"), "{fly}");

    // A [budget] priced as a provider the server lacks fails the deploy,
    // and the failure reaches a webhook that asks for it.
    let sink = HttpSink::start().await;
    server
        .ok(&[
            "notify",
            "add",
            "webhook",
            &format!("http://{}/deploys", sink.addr),
            "--events",
            "deploy.failed",
        ])
        .await;
    let priced = example("plain");
    std::fs::write(
        priced.path().join("berth.toml"),
        "app = \"priced\"\n[budget]\nrequests = 5\nprice_as = \"heroku\"\n",
    )
    .unwrap();
    let failed = server.fails_in(priced.path(), &["up"]).await;
    assert!(
        failed.stderr.contains("price_as") && failed.stderr.contains("unknown provider `heroku`"),
        "{}",
        failed.stderr
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let told = sink.received().iter().any(|request| {
            request.header("berth-event") == Some("deploy.failed")
                && String::from_utf8_lossy(&request.body).contains("heroku")
        });
        if told {
            break;
        }
        assert!(Instant::now() < deadline, "no deploy.failed webhook");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
