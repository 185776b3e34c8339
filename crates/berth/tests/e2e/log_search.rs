//! End to end: an app's JSON, logfmt and coloured lines, searched with
//! `berth logs --where`, `--grep`, `--search` and `--until`, which return
//! exactly the matching lines; bad expressions get clear errors. `[logs]`
//! bounds what is kept, and `berth status` shows the disk it takes.

use berth_testkit::TestServer;

use crate::support::deploy_plain;

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// What the app prints: one line per entry, through its real stdout.
const LINES: &str = r#"{"level":"INFO","fields":{"message":"cart shown","user_id":42}}
{"level":"WARN","fields":{"message":"slow search","user_id":42,"ms":912}}
{"level":"ERROR","fields":{"message":"payment declined","user_id":7}}
level=warn msg="queue deep" user_id=42 depth=90
plain words about a Payment
"#;

/// The messages of the lines `berth logs` shows with `args`.
async fn messages(server: &TestServer, args: &[&str]) -> Vec<String> {
    messages_of(server, "searched", args).await
}

/// The messages of the lines `berth logs --app APP` shows with `args`.
async fn messages_of(server: &TestServer, app: &str, args: &[&str]) -> Vec<String> {
    let mut full = vec!["logs", "--app", app, "--json"];
    full.extend_from_slice(args);
    let out = server.ok(&full).await.stdout;
    out.lines()
        .map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            line["message"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_search_by_field_level_regex_and_words_returns_exactly_the_matching_lines() {
    setup();
    let server = TestServer::start().await;
    let dir = deploy_plain(&server, "searched", "").await;
    std::fs::write(dir.path().join("lines.txt"), LINES).unwrap();
    // The lines come from a one-off command in the app's sandbox; the
    // coloured one is written as Shuttle's subscriber would.
    let printed = server
        .ok(&[
            "run",
            "--no-tty",
            "--app",
            "searched",
            "--",
            "sh",
            "-c",
            &format!(
                "printf '%s' '{}'; printf '\\033[2m2026-12-07T10:00:00Z\\033[0m \\033[33m WARN\\033[0m shop: disk almost full\\n'",
                LINES.replace('\'', "'\\''")
            ),
        ])
        .await;
    assert!(printed.stdout.contains("queue deep"), "{}", printed.stdout);

    let messages = |args: &'static [&'static str]| messages(&server, args);
    assert_eq!(
        messages(&["--where", "level>=warn user_id=42"]).await,
        ["slow search", "queue deep"]
    );
    assert_eq!(messages(&["--where", "ms>500"]).await, ["slow search"]);
    assert_eq!(
        messages(&["--where", "level=warn", "--grep", "^(slow|shop)"]).await,
        ["slow search", "shop: disk almost full"]
    );
    assert_eq!(
        messages(&["--search", "payment"]).await,
        ["payment declined", "plain words about a Payment"]
    );
    assert!(messages(&["--until", "1h"]).await.is_empty());

    // The coloured line: parsed without its colours, kept with them.
    let coloured = server
        .ok(&["logs", "--app", "searched", "--json", "--where", "msg~disk"])
        .await
        .stdout;
    let line: serde_json::Value = serde_json::from_str(coloured.trim()).unwrap();
    assert_eq!(line["level"], "warn", "{line}");
    assert_eq!(line["message"], "shop: disk almost full");
    assert!(
        line["colored"].as_str().unwrap().contains("\u{1b}[33m"),
        "{line}"
    );

    // Bad input: clear errors, nothing shown.
    for (args, expected) in [
        (
            vec!["--where", "user_id=~42"],
            "unknown operator `=~` in `user_id=~42`",
        ),
        (vec!["--where", "level>=loud"], "unknown level `loud`"),
        (vec!["--grep", "(unclosed"], "--grep (unclosed"),
        (
            vec!["--search", "\"unclosed"],
            "--search \"unclosed: unterminated string",
        ),
    ] {
        let mut full = vec!["logs", "--app", "searched"];
        full.extend(args);
        let failed = server.fails(&full).await;
        assert!(failed.stderr.contains(expected), "{}", failed.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_size_bound_keeps_the_newest_lines_and_status_shows_the_disk_they_take() {
    setup();
    let server = TestServer::start().await;
    let _dir = deploy_plain(
        &server,
        "bounded",
        "[logs]\nmax_size = \"64kb\"\nretain = \"7d\"\n",
    )
    .await;
    // About 200 KB of lines, three times the bound.
    server
        .ok(&[
            "run",
            "--no-tty",
            "--app",
            "bounded",
            "--",
            "i=0; while [ $i -lt 2000 ]; do printf 'line %04d %090d\\n' $i 0; i=$((i+1)); done",
        ])
        .await;
    let status = server.ok(&["status", "--app", "bounded", "--json"]).await;
    let logs = &status.json()["logs"];
    let bytes = logs["bytes"].as_u64().unwrap();
    assert!((32 * 1024..=64 * 1024).contains(&bytes), "{logs}");
    assert_eq!(logs["max_bytes"], 64 * 1024);
    assert_eq!(logs["retain_secs"], 7 * 86_400);
    let text = server.ok(&["status", "--app", "bounded"]).await.stdout;
    assert!(text.contains("logs:     "), "{text}");
    assert!(text.contains("of 64.0 KiB kept, 7d back"), "{text}");

    // The newest lines stay; the oldest went.
    assert_eq!(
        messages_of(&server, "bounded", &["-n", "1", "--where", "msg~line"]).await,
        [format!("line 1999 {:090}", 0)]
    );
    assert!(
        messages_of(&server, "bounded", &["--where", "msg~\"line 0000\""])
            .await
            .is_empty()
    );
}

/// Reads NDJSON from `answer` until a document satisfies `wanted`.
async fn read_until(
    answer: &mut reqwest::Response,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut pending = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let document: serde_json::Value = serde_json::from_slice(&line).unwrap();
            if wanted(&document) {
                return document;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, answer.chunk())
            .await
            .expect("the stream went quiet")
            .unwrap()
            .expect("the stream ended");
        pending.extend_from_slice(&chunk);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_logs_and_events_streams_what_comes_after_with_its_filters() {
    setup();
    let server = TestServer::start().await;
    let _dir = deploy_plain(&server, "followed", "").await;
    let run = |words: &'static str| {
        let server = &server;
        async move {
            server
                .ok(&["run", "--no-tty", "--app", "followed", "--", "echo", words])
                .await
        }
    };
    run("said before").await;
    let client = reqwest::Client::new();
    let follow = |path: String| {
        client
            .get(format!("{}{path}", server.api_url))
            .bearer_auth(&server.token)
            .send()
    };
    let mut logs = follow("/v1/apps/followed/logs?follow=true&grep=said".into())
        .await
        .unwrap();
    assert_eq!(logs.status(), 200);
    let mut events = follow("/v1/apps/followed/events?follow=true&limit=1".into())
        .await
        .unwrap();
    // What was stored first, then what comes later; the filter holds for both.
    read_until(&mut logs, |line| line["message"] == "said before").await;
    run("not this one").await;
    run("said after").await;
    let later = read_until(&mut logs, |line| line["message"] != "said before").await;
    assert_eq!(later["message"], "said after", "{later}");
    // The event log goes on too: a scale shows up as it happens.
    let first = read_until(&mut events, |_| true).await;
    server.ok(&["scale", "--app", "followed", "web=2"]).await;
    let scaled = read_until(&mut events, |event| {
        event["id"].as_i64() > first["id"].as_i64() && event["kind"] == "scale"
    })
    .await;
    assert!(
        scaled["message"].as_str().unwrap().contains('2'),
        "{scaled}"
    );
}
