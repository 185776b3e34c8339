//! `--where`, `--grep`, `--search`, `--until` and colour over stored lines,
//! and the same filters deciding live lines exactly as they do stored ones.

use super::*;

fn source(process: &str) -> LogSource {
    LogSource {
        app: "shop".into(),
        process: process.into(),
        instance: format!("{process}-1"),
        release: 4,
    }
}

async fn store_lines() -> (tempfile::TempDir, LogStore) {
    let dir = tempfile::tempdir().unwrap();
    let logs = LogStore::open(&dir.path().join("logs.db")).unwrap();
    let lines = [
        (
            "web",
            r#"{"level":"INFO","fields":{"message":"GET /api/cart","user_id":42,"status":200,"http":{"ms":12}}}"#,
        ),
        (
            "web",
            r#"{"level":"WARN","fields":{"message":"slow GET /api/search","user_id":"42","status":200,"http":{"ms":912}}}"#,
        ),
        (
            "web",
            r#"{"level":"ERROR","fields":{"message":"payment declined","user_id":7,"status":502}}"#,
        ),
        (
            "worker",
            "level=warn msg=\"queue deep\" depth=90 user_id=42",
        ),
        ("worker", "level=debug msg=\"tick\""),
        ("web", "plain text about the Payment service"),
        (
            "web",
            "\u{1b}[2m2026-12-07T10:00:00Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m shop: disk almost full",
        ),
        (
            "web",
            r#"{"level":"INFO","fields":{"message":"flagged","flag":true,"latency":"42ms","note":"Ünïcode"}}"#,
        ),
    ];
    for (process, text) in lines {
        logs.append(&source(process), LogStream::Stdout, text);
    }
    logs.flush().await.unwrap();
    (dir, logs)
}

fn query(filter: &str) -> LogQuery {
    LogQuery {
        app: "shop".into(),
        conditions: parse_where(filter).unwrap_or_else(|err| panic!("{filter}: {err}")),
        limit: 100,
        ..LogQuery::default()
    }
}

fn messages(lines: &[StoredLine]) -> Vec<&str> {
    lines
        .iter()
        .map(|line| line.line.message.as_str())
        .collect()
}

#[tokio::test]
async fn where_conditions_select_exactly_the_matching_lines_stored_or_live() {
    let (_dir, logs) = store_lines().await;
    let all = logs
        .query(&LogQuery {
            app: "shop".into(),
            limit: 100,
            ..LogQuery::default()
        })
        .unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            "level>=warn user_id=42",
            &["slow GET /api/search", "queue deep"],
        ),
        (
            "user_id=42",
            &["GET /api/cart", "slow GET /api/search", "queue deep"],
        ),
        ("status>=500", &["payment declined"]),
        ("http.ms>100", &["slow GET /api/search"]),
        ("level=warn process=worker", &["queue deep"]),
        (
            "msg~payment",
            &["payment declined", "plain text about the Payment service"],
        ),
        ("level<info", &["tick"]),
        (
            "level=warn",
            &[
                "slow GET /api/search",
                "queue deep",
                "shop: disk almost full",
            ],
        ),
        ("process!=web", &["queue deep", "tick"]),
        (
            "user_id!=42",
            &[
                "payment declined",
                "tick",
                "plain text about the Payment service",
                "shop: disk almost full",
                "flagged",
            ],
        ),
        // Numbers contain as text; JSON booleans are true and false; a
        // number at the start of a text compares as that number.
        (
            "user_id~4",
            &["GET /api/cart", "slow GET /api/search", "queue deep"],
        ),
        ("release~4 msg~flag", &["flagged"]),
        ("flag=true", &["flagged"]),
        ("flag!=false msg~flag", &["flagged"]),
        ("latency>40 latency<43", &["flagged"]),
        ("note~ünï", &[]),
        ("note~Ünï", &["flagged"]),
        ("message=\"queue deep\"", &["queue deep"]),
        ("release=4 depth=90", &["queue deep"]),
        ("release>4", &[]),
    ];
    for (filter, expected) in cases {
        let query = query(filter);
        let stored = logs.query(&query).unwrap();
        assert_eq!(messages(&stored), *expected, "stored, {filter}");
        // A follower decides the same, line by line.
        let live: Vec<&str> = all
            .iter()
            .filter(|line| query.matches(line))
            .map(|line| line.line.message.as_str())
            .collect();
        assert_eq!(live, *expected, "live, {filter}");
    }
}

