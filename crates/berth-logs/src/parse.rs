//! Turning a raw output line into level, message and fields.

use serde_json::{Map, Value};

/// What a line says once parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedLine {
    /// Lowercase level (`trace`, `debug`, `info`, `warn`, `error`) when the line states one.
    pub level: Option<String>,
    /// The message, or the whole line when it is not structured.
    pub message: String,
    /// Other structured fields.
    pub fields: Option<Value>,
}

/// The severity rank of a level name: trace 0 … error 4.
pub fn level_rank(level: &str) -> Option<u8> {
    match level.to_ascii_lowercase().as_str() {
        "trace" => Some(0),
        "debug" => Some(1),
        "info" => Some(2),
        "warn" | "warning" => Some(3),
        "error" | "err" | "fatal" | "critical" | "panic" => Some(4),
        _ => None,
    }
}

fn normalise_level(level: &str) -> Option<String> {
    let name = match level_rank(level)? {
        0 => "trace",
        1 => "debug",
        2 => "info",
        3 => "warn",
        _ => "error",
    };
    Some(name.to_string())
}

/// Parses one line: JSON object, logfmt, or plain text.
pub fn parse_line(text: &str) -> ParsedLine {
    let text = text.trim_end_matches(['\r', '\n']);
    let trimmed = text.trim_start();
    if trimmed.starts_with('{')
        && let Ok(Value::Object(object)) = serde_json::from_str::<Value>(trimmed)
    {
        return from_json(object, text);
    }
    if let Some(pairs) = logfmt_pairs(trimmed) {
        return from_logfmt(pairs, text);
    }
    if let Some((level, message)) = text_format_level(trimmed) {
        return ParsedLine {
            level: Some(level),
            message: message.to_string(),
            fields: None,
        };
    }
    ParsedLine {
        level: None,
        message: text.to_string(),
        fields: None,
    }
}

fn from_json(mut object: Map<String, Value>, text: &str) -> ParsedLine {
    let level =
        take_string(&mut object, &["level", "lvl", "severity"]).and_then(|l| normalise_level(&l));
    let mut message = take_string(&mut object, &["message", "msg"]);
    // tracing-subscriber's json format nests the message in `fields`.
    if let Some(Value::Object(mut nested)) = object.remove("fields") {
        if message.is_none() {
            message = take_string(&mut nested, &["message", "msg"]);
        }
        for (key, value) in nested {
            object.entry(key).or_insert(value);
        }
    }
    object.remove("timestamp");
    object.remove("time");
    object.remove("ts");
    ParsedLine {
        level,
        message: message.unwrap_or_else(|| text.to_string()),
        fields: if object.is_empty() {
            None
        } else {
            Some(Value::Object(object))
        },
    }
}

/// The level of a line in `tracing-subscriber`'s text format (`2026-12-07T10:00:00Z  WARN
/// target: message`, the timestamp optional) or `env_logger`'s
/// (`[2026-12-07T10:00:00Z WARN target] message`), and the rest of the
/// line after the level. Only upper-case level names count: a line that
/// merely starts with the word "error" is not taken for one.
fn text_format_level(text: &str) -> Option<(String, &str)> {
    let text = text.strip_prefix('[').unwrap_or(text);
    let mut rest = text;
    let first = rest.split_whitespace().next()?;
    let looks_like_time = first.len() >= 10
        && first.as_bytes()[0].is_ascii_digit()
        && first.contains(['T', ':', '-']);
    if looks_like_time {
        rest = rest[first.len()..].trim_start();
    }
    let word = rest.split_whitespace().next()?;
    let level = match word {
        "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR" => word.to_ascii_lowercase(),
        _ => return None,
    };
    let message = rest[word.len()..].trim_start();
    if message.is_empty() {
        return None;
    }
    Some((normalise_level(&level)?, message))
}

fn take_string(object: &mut Map<String, Value>, keys: &[&str]) -> Option<String> {
    for key in keys {
        if let Some(value) = object.remove(*key) {
            return Some(match value {
                Value::String(text) => text,
                other => other.to_string(),
            });
        }
    }
    None
}

/// Splits a logfmt line into pairs; `None` when it is not logfmt (every
/// token must be `key=value` and a level or message key must be present).
fn logfmt_pairs(text: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return None;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(escaped) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    other => value.push(other),
                }
            }
            if !closed {
                return None;
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        pairs.push((key, value));
    }
    let has_marker = pairs
        .iter()
        .any(|(key, _)| matches!(key.as_str(), "level" | "lvl" | "msg" | "message"));
    (pairs.len() >= 2 && has_marker).then_some(pairs)
}

fn from_logfmt(pairs: Vec<(String, String)>, text: &str) -> ParsedLine {
    let mut level = None;
    let mut message = None;
    let mut fields = Map::new();
    for (key, value) in pairs {
        match key.as_str() {
            "level" | "lvl" if level.is_none() => level = normalise_level(&value),
            "msg" | "message" if message.is_none() => message = Some(value),
            "time" | "ts" | "timestamp" => {}
            _ => {
                fields.insert(key, Value::String(value));
            }
        }
    }
    ParsedLine {
        level,
        message: message.unwrap_or_else(|| text.to_string()),
        fields: (!fields.is_empty()).then_some(Value::Object(fields)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_json_lines_give_level_message_and_fields() {
        let line = r#"{"timestamp":"2026-11-25T10:00:00.000Z","level":"WARN","fields":{"message":"slow request","ms":812},"target":"hello"}"#;
        let parsed = parse_line(line);
        assert_eq!(parsed.level.as_deref(), Some("warn"));
        assert_eq!(parsed.message, "slow request");
        let fields = parsed.fields.unwrap();
        assert_eq!(fields["ms"], 812);
        assert_eq!(fields["target"], "hello");
        assert!(fields.get("timestamp").is_none());
    }

    #[test]
    fn logfmt_lines_give_level_message_and_fields() {
        let parsed = parse_line(r#"time=2026 level=error msg="db down" retry=3"#);
        assert_eq!(parsed.level.as_deref(), Some("error"));
        assert_eq!(parsed.message, "db down");
        assert_eq!(parsed.fields.unwrap()["retry"], "3");
    }

    #[test]
    fn tracing_and_env_logger_text_lines_give_their_level() {
        let parsed = parse_line("2026-12-07T10:00:00.123456Z  WARN hello: slow request ms=812");
        assert_eq!(parsed.level.as_deref(), Some("warn"));
        assert_eq!(parsed.message, "hello: slow request ms=812");
        let parsed = parse_line("[2026-12-07T10:00:00Z ERROR hello] db down");
        assert_eq!(parsed.level.as_deref(), Some("error"));
        let parsed = parse_line("INFO starting");
        assert_eq!(parsed.level.as_deref(), Some("info"));
    }

    #[test]
    fn plain_text_is_kept_whole() {
        for text in [
            "listening on 127.0.0.1:3000",
            "a=b",
            "{not json",
            "x=1 y=2",
            "error: not a level word in upper case",
            "2026-12-07 is a date",
            "WARN",
        ] {
            let parsed = parse_line(text);
            assert_eq!(parsed.level, None, "{text}");
            assert_eq!(parsed.message, text);
        }
    }
}
