//! End to end: a real `berth server`, the real CLI, real cargo builds of
//! examples/hello and examples/plain, real HTTP through the router.

use std::collections::BTreeSet;
use std::time::Duration;

use berth_testkit::{Load, TestServer, edit, example};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const V1: &str = "Hello from berth!\n";

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// Deploys a fresh copy of examples/hello with `berth up`; returns its folder.
async fn deploy_hello(server: &TestServer) -> tempfile::TempDir {
    let app = example("hello");
    let out = server.ok_in(app.path(), &["up"]).await;
    assert_eq!(
        out.stdout.trim(),
        format!("http://hello.localhost:{}", server.router.port())
    );
    app
}

fn running_ids(status: &serde_json::Value) -> Vec<String> {
    status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|instance| instance["state"] == "running")
        .map(|instance| instance["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_builds_deploys_and_serves_through_the_router() {
    setup();
    let server = TestServer::start().await;
    let app = example("hello");
    let out = server.ok_in(app.path(), &["up"]).await;
    assert!(
        out.stderr.contains("Finished `release` profile"),
        "build output streams to the CLI:\n{}",
        out.stderr
    );
    assert!(out.stderr.contains("zero config"), "{}", out.stderr);

    let answer = server.get("hello", "/").await;
    assert_eq!((answer.status, answer.body.as_str()), (200, V1));

    let status = server.status("hello").await;
    assert_eq!(status["release"]["version"], 1);
    assert_eq!(status["release"]["status"], "active");
    assert_eq!(status["processes"][0]["name"], "web");
    assert_eq!(status["processes"][0]["health"], "healthy");
    assert_eq!(running_ids(&status).len(), 1);

    // The contract variables reach the app.
    assert_eq!(server.get("hello", "/env/BERTH_APP").await.body, "hello");
    assert_eq!(server.get("hello", "/env/BERTH_RELEASE").await.body, "1");
    assert_eq!(server.get("hello", "/env/BERTH_PROCESS").await.body, "web");
    assert_eq!(
        server.get("hello", "/instance").await.body,
        running_ids(&status)[0]
    );

    // Its output is captured and parsed (the app prints one tracing-style JSON line).
    let logs = server
        .ok(&["logs", "--app", "hello", "--json", "--grep", "listening"])
        .await;
    let line: serde_json::Value =
        serde_json::from_str(logs.stdout.lines().next().expect("a log line")).unwrap();
    assert_eq!(line["level"], "info");
    assert_eq!(line["message"], "listening");
    assert_eq!(line["process"], "web");
    assert_eq!(line["release"], 1);

    let events = server.ok(&["events", "--app", "hello"]).await;
    assert!(
        events.stdout.contains("deploy.succeeded"),
        "{}",
        events.stdout
    );

    // Unknown apps and hosts get the router's own page.
    let missing = server.get("nope", "/").await;
    assert_eq!(missing.status, 404);
    assert!(
        missing
            .body
            .contains("no app for the host `nope.localhost`"),
        "{}",
        missing.body
    );

    // Running `up` again redeploys.
    server.ok_in(app.path(), &["up"]).await;
    assert_eq!(server.status("hello").await["release"]["version"], 2);

    // The API publishes its OpenAPI document.
    let (code, doc) = server.api_get("/v1/openapi.json").await;
    assert_eq!(code, 200);
    assert!(doc["paths"]["/v1/apps/{app}/deploy"].is_object(), "{doc:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_and_keep_alive_pass_through_the_router() {
    setup();
    let server = TestServer::start().await;
    let _app = deploy_hello(&server).await;

    let mut stream = tokio::net::TcpStream::connect(server.router).await.unwrap();
    // Two keep-alive requests on one connection.
    for _ in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: hello.localhost\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = vec![0u8; 1024];
        let read = stream.read(&mut buffer).await.unwrap();
        let text = String::from_utf8_lossy(&buffer[..read]);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with(V1), "{text}");
    }

    let mut ws = tokio::net::TcpStream::connect(server.router).await.unwrap();
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: hello.localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(ws.read_u8().await.unwrap());
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "the app's accept key comes back: {head}"
    );
    // A masked text frame "hi".
    let mask = [1u8, 2, 3, 4];
    let payload: Vec<u8> = b"hi"
        .iter()
        .enumerate()
        .map(|(i, byte)| byte ^ mask[i % 4])
        .collect();
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend_from_slice(&payload);
    ws.write_all(&frame).await.unwrap();
    let mut echoed = [0u8; 4];
    ws.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, [0x81, 2, b'h', b'i']);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeploy_under_load_fails_no_request() {
    setup();
    let server = TestServer::start().await;
    let app = deploy_hello(&server).await;
    server.ok(&["scale", "web=2", "--app", "hello"]).await;
    server
        .wait_for_status("hello", Duration::from_secs(10), |status| {
            running_ids(status).len() == 2
        })
        .await;

    let load = Load::start(server.router, "hello", "/", 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    edit(
        &app.path().join("src/main.rs"),
        "Hello from berth!",
        "Hello again, berth!",
    );
    let out = server.ok_in(app.path(), &["deploy"]).await;
    assert!(out.stderr.contains("v2 is live"), "{}", out.stderr);
    // Keep loading while the old instances drain and stop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = load.finish().await;

    assert_eq!(
        report.failed, 0,
        "failed requests during a rolling deploy: {:?}",
        report.failures
    );
    assert!(report.ok > 100, "the load generator ran: {report:?}");
    assert!(report.bodies.contains_key(V1), "{:?}", report.bodies);
    assert!(
        report.bodies.contains_key("Hello again, berth!\n"),
        "{:?}",
        report.bodies
    );
    assert_eq!(server.get("hello", "/").await.body, "Hello again, berth!\n");
    let status = server
        .wait_for_status("hello", Duration::from_secs(10), |status| {
            status["instances"].as_array().unwrap().len() == 2
        })
        .await;
    assert!(
        status["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|instance| instance["release"] == 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_the_old_response_without_a_build() {
    setup();
    let server = TestServer::start().await;
    let app = deploy_hello(&server).await;
    edit(
        &app.path().join("src/main.rs"),
        "Hello from berth!",
        "Hello v2!",
    );
    server.ok_in(app.path(), &["deploy"]).await;
    assert_eq!(server.get("hello", "/").await.body, "Hello v2!\n");

    let out = server.ok(&["rollback", "--app", "hello"]).await;
    assert!(
        out.stderr.contains("rolling back to v1 (no build)"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("Compiling") && !out.stderr.contains("cargo build"),
        "{}",
        out.stderr
    );
    assert_eq!(server.get("hello", "/").await.body, V1);

    let releases = server
        .ok(&["releases", "--app", "hello", "--json"])
        .await
        .json();
    let releases = releases.as_array().unwrap();
    assert_eq!(releases[0]["version"], 3);
    assert_eq!(releases[0]["cause"], "rollback to v1");
    assert_eq!(releases[0]["status"], "active");
    assert_eq!(
        releases[0]["slug"], releases[2]["slug"],
        "v3 runs v1's slug"
    );
    // Rolling back to a version that does not exist is an error that says so.
    let out = server.fails(&["rollback", "9", "--app", "hello"]).await;
    assert!(out.stderr.contains("no release v9"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_error_fails_the_deploy_and_the_old_release_keeps_serving() {
    setup();
    let server = TestServer::start().await;
    let app = deploy_hello(&server).await;
    edit(
        &app.path().join("src/main.rs"),
        "async fn root() -> String {",
        "fn broken() -> u32 { \"not a number\" }\n\nasync fn root() -> String {",
    );
    let out = server.fails_in(app.path(), &["deploy"]).await;
    assert!(out.stderr.contains("cargo build failed"), "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("error[E0308]: mismatched types").count(),
        1,
        "the compiler's message is shown, once:\n{}",
        out.stderr
    );
    assert_eq!(server.get("hello", "/").await.body, V1);
    let releases = server
        .ok(&["releases", "--app", "hello", "--json"])
        .await
        .json();
    assert_eq!(
        releases.as_array().unwrap().len(),
        1,
        "a failed build makes no release"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_on_start_fails_the_deploy_and_the_old_release_keeps_serving() {
    setup();
    let server = TestServer::start().await;
    let app = deploy_hello(&server).await;
    std::fs::write(
        app.path().join("berth.toml"),
        "[env]\nHELLO_CRASH_ON_START = \"1\"\n",
    )
    .unwrap();
    let out = server.fails_in(app.path(), &["deploy"]).await;
    assert!(out.stderr.contains("v2 failed"), "{}", out.stderr);
    assert!(
        out.stderr.contains("exited during start-up: exit code 1"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("v1 keeps serving"), "{}", out.stderr);
    assert!(
        out.stderr.contains("HELLO_CRASH_ON_START=1: exiting"),
        "the app's last output is shown:\n{}",
        out.stderr
    );

    for _ in 0..5 {
        assert_eq!(server.get("hello", "/").await.body, V1);
    }
    let status = server
        .wait_for_status("hello", Duration::from_secs(10), |status| {
            status["instances"]
                .as_array()
                .unwrap()
                .iter()
                .all(|instance| instance["release"] == 1)
        })
        .await;
    assert_eq!(status["release"]["version"], 1);
    let releases = server
        .ok(&["releases", "--app", "hello", "--json"])
        .await
        .json();
    assert_eq!(releases[0]["status"], "failed");
    let events = server.ok(&["events", "--app", "hello"]).await;
    assert!(events.stdout.contains("deploy.failed"), "{}", events.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_is_replaced() {
    setup();
    let server = TestServer::start().await;
    let _app = deploy_hello(&server).await;
    let status = server.status("hello").await;
    let victim = status["instances"][0].clone();
    let pid = victim["pid"].as_u64().unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();

    let status = server
        .wait_for_status("hello", Duration::from_secs(10), |status| {
            let ids = running_ids(status);
            ids.len() == 1 && ids[0] != victim["id"].as_str().unwrap()
        })
        .await;
    assert_eq!(server.get("hello", "/").await.body, V1);
    assert_eq!(
        server.get("hello", "/instance").await.body,
        running_ids(&status)[0]
    );
    let events = server.ok(&["events", "--app", "hello"]).await;
    assert!(
        events.stdout.contains("exited unexpectedly"),
        "{}",
        events.stdout
    );
    assert!(
        events.stdout.contains("killed by SIGKILL"),
        "the cause is recorded:\n{}",
        events.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_app_shows_as_such() {
    setup();
    let server = TestServer::start().await;
    let app = example("plain");
    server.ok_in(app.path(), &["up"]).await;
    // A webhook that asks for crash loops is told, once.
    let sink = berth_testkit::HttpSink::start().await;
    server
        .ok(&[
            "notify",
            "add",
            "webhook",
            &format!("http://{}/loops", sink.addr),
            "--events",
            "app.*",
        ])
        .await;
    // An instance that dies a second after it became healthy, again and again.
    std::fs::write(
        app.path().join("berth.toml"),
        "[processes]\nweb = \"plain & sleep 1.5; exit 3\"\n",
    )
    .unwrap();
    server.ok_in(app.path(), &["deploy"]).await;
    let status = server
        .wait_for_status("plain", Duration::from_secs(30), |status| {
            status["processes"][0]["health"] == "crash-loop"
        })
        .await;
    let reason = status["processes"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("exit code 3"), "{reason}");
    let text = server.ok(&["status", "--app", "plain"]).await;
    assert!(text.stdout.contains("crash-loop"), "{}", text.stdout);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let alerts = loop {
        let alerts: Vec<serde_json::Value> = sink
            .received()
            .iter()
            .filter(|request| request.header("berth-event") == Some("app.crash-loop"))
            .map(|request| serde_json::from_slice(&request.body).unwrap())
            .collect();
        if !alerts.is_empty() || std::time::Instant::now() > deadline {
            break alerts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!alerts.is_empty(), "no app.crash-loop webhook");
    // It goes on crashing: still one alert a while later.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let count = sink
        .received()
        .iter()
        .filter(|request| request.header("berth-event") == Some("app.crash-loop"))
        .count();
    assert_eq!(count, 1, "{alerts:?}");
    assert_eq!(alerts[0]["app"], "plain");
    assert!(
        alerts[0]["message"]
            .as_str()
            .unwrap()
            .contains("exit code 3"),
        "{alerts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_comes_back_with_every_app_and_everything_acknowledged() {
    setup();
    let mut server = TestServer::start().await;
    let _hello = deploy_hello(&server).await;
    let plain = example("plain");
    server.ok_in(plain.path(), &["up"]).await;
    server
        .ok(&["env", "set", "GREETING_TARGET=world", "--app", "hello"])
        .await;
    assert_eq!(
        server.get("hello", "/env/GREETING_TARGET").await.body,
        "world"
    );
    let before = server
        .ok(&["logs", "--app", "hello", "--json"])
        .await
        .stdout;
    let mut instance_pids = Vec::new();
    for app in ["hello", "plain"] {
        let status = server.status(app).await;
        instance_pids.push(status["instances"][0]["pid"].as_u64().unwrap());
    }

    server.kill9().await;
    // Instances do not outlive their server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for pid in &instance_pids {
        // Gone, or a zombie waiting for init to reap it.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = state
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'));
        assert!(!alive, "instance {pid} outlived the server: {state}");
    }

    let restarted = std::time::Instant::now();
    server.restart().await;
    let mut answered = BTreeSet::new();
    while answered.len() < 2 {
        for app in ["hello", "plain"] {
            if let Ok(answer) =
                berth_testkit::http_get(server.router, &format!("{app}.localhost"), "/").await
                && answer.status == 200
            {
                answered.insert(app);
            }
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "apps did not come back: {answered:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "every app answered {:?} after the restart began",
        restarted.elapsed()
    );
    assert_eq!(
        server.get("hello", "/env/GREETING_TARGET").await.body,
        "world"
    );
    assert_eq!(server.get("hello", "/").await.body, V1);
    assert!(
        server
            .get("plain", "/")
            .await
            .body
            .starts_with("plain says hi")
    );
    let releases = server
        .ok(&["releases", "--app", "hello", "--json"])
        .await
        .json();
    assert_eq!(releases.as_array().unwrap().len(), 2);
    let after = server
        .ok(&["logs", "--app", "hello", "--json", "-n", "1000"])
        .await
        .stdout;
    for line in before.lines() {
        assert!(
            after.contains(line),
            "log line lost across the crash: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_to_three_spreads_requests_over_three_instances() {
    setup();
    let server = TestServer::start().await;
    let _app = deploy_hello(&server).await;
    let out = server.ok(&["scale", "web=3", "--app", "hello"]).await;
    assert!(out.stdout.contains("web=3"), "{}", out.stdout);
    let status = server
        .wait_for_status("hello", Duration::from_secs(10), |status| {
            running_ids(status).len() == 3
        })
        .await;
    let ids: BTreeSet<String> = running_ids(&status).into_iter().collect();
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..30 {
        *seen
            .entry(server.get("hello", "/instance").await.body)
            .or_default() += 1;
    }
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), ids);
    assert!(
        seen.values().all(|count| *count >= 5),
        "uneven spread: {seen:?}"
    );

    let out = server.fails(&["scale", "wrker=2", "--app", "hello"]).await;
    assert!(
        out.stderr.contains("process group `wrker`") && out.stderr.contains("it has: web"),
        "{}",
        out.stderr
    );
    server.ok(&["scale", "web=1", "--app", "hello"]).await;
    server
        .wait_for_status("hello", Duration::from_secs(10), |status| {
            status["instances"].as_array().unwrap().len() == 1
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_berth_toml_reports_file_line_and_column() {
    setup();
    let server = TestServer::start().await;
    let app = example("plain");
    std::fs::write(
        app.path().join("berth.toml"),
        "app = \"plain\"\n[env]\nRUST_LOG = info\n",
    )
    .unwrap();
    // The CLI reads the spec first…
    let out = server.fails_in(app.path(), &["up"]).await;
    assert!(out.stderr.contains("berth.toml:3:12:"), "{}", out.stderr);
    // …and the server checks it again (here the CLI is told the app, so it does not read it).
    server.ok(&["apps", "create", "plain"]).await;
    let out = server
        .fails_in(app.path(), &["deploy", "--app", "plain"])
        .await;
    assert!(out.stderr.contains("berth.toml:3:12:"), "{}", out.stderr);
    // Validation errors point at their place too.
    std::fs::write(
        app.path().join("berth.toml"),
        "app = \"plain\"\n\n[deploy]\nstrategy = \"yolo\"\n",
    )
    .unwrap();
    let out = server.fails_in(app.path(), &["up"]).await;
    assert!(
        out.stderr
            .contains("berth.toml:4:12: unknown deploy strategy `yolo`"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_that_escape_their_folder_or_are_too_big_are_refused() {
    setup();
    let server = TestServer::start_with(&["--max-upload-mib", "1"]).await;
    server.ok(&["apps", "create", "hello"]).await;
    let client = reqwest::Client::new();
    let deploy = |body: Vec<u8>| {
        client
            .post(format!("{}/v1/apps/hello/deploy", server.api_url))
            .bearer_auth(&server.token)
            .body(body)
            .send()
    };

    let mut header = tar::Header::new_gnu();
    let payload = b"gotcha";
    header.set_size(payload.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    let path = b"../escaped-by-test";
    header.as_old_mut().name[..path.len()].copy_from_slice(path);
    header.set_cksum();
    let mut archive = tar::Builder::new(Vec::new());
    archive.append(&header, &payload[..]).unwrap();
    let evil = zstd::encode_all(&archive.into_inner().unwrap()[..], 3).unwrap();
    let answer = deploy(evil).await.unwrap();
    assert_eq!(answer.status(), 200);
    let text = answer.text().await.unwrap();
    assert!(text.contains("\"type\":\"failed\""), "{text}");
    assert!(
        text.contains("upload refused: `../escaped-by-test` escapes the app folder"),
        "{text}"
    );
    for dir in [
        server.data_dir().to_path_buf(),
        server.data_dir().join("tmp"),
    ] {
        assert!(!dir.join("escaped-by-test").exists());
    }

    let big: Vec<u8> = (0..2 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let answer = deploy(big).await.unwrap();
    assert_eq!(answer.status(), 413);
    let error: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(error["code"], "too_large");
    assert!(
        error["message"].as_str().unwrap().contains("at most 1 MiB"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_can_never_reach_another_path_of_the_api() {
    setup();
    let server = TestServer::start().await;
    server.ok(&["apps", "create", "victim"]).await;
    server.ok(&["apps", "create", "appb"]).await;
    // Unescaped, this was DELETE /v1/apps/victim?confirm=true.
    let out = server
        .fails(&[
            "volumes",
            "destroy",
            "../../victim?confirm=true",
            "--app",
            "appb",
            "--yes",
        ])
        .await;
    assert!(
        out.stderr
            .contains("app `appb` has no volume `../../victim?confirm=true`"),
        "{}",
        out.stderr
    );
    for name in ["..", "."] {
        let out = server
            .fails(&["volumes", "destroy", name, "--app", "appb", "--yes"])
            .await;
        assert!(
            out.stderr
                .contains(&format!("`{name}` is not a name berth uses")),
            "{}",
            out.stderr
        );
    }
    let out = server.fails(&["status", "--app", "victim/../appb"]).await;
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    let apps = server.ok(&["apps"]).await.stdout;
    assert!(apps.contains("victim") && apps.contains("appb"), "{apps}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_only_its_own_names_and_drops_half_sent_requests() {
    setup();
    let server = TestServer::start().await;
    let token = std::fs::read_to_string(server.data_dir().join("token")).unwrap();
    let client = reqwest::Client::new();
    // A page on another site whose name resolves here (DNS rebinding).
    let answer = client
        .get(format!("{}/v1/apps", server.api_url))
        .header("host", "evil.example")
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 421);
    // The auth scheme is case-insensitive.
    let answer = client
        .get(format!("{}/v1/apps", server.api_url))
        .header("authorization", format!("bearer {}", token.trim()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // A request head that never ends is dropped after 10 s.
    let addr = server.api_url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the half-sent request was still open after 20 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_app_with_a_destroyed_apps_name_starts_with_no_history() {
    setup();
    let server = TestServer::start().await;
    server.ok(&["apps", "create", "again"]).await;
    server
        .ok(&["env", "set", "--app", "again", "OLD=secretish"])
        .await;
    server.ok(&["apps", "destroy", "again", "--yes"]).await;
    server.ok(&["apps", "create", "again"]).await;
    let events = server.ok(&["events", "--app", "again"]).await.stdout;
    assert!(events.contains("app.created"), "{events}");
    assert!(
        !events.contains("env.changed"),
        "the old app's events: {events}"
    );
    let env = server.ok(&["env", "list", "--app", "again"]).await.stdout;
    assert!(!env.contains("OLD"), "{env}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_goes_to_disk_as_it_arrives_not_into_memory() {
    setup();
    let server = TestServer::start().await;
    server.ok(&["apps", "create", "big"]).await;
    // 150 MiB (under the 200 MiB limit) that is no tarball at all.
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().set_len(150 * 1024 * 1024).unwrap();
    let rss = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    let pid = server.pid();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watching = peak.clone();
    let watcher = tokio::spawn(async move {
        loop {
            watching.fetch_max(rss(pid), std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let body = tokio::fs::File::open(file.path()).await.unwrap();
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/apps/big/deploy", server.api_url))
        .bearer_auth(&server.token)
        .body(reqwest::Body::from(body))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    watcher.abort();
    assert!(
        answer.contains("not a valid compressed tarball"),
        "{answer}"
    );
    let peak_mib = peak.load(std::sync::atomic::Ordering::Relaxed) / 1024;
    assert!(
        peak_mib < 100,
        "the server grew to {peak_mib} MiB receiving a 150 MiB upload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_apps_bad_tokens_and_missing_servers_get_clear_errors() {
    setup();
    let server = TestServer::start().await;
    let out = server.fails(&["status", "--app", "nope"]).await;
    assert!(
        out.stderr.contains("app `nope` not found"),
        "{}",
        out.stderr
    );
    let out = server.fails(&["apps", "create", "Bad_Name"]).await;
    assert!(out.stderr.contains("lowercase letters"), "{}", out.stderr);

    let answer = reqwest::Client::new()
        .get(format!("{}/v1/apps", server.api_url))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);

    let empty = tempfile::tempdir().unwrap();
    let out = server
        .fails(&[
            "status",
            "--app",
            "x",
            "--data",
            empty.path().to_str().unwrap(),
        ])
        .await;
    assert!(
        out.stderr.contains("no berth server is running"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_groups_run_side_by_side_and_only_web_gets_http() {
    setup();
    let server = TestServer::start().await;
    let app = example("hello");
    std::fs::write(
        app.path().join("berth.toml"),
        r#"app = "hello"

[processes]
web = "hello"
worker = "while true; do echo tick from $BERTH_INSTANCE; sleep 0.2; done"

[http_service]
processes = ["web"]

  [[http_service.checks]]
  path = "/healthz"
  interval = "1s"
"#,
    )
    .unwrap();
    let out = server.ok_in(app.path(), &["up"]).await;
    assert!(out.stderr.contains("using berth.toml"), "{}", out.stderr);
    server.ok(&["scale", "worker=2", "--app", "hello"]).await;
    let status = server
        .wait_for_status("hello", Duration::from_secs(10), |status| {
            running_ids(status).len() == 3
        })
        .await;
    let groups: Vec<(String, u64)> = status["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| {
            (
                group["name"].as_str().unwrap().to_string(),
                group["running"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![("web".to_string(), 1), ("worker".to_string(), 2)]
    );
    let worker = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|instance| instance["process"] == "worker")
        .unwrap();
    assert!(worker["port"].is_null(), "workers get no port: {worker}");

    // Only web instances take requests.
    for _ in 0..6 {
        assert!(
            server
                .get("hello", "/instance")
                .await
                .body
                .starts_with("web-")
        );
    }
    let logs = server
        .ok(&[
            "logs",
            "--app",
            "hello",
            "--process",
            "worker",
            "--grep",
            "tick from",
        ])
        .await;
    assert!(logs.stdout.contains("tick from worker-"), "{}", logs.stdout);

    // Env changes make a release, reach every group, and can be undone.
    let out = server
        .ok(&["env", "set", "MODE=fast", "--app", "hello"])
        .await;
    assert!(out.stderr.contains("v2 is live"), "{}", out.stderr);
    assert_eq!(server.get("hello", "/env/MODE").await.body, "fast");
    let list = server.ok(&["env", "list", "--app", "hello"]).await;
    assert_eq!(list.stdout.trim(), "MODE=fast");
    server.ok(&["env", "unset", "MODE", "--app", "hello"]).await;
    assert_eq!(server.get("hello", "/env/MODE").await.status, 404);
    let out = server
        .fails(&["env", "set", "PORT=1", "--app", "hello"])
        .await;
    assert!(out.stderr.contains("set by berth"), "{}", out.stderr);
    let releases = server
        .ok(&["releases", "--app", "hello", "--json"])
        .await
        .json();
    assert_eq!(releases[0]["cause"], "env unset MODE");
    let status = server.status("hello").await;
    assert_eq!(
        status["processes"][1]["running"], 2,
        "the worker count survives deploys"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_never_passes_its_http_check_fails_the_deploy() {
    setup();
    let server = TestServer::start().await;
    let app = deploy_hello(&server).await;
    std::fs::write(
        app.path().join("berth.toml"),
        "[deploy]\nwait_timeout = \"3s\"\n\n[[http_service.checks]]\npath = \"/nope\"\n",
    )
    .unwrap();
    let out = server.fails_in(app.path(), &["deploy"]).await;
    assert!(
        out.stderr
            .contains("did not pass its health check in time: GET /nope on port "),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("v1 keeps serving"), "{}", out.stderr);
    assert_eq!(server.get("hello", "/").await.body, V1);
}
