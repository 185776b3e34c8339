//! End to end: autoscaling on load, scale to zero and back, with a real
//! server, examples/hello built by real cargo, and load from a bounded
//! generator on loopback.

use std::time::{Duration, Instant};

use berth_testkit::{Load, TestServer, example};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// examples/hello with `http_service` set to `scaling` (TOML lines).
async fn deploy_hello_with(server: &TestServer, scaling: &str) -> tempfile::TempDir {
    let app = example("hello");
    std::fs::write(
        app.path().join("berth.toml"),
        format!("app = \"hello\"\n\n[http_service]\n{scaling}\n"),
    )
    .unwrap();
    server.ok_in(app.path(), &["up"]).await;
    app
}

async fn events(server: &TestServer, app: &str) -> Vec<(String, String)> {
    let (code, events) = server
        .api_get(&format!("/v1/apps/{app}/events?limit=1000"))
        .await;
    assert_eq!(code, 200);
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            (
                event["kind"].as_str().unwrap().to_string(),
                event["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn web(status: &serde_json::Value) -> &serde_json::Value {
    status["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|group| group["name"] == "web")
        .expect("a web group")
}

fn running(status: &serde_json::Value) -> u64 {
    web(status)["running"].as_u64().unwrap()
}

fn desired(status: &serde_json::Value) -> u64 {
    web(status)["desired"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_scales_out_to_the_maximum_and_back_in_never_below_the_minimum() {
    setup();
    let server = TestServer::start().await;
    deploy_hello_with(
        &server,
        "auto_stop_machines = true\nmin_machines_running = 1\nmax_machines_running = 3\n\
         idle_timeout = \"1s\"\nscale_in_delay = \"1s\"\n\
         [http_service.concurrency]\nsoft_limit = 2\nhard_limit = 4\n",
    )
    .await;
    let status = server.status("hello").await;
    assert_eq!(running(&status), 1);
    assert_eq!(web(&status)["autoscaled"], true);
    assert_eq!(
        (web(&status)["min"].as_u64(), web(&status)["max"].as_u64()),
        (Some(1), Some(3))
    );

    // 8 clients of a 300 ms endpoint keep ~8 requests in flight: 4 instances'
    // worth at a soft limit of 2, so the group grows to its maximum of 3.
    let load = Load::start(server.router, "hello", "/slow?ms=300", 8);
    let status = server
        .wait_for_status("hello", Duration::from_secs(30), |status| {
            running(status) == 3
        })
        .await;
    assert_eq!(desired(&status), 3);
    assert!(
        web(&status)["why"].as_str().unwrap().contains("load"),
        "{status:#}"
    );
    // Instances start in milliseconds: keep the load on the grown group a
    // while, so it is served by all three, not only during the growth.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.finish().await;
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    assert!(report.ok > 10, "{report:?}");

    // Load gone: back in, down to the minimum and no lower.
    server
        .wait_for_status("hello", Duration::from_secs(30), |status| {
            desired(status) == 1
        })
        .await;
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        let status = server.status("hello").await;
        assert_eq!(desired(&status), 1, "min 1 undercut: {status:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let events = events(&server, "hello").await;
    assert!(
        events
            .iter()
            .any(|(kind, message)| kind == "scale.out" && message.contains("soft limit 2")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|(kind, _)| kind == "scale.in"),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|(kind, _)| kind == "scale.to_zero"),
        "{events:?}"
    );
    let shown = server.ok(&["events", "--app", "hello"]).await.stdout;
    assert!(shown.contains("scale.out"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_app_scales_to_zero_and_fifty_requests_wake_exactly_one_instance() {
    setup();
    let server = TestServer::start().await;
    deploy_hello_with(
        &server,
        "auto_stop_machines = \"stop\"\nauto_start_machines = true\nmin_machines_running = 0\n\
         idle_timeout = \"2s\"\n",
    )
    .await;
    assert_eq!(server.get("hello", "/").await.status, 200);
    let status = server
        .wait_for_status("hello", Duration::from_secs(20), |status| {
            running(status) == 0 && status["instances"].as_array().unwrap().is_empty()
        })
        .await;
    assert!(
        web(&status)["why"].as_str().unwrap().contains("idle"),
        "{status:#}"
    );
    let shown = server.ok(&["status", "--app", "hello"]).await.stdout;
    assert!(shown.contains("no request for 2s"), "{shown}");
    let started_before = events(&server, "hello")
        .await
        .iter()
        .filter(|(kind, _)| kind == "instance.started")
        .count();

    // 50 at once, to an app with no instance: all held, all answered by one.
    let router = server.router;
    let requests: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn(async move {
                berth_testkit::http_get(router, "hello.localhost", "/instance")
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut instances = std::collections::BTreeSet::new();
    for request in requests {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        instances.insert(answer.body);
    }
    assert_eq!(instances.len(), 1, "{instances:?}");
    // Events are stored just after the pass that made them: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (events, started_after) = loop {
        let events = events(&server, "hello").await;
        let started = events
            .iter()
            .filter(|(kind, _)| kind == "instance.started")
            .count();
        if started > started_before || std::time::Instant::now() > deadline {
            break (events, started);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(started_after - started_before, 1, "{events:?}");
    assert!(
        events.iter().any(|(kind, _)| kind == "scale.to_zero"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|(kind, _)| kind == "scale.from_zero"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_from_zero_that_fails_answers_503_and_status_says_why() {
    setup();
    let server = TestServer::start().await;
    deploy_hello_with(
        &server,
        "auto_stop_machines = true\nmin_machines_running = 0\nidle_timeout = \"1s\"\n",
    )
    .await;
    server
        .wait_for_status("hello", Duration::from_secs(20), |status| {
            running(status) == 0
        })
        .await;
    // Break the release behind berth's back: its slug disappears.
    let slugs = server.data_dir().join("slugs");
    for entry in std::fs::read_dir(&slugs).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        }
    }
    let answer = server.get("hello", "/").await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(answer.body.contains("could not start"), "{}", answer.body);
    assert!(answer.body.contains("slug"), "{}", answer.body);
    let shown = server.ok(&["status", "--app", "hello"]).await.stdout;
    assert!(
        shown.contains("crash-loop") && shown.contains("slug"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_sets_bounds_and_refuses_bad_ones() {
    setup();
    let server = TestServer::start().await;
    deploy_hello_with(
        &server,
        "auto_stop_machines = true\nmin_machines_running = 1\n",
    )
    .await;
    let err = server
        .fails(&["scale", "--min", "3", "--max", "2", "--app", "hello"])
        .await;
    assert!(
        err.stderr.contains("--min 3 is above --max 2"),
        "{}",
        err.stderr
    );
    let err = server.fails(&["scale", "--app", "hello"]).await;
    assert!(err.stderr.contains("--min/--max"), "{}", err.stderr);
    server
        .ok(&["scale", "--min", "2", "--max", "4", "--app", "hello"])
        .await;
    let status = server
        .wait_for_status("hello", Duration::from_secs(20), |status| {
            running(status) == 2
        })
        .await;
    assert_eq!(
        (web(&status)["min"].as_u64(), web(&status)["max"].as_u64()),
        (Some(2), Some(4))
    );
    assert!(
        web(&status)["why"]
            .as_str()
            .unwrap()
            .contains("minimum of 2"),
        "{status:#}"
    );
}
