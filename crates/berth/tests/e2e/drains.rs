//! End to end: log drains. An app's lines reach an HTTP receiver (NDJSON),
//! an OTLP/HTTP receiver and a syslog receiver over TLS, every one in
//! order; a drain that is down gets what it missed once it is back, up to
//! its buffer, and counts what it dropped beyond; a restart of the server
//! loses nothing. Bad drain URLs get clear errors.

use std::time::Duration;

use berth_testkit::{HttpSink, SyslogSink, TestServer};

use crate::support::deploy_plain;

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// Prints `count` lines `PREFIX N` from a one-off command of `app`.
async fn print_lines(server: &TestServer, app: &str, prefix: &str, count: u32) {
    server
        .ok(&[
            "run",
            "--no-tty",
            "--app",
            app,
            "--",
            &format!("i=0; while [ $i -lt {count} ]; do echo \"{prefix} $i\"; i=$((i+1)); done"),
        ])
        .await;
}

/// The messages of the NDJSON lines `sink` received that start with `prefix`.
fn ndjson_messages(sink: &HttpSink, prefix: &str) -> Vec<String> {
    sink.requests()
        .iter()
        .flat_map(|(_, body)| {
            String::from_utf8_lossy(body)
                .lines()
                .map(|line| {
                    let line: serde_json::Value = serde_json::from_str(line).unwrap();
                    line["message"].as_str().unwrap().to_string()
                })
                .collect::<Vec<_>>()
        })
        .filter(|message| message.starts_with(prefix))
        .collect()
}

fn numbered(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|index| format!("{prefix} {index}")).collect()
}

