use super::*;

fn source(process: &str) -> LogSource {
    LogSource {
        app: "hello".into(),
        process: process.into(),
        instance: format!("{process}-1"),
        release: 3,
    }
}

fn query() -> LogQuery {
    LogQuery {
        app: "hello".into(),
        limit: 100,
        ..LogQuery::default()
    }
}

#[tokio::test]
async fn lines_are_stored_with_their_source_and_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let logs = LogStore::open(&dir.path().join("logs.db")).unwrap();
    logs.append(&source("web"), LogStream::Stdout, "plain start-up line");
    logs.append(
        &source("web"),
        LogStream::Stdout,
        r#"{"level":"ERROR","fields":{"message":"boom","code":7}}"#,
    );
    logs.append(
        &source("worker"),
        LogStream::Stderr,
        "level=warn msg=\"queue deep\" depth=90",
    );
    logs.flush().await.unwrap();

    let all = logs.query(&query()).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].line.message, "plain start-up line");
    assert_eq!(all[0].line.release, 3);

    let warn_up = logs
        .query(&LogQuery {
            min_level: Some("warn".into()),
            ..query()
        })
        .unwrap();
    let messages: Vec<_> = warn_up
        .iter()
        .map(|stored| stored.line.message.as_str())
        .collect();
    assert_eq!(messages, vec!["boom", "queue deep"]);

    let workers = logs
        .query(&LogQuery {
            process: Some("worker".into()),
            ..query()
        })
        .unwrap();
    assert_eq!(workers.len(), 1);

    let grep = logs
        .query(&LogQuery {
            grep: Some(Grep::new("\"code\":7").unwrap()),
            ..query()
        })
        .unwrap();
    assert_eq!(grep.len(), 1, "grep searches fields too");

    let newest = logs
        .query(&LogQuery {
            limit: 1,
            ..query()
        })
        .unwrap();
    assert_eq!(newest[0].line.message, "queue deep");
}

#[tokio::test]
async fn followers_receive_lines_after_they_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let logs = LogStore::open(&dir.path().join("logs.db")).unwrap();
    let mut live = logs.subscribe();
    logs.append(&source("web"), LogStream::Stdout, "hello");
    let stored = live.recv().await.unwrap();
    assert_eq!(stored.line.message, "hello");
    assert_eq!(logs.query(&query()).unwrap()[0].id, stored.id);
}

#[tokio::test]
async fn lines_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let logs = LogStore::open(&dir.path().join("logs.db")).unwrap();
        logs.append(&source("web"), LogStream::Stdout, "kept");
        logs.flush().await.unwrap();
    }
    let logs = LogStore::open(&dir.path().join("logs.db")).unwrap();
    assert_eq!(logs.query(&query()).unwrap()[0].line.message, "kept");
}

#[test]
fn since_accepts_durations_and_times() {
    let ten_minutes_ago = parse_since("10m").unwrap();
    assert!((now_micros() - ten_minutes_ago - 600_000_000).abs() < 5_000_000);
    assert_eq!(parse_since("1970-01-01T00:00:01Z").unwrap(), 1_000_000);
    assert!(parse_since("yesterday").is_err());
    // Too far back to count in microseconds: an error, not a wrapped time.
    assert!(matches!(
        parse_since("200000000000d"),
        Err(LogError::BadQuery(why)) if why.contains("too far")
    ));
}

#[tokio::test]
async fn secret_values_are_masked_before_they_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs.db");
    let logs = LogStore::open(&path).unwrap();
    logs.set_masks("hello", ["s3cr3t-token", "s3cr3t", "ab"]);
    logs.append(
        &source("web"),
        LogStream::Stdout,
        "token=s3cr3t-token and s3cr3t, about ab",
    );
    logs.append(
        &source("web"),
        LogStream::Stdout,
        r#"{"level":"INFO","fields":{"message":"key is s3cr3t"}}"#,
    );
    // A line parsed already (the router's access log): fields too.
    logs.append_parsed(
        &source("web"),
        LogStream::Stdout,
        ParsedLine {
            level: Some("info".into()),
            message: "GET /bot/s3cr3t-token/update 200".into(),
            fields: Some(
                serde_json::json!({"path": "/bot/s3cr3t-token/update", "list": ["s3cr3t"]}),
            ),
        },
    );
    let mut other = source("web");
    other.app = "other".into();
    logs.append(&other, LogStream::Stdout, "other app prints s3cr3t");
    logs.flush().await.unwrap();
    let lines = logs.query(&query()).unwrap();
    assert_eq!(
        lines[0].line.message,
        "token=[masked] and [masked], about ab"
    );
    assert_eq!(lines[1].line.message, "key is [masked]");
    assert_eq!(lines[2].line.message, "GET /bot/[masked]/update 200");
    assert_eq!(
        lines[2].line.fields,
        Some(serde_json::json!({"path": "/bot/[masked]/update", "list": ["[masked]"]}))
    );
    drop(logs);
    let raw = std::fs::read(&path).unwrap();
    let wal = std::fs::read(dir.path().join("logs.db-wal")).unwrap_or_default();
    for bytes in [raw, wal] {
        assert!(
            !bytes.windows(12).any(|window| window == b"s3cr3t-token"),
            "the value reached the file"
        );
    }
    // Masks are per app: the other app's line is its own business.
    let logs = LogStore::open(&path).unwrap();
    let mut other_query = query();
    other_query.app = "other".into();
    assert_eq!(
        logs.query(&other_query).unwrap()[0].line.message,
        "other app prints s3cr3t"
    );
}

