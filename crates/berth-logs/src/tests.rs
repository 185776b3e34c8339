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
            grep: Some("\"code\":7".into()),
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
