//! What a batch of lines looks like on the wire for each kind of drain:
//! NDJSON, OTLP/HTTP JSON, and RFC 5424 syslog messages framed by octet
//! counting (RFC 6587).

use berth_logs::StoredLine;
use berth_proto::LogLine;
use serde_json::{Value, json};

/// NDJSON: one [`LogLine`] (as `berth logs --json` prints it) per line.
pub fn ndjson(batch: &[StoredLine]) -> Vec<u8> {
    let mut body = Vec::new();
    for stored in batch {
        if let Ok(text) = serde_json::to_vec(&stored.line) {
            body.extend(text);
            body.push(b'\n');
        }
    }
    body
}

/// OTLP severity number and text of a level (the spec's TRACE 1, DEBUG 5,
/// INFO 9, WARN 13, ERROR 17).
fn otlp_severity(level: Option<&str>) -> (u8, &'static str) {
    match level {
        Some("trace") => (1, "TRACE"),
        Some("debug") => (5, "DEBUG"),
        Some("info") => (9, "INFO"),
        Some("warn") => (13, "WARN"),
        Some("error") => (17, "ERROR"),
        _ => (0, ""),
    }
}

fn unix_nanos(at: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(at)
        .ok()
        .and_then(|at| at.timestamp_nanos_opt())
        .unwrap_or(0)
}

fn any_value(value: &Value) -> Value {
    match value {
        Value::String(text) => json!({ "stringValue": text }),
        Value::Bool(flag) => json!({ "boolValue": flag }),
        Value::Number(number) if number.is_i64() => json!({ "intValue": number.to_string() }),
        Value::Number(number) => json!({ "doubleValue": number.as_f64() }),
        other => json!({ "stringValue": other.to_string() }),
    }
}

fn attribute(key: &str, value: Value) -> Value {
    json!({ "key": key, "value": any_value(&value) })
}

/// OTLP/HTTP logs in the JSON encoding: one resource (`service.name` the
/// app), one scope (`berth`), a record per line with its level, body,
/// fields and source as attributes.
pub fn otlp(app: &str, batch: &[StoredLine]) -> Vec<u8> {
    let records: Vec<Value> = batch
        .iter()
        .map(|stored| {
            let line = &stored.line;
            let (number, text) = otlp_severity(line.level.as_deref());
            let mut attributes = vec![
                attribute("berth.process", json!(line.process)),
                attribute("berth.instance", json!(line.instance)),
                attribute("berth.release", json!(line.release)),
                attribute("log.iostream", json!(line.stream.as_str())),
            ];
            if let Some(Value::Object(fields)) = &line.fields {
                for (key, value) in fields {
                    attributes.push(attribute(key, value.clone()));
                }
            }
            let nanos = unix_nanos(&line.at).to_string();
            json!({
                "timeUnixNano": nanos,
                "observedTimeUnixNano": nanos,
                "severityNumber": number,
                "severityText": text,
                "body": { "stringValue": line.message },
                "attributes": attributes,
            })
        })
        .collect();
    let document = json!({
        "resourceLogs": [{
            "resource": { "attributes": [attribute("service.name", json!(app))] },
            "scopeLogs": [{
                "scope": { "name": "berth", "version": env!("CARGO_PKG_VERSION") },
                "logRecords": records,
            }],
        }],
    });
    serde_json::to_vec(&document).unwrap_or_default()
}

/// RFC 5424 severity of a level (facility `user`, 1).
fn syslog_priority(level: Option<&str>) -> u8 {
    let severity = match level {
        Some("error") => 3,
        Some("warn") => 4,
        Some("info") => 6,
        Some("debug") | Some("trace") => 7,
        // Unlevelled lines: notice from stderr, info from stdout.
        _ => 6,
    };
    8 + severity
}

/// A syslog header field: printable US-ASCII, no spaces, at most `max`.
fn header_field(text: &str, max: usize) -> String {
    let field: String = text
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if field.is_empty() { "-".into() } else { field }
}

/// One RFC 5424 message for `line` from `host`, with its fields after the
/// message as `key=value`.
pub fn syslog_message(host: &str, line: &LogLine) -> String {
    let mut message = line.message.replace(['\r', '\n'], " ");
    if let Some(Value::Object(fields)) = &line.fields {
        for (key, value) in fields {
            match value {
                Value::String(text) => message.push_str(&format!(" {key}={text}")),
                other => message.push_str(&format!(" {key}={other}")),
            }
        }
    }
    format!(
        "<{}>1 {} {} {} {} {} - {message}",
        syslog_priority(line.level.as_deref()),
        header_field(&line.at, 128),
        header_field(host, 255),
        header_field(&line.app, 48),
        header_field(&line.instance, 128),
        header_field(&line.process, 32),
    )
}

/// The batch as octet-counted syslog frames (`LEN SP MESSAGE`).
pub fn syslog_frames(host: &str, batch: &[StoredLine]) -> Vec<u8> {
    let mut frames = Vec::new();
    for stored in batch {
        let message = syslog_message(host, &stored.line);
        frames.extend(format!("{} {message}", message.len()).into_bytes());
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(level: Option<&str>, message: &str) -> StoredLine {
        StoredLine {
            id: 7,
            line: LogLine {
                at: "2026-12-07T10:00:00.000001Z".into(),
                app: "shop".into(),
                process: "web".into(),
                instance: "web-abc".into(),
                release: 3,
                stream: berth_proto::LogStream::Stdout,
                level: level.map(str::to_string),
                message: message.into(),
                fields: Some(json!({ "user_id": 42, "path": "/cart" })),
                colored: None,
            },
        }
    }

    #[test]
    fn syslog_messages_follow_rfc_5424_and_are_octet_counted() {
        let message = syslog_message("host-1", &line(Some("warn"), "slow\nrequest").line);
        assert_eq!(
            message,
            "<12>1 2026-12-07T10:00:00.000001Z host-1 shop web-abc web - slow request path=/cart user_id=42"
        );
        let frames = syslog_frames("host-1", &[line(Some("error"), "a"), line(None, "b")]);
        let text = String::from_utf8(frames).unwrap();
        let (length, rest) = text.split_once(' ').unwrap();
        let length: usize = length.parse().unwrap();
        assert!(rest[..length].starts_with("<11>1 "));
        assert!(
            rest[length..]
                .split_once(' ')
                .unwrap()
                .1
                .starts_with("<14>1 ")
        );
    }

    #[test]
    fn otlp_records_carry_severity_body_and_attributes() {
        let body = otlp("shop", &[line(Some("error"), "boom")]);
        let document: Value = serde_json::from_slice(&body).unwrap();
        let resource = &document["resourceLogs"][0];
        assert_eq!(
            resource["resource"]["attributes"][0],
            json!({ "key": "service.name", "value": { "stringValue": "shop" } })
        );
        let record = &resource["scopeLogs"][0]["logRecords"][0];
        assert_eq!(record["severityNumber"], 17);
        assert_eq!(record["body"]["stringValue"], "boom");
        assert_eq!(record["timeUnixNano"], "1796637600000001000");
        let attributes = record["attributes"].as_array().unwrap();
        assert!(attributes.contains(&json!({ "key": "user_id", "value": { "intValue": "42" } })));
    }

    #[test]
    fn ndjson_is_one_log_line_per_line() {
        let body = ndjson(&[line(None, "a"), line(None, "b")]);
        let lines: Vec<LogLine> = String::from_utf8(body)
            .unwrap()
            .lines()
            .map(|text| serde_json::from_str(text).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].message, "b");
    }
}