fn of_app(app: &str) -> LogSource {
    LogSource {
        app: app.into(),
        process: "web".into(),
        instance: "web-1".into(),
        release: 1,
    }
}

fn stored(logs: &LogStore, app: &str) -> Vec<StoredLine> {
    logs.query(&LogQuery {
        app: app.into(),
        limit: 10_000,
        ..LogQuery::default()
    })
    .unwrap()
}

#[tokio::test]
async fn a_noisy_app_evicts_only_its_own_oldest_lines() {
    let dir = tempfile::tempdir().unwrap();
    // 100 KiB per app, for the test.
    let logs = LogStore::open_with_cap(&dir.path().join("logs.db"), 100 * 1024).unwrap();
    logs.append(
        &of_app("quiet"),
        LogStream::Stdout,
        "the quiet app's only line",
    );
    let kib = "x".repeat(1024);
    for n in 0..400 {
        logs.append(
            &of_app("noisy"),
            LogStream::Stdout,
            &format!("{n:04} {kib}"),
        );
    }
    logs.flush().await.unwrap();
    let noisy = stored(&logs, "noisy");
    let bytes: usize = noisy.iter().map(|line| line.line.message.len()).sum();
    assert!(bytes <= 100 * 1024, "{bytes} bytes kept past a 100 KiB cap");
    assert!(bytes >= 80 * 1024, "trimmed too far: {bytes} bytes");
    assert!(
        noisy.last().unwrap().line.message.starts_with("0399 "),
        "the newest lines stay"
    );
    assert_eq!(
        stored(&logs, "quiet").len(),
        1,
        "another app keeps its lines"
    );
}

#[tokio::test]
async fn a_destroyed_apps_lines_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let logs = LogStore::open(&dir.path().join("logs.db")).unwrap();
    logs.append(&of_app("gone"), LogStream::Stdout, "from the old app");
    logs.append(&of_app("kept"), LogStream::Stdout, "another app's line");
    logs.flush().await.unwrap();
    logs.forget_app("gone").await.unwrap();
    assert!(stored(&logs, "gone").is_empty());
    assert_eq!(stored(&logs, "kept").len(), 1);
}

#[tokio::test]
async fn a_long_line_is_masked_then_cut_so_no_secret_is_stored_in_part() {
    let dir = tempfile::tempdir().unwrap();
    let logs = LogStore::open(&dir.path().join("logs.db")).unwrap();
    logs.set_masks("hello", ["sk_live_0123456789abcdef"]);
    // The secret straddles the 64 KiB cut.
    let line = format!(
        "{}sk_live_0123456789abcdef{}",
        "a".repeat(MAX_STORED_LINE_BYTES - 8),
        "b".repeat(1000)
    );
    logs.append(&source("web"), LogStream::Stdout, &line);
    logs.flush().await.unwrap();
    let kept = &logs.query(&query()).unwrap()[0].line.message;
    assert!(!kept.contains("sk_live"), "a part of the secret was stored");
    assert!(kept.contains("…[cut: "), "the cut is marked");
    assert!(kept.len() <= MAX_STORED_LINE_BYTES + 40);
}

#[tokio::test]
async fn the_last_bound_on_lines_takes_them_from_the_noisiest_app() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs.db");
    let logs = LogStore::open(&path).unwrap();
    let mut quiet = source("web");
    quiet.app = "quiet".into();
    for n in 0..5 {
        logs.append(&quiet, LogStream::Stdout, &format!("quiet {n}"));
    }
    for n in 0..30 {
        logs.append(&source("web"), LogStream::Stdout, &format!("noisy {n}"));
    }
    logs.flush().await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(writer::prune_to_line_cap(&conn, 20).unwrap(), 15);
    let mut quiet_query = query();
    quiet_query.app = "quiet".into();
    assert_eq!(logs.query(&quiet_query).unwrap().len(), 5);
    let noisy: Vec<String> = (logs.query(&query()).unwrap())
        .into_iter()
        .map(|stored| stored.line.message)
        .collect();
    assert_eq!(noisy.len(), 15);
    assert_eq!(noisy.first().map(String::as_str), Some("noisy 15"));
    // Under the bound nothing goes.
    assert_eq!(writer::prune_to_line_cap(&conn, 20).unwrap(), 0);
}

#[tokio::test]
async fn a_batch_that_cannot_be_written_is_not_told_as_done() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs.db");
    let logs = LogStore::open(&path).unwrap();
    logs.append(&source("web"), LogStream::Stdout, "kept");
    logs.flush().await.unwrap();
    let mut live = logs.subscribe();
    // Another writer holds the database past the writer's busy timeout.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    logs.append(&source("web"), LogStream::Stdout, "never stored");
    assert!(matches!(
        logs.forget_app("hello").await,
        Err(LogError::WriterStopped)
    ));
    // Followers were not shown the line that was not stored.
    assert!(matches!(
        live.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Empty)
    ));
    blocker.execute_batch("ROLLBACK").unwrap();
    let kept: Vec<String> = (logs.query(&query()).unwrap())
        .into_iter()
        .map(|stored| stored.line.message)
        .collect();
    assert_eq!(kept, ["kept"]);
    logs.forget_app("hello").await.unwrap();
    assert!(logs.query(&query()).unwrap().is_empty());
}