/// Waits until `check` holds, for up to `seconds`.
async fn eventually(seconds: u64, mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..seconds * 10 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

/// The app's drains, as `berth logs drain list --json` gives them.
async fn drains(server: &TestServer, app: &str) -> Vec<serde_json::Value> {
    let out = server
        .ok(&["logs", "drain", "list", "--app", app, "--json"])
        .await;
    out.json().as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_reaches_http_otlp_and_syslog_over_tls_in_order() {
    setup();
    let server = TestServer::start().await;
    let _app = deploy_plain(&server, "drained", "").await;
    let ndjson = HttpSink::start().await;
    let otlp = HttpSink::start().await;
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = berth_tls::LocalCa::open_or_create(ca_dir.path()).unwrap();
    let (chain, key) = ca.issue_pem("localhost").unwrap();
    let syslog = SyslogSink::start(Some((&chain, &key))).await;
    let root = ca_dir.path().join("root.pem");
    std::fs::write(&root, ca.root_pem()).unwrap();

    let ndjson_url = format!("http://{}/ingest?token=t", ndjson.addr);
    let otlp_url = format!("otlp+http://{}/v1/logs", otlp.addr);
    let syslog_url = format!("syslog+tls://localhost:{}", syslog.addr.port());
    for url in [&ndjson_url, &otlp_url] {
        server
            .ok(&["logs", "drain", "add", url, "--app", "drained"])
            .await;
    }
    let added = server
        .ok(&[
            "logs",
            "drain",
            "add",
            &syslog_url,
            "--ca",
            root.to_str().unwrap(),
            "--app",
            "drained",
        ])
        .await;
    assert!(added.stdout.contains("(syslog-tls)"), "{}", added.stdout);

    print_lines(&server, "drained", "line", 300).await;
    let expected = numbered("line", 0..300);
    assert!(
        eventually(30, || ndjson_messages(&ndjson, "line ") == expected).await,
        "NDJSON got {:?}",
        ndjson_messages(&ndjson, "line ")
    );
    assert!(
        ndjson
            .requests()
            .iter()
            .all(|(path, _)| path == "/ingest?token=t")
    );

    let otlp_messages = || {
        otlp.requests()
            .iter()
            .flat_map(|(path, body)| {
                assert_eq!(path, "/v1/logs");
                let document: serde_json::Value = serde_json::from_slice(body).unwrap();
                let resource = &document["resourceLogs"][0];
                assert_eq!(
                    resource["resource"]["attributes"][0]["value"]["stringValue"],
                    "drained"
                );
                resource["scopeLogs"][0]["logRecords"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|record| record["body"]["stringValue"].as_str().unwrap().to_string())
                    .filter(|message| message.starts_with("line "))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(30, || otlp_messages() == expected).await,
        "OTLP got {:?}",
        otlp_messages()
    );

    let syslog_messages = || {
        syslog
            .messages()
            .iter()
            .filter_map(|message| {
                // <14>1 TIME HOST drained INSTANCE PROCESS - MESSAGE
                let fields: Vec<&str> = message.splitn(8, ' ').collect();
                assert_eq!(fields[0], "<14>1", "{message}");
                assert_eq!(fields[3], "drained", "{message}");
                fields[7]
                    .starts_with("line ")
                    .then(|| fields[7].to_string())
            })
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(30, || syslog_messages() == expected).await,
        "syslog got {:?}",
        syslog_messages()
    );

    let listed = drains(&server, "drained").await;
    for drain in &listed {
        assert!(drain["delivered"].as_u64().unwrap() >= 300, "{drain}");
        assert_eq!(drain["dropped"], 0, "{drain}");
    }
    // A token in the query is not shown.
    assert_eq!(
        listed[0]["url"],
        format!("http://{}/ingest?token=…", ndjson.addr)
    );

    // Bad input: clear errors, nothing added.
    for (url, expected) in [
        ("ftp://logs.example.com", "unknown drain scheme `ftp`"),
        ("logs.example.com", "is not a URL"),
        ("syslog+tls://logs.example.com", "needs a port"),
        ("https://user:secret@logs.example.com/", "credentials"),
    ] {
        let failed = server
            .fails(&["logs", "drain", "add", url, "--app", "drained"])
            .await;
        assert!(failed.stderr.contains(expected), "{url}: {}", failed.stderr);
    }
    let duplicate = server
        .fails(&["logs", "drain", "add", &ndjson_url, "--app", "drained"])
        .await;
    assert!(duplicate.stderr.contains("already"), "{}", duplicate.stderr);
    let bad_ca = server
        .fails(&[
            "logs",
            "drain",
            "add",
            "syslog+tls://localhost:6514",
            "--ca",
            "Cargo.toml",
            "--app",
            "drained",
        ])
        .await;
    assert!(
        bad_ca.stderr.contains("no PEM certificate"),
        "{}",
        bad_ca.stderr
    );
    assert_eq!(drains(&server, "drained").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_is_down_gets_what_it_missed_up_to_its_buffer() {
    setup();
    let mut server = TestServer::start().await;
    let _app = deploy_plain(&server, "patient", "").await;
    let [port] = berth_testkit::free_ports::<1>();
    let url = format!("http://127.0.0.1:{port}/in");
    server
        .ok(&[
            "logs", "drain", "add", &url, "--buffer", "50", "--app", "patient",
        ])
        .await;

    // Down (nothing listens): the lines wait, and the drain says why.
    print_lines(&server, "patient", "early", 30).await;
    let mut listed = Vec::new();
    for _ in 0..100 {
        listed = drains(&server, "patient").await;
        if listed[0]["last_error"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        listed[0]["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("Connection refused")),
        "{listed:?}"
    );

    // Across a restart of the server, too.
    server.restart().await;
    let sink = HttpSink::start_at(format!("127.0.0.1:{port}").parse().unwrap()).await;
    assert!(
        eventually(60, || ndjson_messages(&sink, "early ")
            == numbered("early", 0..30))
        .await,
        "got {:?}",
        ndjson_messages(&sink, "early ")
    );

    // Refusing (503) while 80 lines come: past its buffer of 50, the
    // oldest 30 are dropped and counted; the newest 50 arrive, in order.
    sink.answer(503);
    print_lines(&server, "patient", "late", 80).await;
    let mut dropped = 0;
    for _ in 0..300 {
        dropped = drains(&server, "patient").await[0]["dropped"]
            .as_u64()
            .unwrap();
        if dropped >= 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dropped, 30);
    sink.answer(200);
    assert!(
        eventually(60, || ndjson_messages(&sink, "late ")
            == numbered("late", 30..80))
        .await,
        "got {:?}",
        ndjson_messages(&sink, "late ")
    );

    // A receiver that does not take the drain's credentials (401) is
    // misconfigured, not refusing these lines: they wait and are tried
    // again, and arrive once it takes them.
    sink.answer(401);
    print_lines(&server, "patient", "unauthorized", 4).await;
    let mut listed = Vec::new();
    for _ in 0..300 {
        listed = drains(&server, "patient").await;
        if listed[0]["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("401"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        listed[0]["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("401")),
        "{listed:?}"
    );
    assert_eq!(listed[0]["dropped"], 30, "{listed:?}");
    sink.answer(200);
    assert!(
        eventually(60, || ndjson_messages(&sink, "unauthorized ")
            == numbered("unauthorized", 0..4))
        .await,
        "got {:?}",
        ndjson_messages(&sink, "unauthorized ")
    );

    // Lines it refuses for good (another 4xx) are dropped and counted, and
    // the drain goes on with the next.
    sink.answer(400);
    print_lines(&server, "patient", "refused", 5).await;
    for _ in 0..300 {
        listed = drains(&server, "patient").await;
        if listed[0]["dropped"] == 35 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed[0]["dropped"], 35, "{listed:?}");
    assert!(
        listed[0]["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("400")),
        "{listed:?}"
    );
    sink.answer(200);
    print_lines(&server, "patient", "after", 3).await;
    assert!(
        eventually(60, || ndjson_messages(&sink, "after ")
            == numbered("after", 0..3))
        .await,
        "got {:?}",
        ndjson_messages(&sink, "after ")
    );

    // Removed: nothing more goes to it.
    server
        .ok(&["logs", "drain", "remove", "1", "--app", "patient"])
        .await;
    assert!(drains(&server, "patient").await.is_empty());
    let unknown = server
        .fails(&["logs", "drain", "remove", "1", "--app", "patient"])
        .await;
    assert!(unknown.stderr.contains("drain 1"), "{}", unknown.stderr);
}