#[tokio::test]
async fn grep_is_a_regular_expression_and_search_is_full_text() {
    let (_dir, logs) = store_lines().await;
    let grep = |pattern: &str| LogQuery {
        app: "shop".into(),
        grep: Some(Grep::new(pattern).unwrap()),
        limit: 100,
        ..LogQuery::default()
    };
    let found = logs.query(&grep(r"GET /api/(cart|search)$")).unwrap();
    assert_eq!(
        messages(&found),
        vec!["GET /api/cart", "slow GET /api/search"]
    );
    let in_fields = logs.query(&grep(r#""depth":"9\d""#)).unwrap();
    assert_eq!(messages(&in_fields), vec!["queue deep"]);
    // An empty match is not found in fields a line does not have.
    assert_eq!(logs.query(&grep("^$")).unwrap().len(), 0);
    let err = Grep::new("(unclosed").unwrap_err().to_string();
    assert!(err.contains("--grep (unclosed"), "{err}");

    let search = |words: &str| {
        logs.query(&LogQuery {
            app: "shop".into(),
            search: Some(words.into()),
            limit: 100,
            ..LogQuery::default()
        })
    };
    assert_eq!(
        messages(&search("payment").unwrap()),
        vec!["payment declined", "plain text about the Payment service"]
    );
    assert_eq!(
        messages(&search("\"disk almost\" OR queu*").unwrap()),
        vec!["queue deep", "shop: disk almost full"]
    );
    let err = search("\"unclosed").unwrap_err().to_string();
    assert!(
        err.contains("--search \"unclosed: unterminated string"),
        "{err}"
    );
}

#[tokio::test]
async fn colours_are_stripped_before_parsing_and_kept_for_terminals() {
    let (_dir, logs) = store_lines().await;
    let warned = logs.query(&query("msg~disk")).unwrap();
    let line = &warned[0].line;
    assert_eq!(line.level.as_deref(), Some("warn"));
    assert_eq!(line.message, "shop: disk almost full");
    assert!(line.colored.as_deref().unwrap().contains("\u{1b}[33m WARN"));
    let plain = logs.query(&query("msg~tick")).unwrap();
    assert_eq!(plain[0].line.colored, None);
}

#[tokio::test]
async fn until_ends_the_window() {
    let (_dir, logs) = store_lines().await;
    let before_now = LogQuery {
        app: "shop".into(),
        until_micros: Some(parse_since("1h").unwrap()),
        limit: 100,
        ..LogQuery::default()
    };
    assert!(logs.query(&before_now).unwrap().is_empty());
    let until_later = LogQuery {
        until_micros: Some(now_micros() + 1_000_000),
        ..before_now
    };
    assert_eq!(logs.query(&until_later).unwrap().len(), 8);
}

#[test]
fn bad_where_expressions_say_what_is_wrong() {
    let cases = [
        ("user_id=~42", "unknown operator `=~` in `user_id=~42`"),
        ("user_id", "`user_id` has no operator"),
        ("level>=loud", "unknown level `loud`"),
        ("msg~\"open", "an unclosed quote"),
        ("=3", "a condition starts with a field name"),
        ("a..b=1", "`a..b` is not a field name"),
        ("status>=", "`status>=` has no value"),
        ("   ", "an empty --where expression"),
    ];
    for (text, expected) in cases {
        let err = parse_where(text).unwrap_err().to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[tokio::test]
async fn retention_deletes_old_lines_and_keeps_the_newest_within_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let logs = LogStore::open(&dir.path().join("logs.db")).unwrap();
    let two_days_ago = now_micros() - 2 * 86_400 * 1_000_000;
    for index in 0..3 {
        logs.append_at(
            two_days_ago + index,
            &source("web"),
            LogStream::Stdout,
            &format!("old {index}"),
        );
    }
    logs.append(&source("web"), LogStream::Stdout, "new 0");
    logs.retain(
        "shop",
        Retention {
            max_age_micros: 86_400 * 1_000_000,
            max_bytes: 1 << 20,
        },
    )
    .unwrap();
    logs.flush().await.unwrap();
    let kept = logs.query(&query("release=4")).unwrap();
    assert_eq!(messages(&kept), vec!["new 0"]);

    // By size: the newest lines stay, within the bound.
    let line = "x".repeat(1000);
    for index in 0..100 {
        logs.append(
            &source("web"),
            LogStream::Stdout,
            &format!("{index:03} {line}"),
        );
    }
    logs.retain(
        "shop",
        Retention {
            max_age_micros: 86_400 * 1_000_000,
            max_bytes: 20_000,
        },
    )
    .unwrap();
    logs.append(&source("web"), LogStream::Stdout, "newest");
    let bytes = logs.app_bytes("shop").await.unwrap();
    assert!((10_000..=20_000).contains(&bytes), "{bytes} bytes kept");
    let kept = logs.query(&query("release=4")).unwrap();
    assert_eq!(kept.last().unwrap().line.message, "newest");
    assert!(
        kept.iter()
            .all(|line| !line.line.message.starts_with("000"))
    );
    // Another app's lines are not touched.
    assert_eq!(logs.app_bytes("other").await.unwrap(), 0);
}
