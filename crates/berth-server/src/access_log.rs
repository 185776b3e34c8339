//! The router's access log: one line per request, stored with the app's
//! logs (process `router`, instance the one that answered), searchable
//! like any: `berth logs --where 'process=router status>=500'`. Lines go
//! to the log store already parsed; when its writer is too far behind they
//! are dropped and counted, never queued without bound.

use std::sync::Arc;

use berth_logs::{LogSource, LogStore, ParsedLine};
use berth_proto::LogStream;
use berth_router::{AccessLog, AccessRecord};

/// The process group access log lines are stored under.
pub const ROUTER_PROCESS: &str = "router";

/// A sink that stores each record in `logs`.
pub fn sink(logs: Arc<LogStore>) -> AccessLog {
    Arc::new(move |record: AccessRecord| {
        let source = LogSource {
            app: record.app.clone(),
            process: ROUTER_PROCESS.into(),
            instance: record
                .instance
                .clone()
                .unwrap_or_else(|| ROUTER_PROCESS.into()),
            release: 0,
        };
        logs.append_parsed(&source, LogStream::Stdout, parsed(&record));
    })
}

/// The stored line, parsed already: level, message and fields.
fn parsed(record: &AccessRecord) -> ParsedLine {
    let level = match record.status {
        500.. => "error",
        400..=499 => "warn",
        _ => "info",
    };
    let millis = record.duration.as_secs_f64() * 1000.0;
    let millis = (millis * 1000.0).round() / 1000.0;
    ParsedLine {
        level: Some(level.to_string()),
        message: format!(
            "{} {} {} {millis}ms",
            record.method, record.path, record.status
        ),
        fields: Some(serde_json::json!({
            "method": record.method,
            "path": record.path,
            "status": record.status,
            "duration_ms": millis,
            "bytes": record.bytes_out,
            "client": record.client.to_string(),
            "instance": record.instance,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_a_json_line_with_its_level_from_the_status() {
        let record = AccessRecord {
            app: "shop".into(),
            method: "GET".into(),
            path: "/cart".into(),
            status: 503,
            duration: std::time::Duration::from_micros(12_345),
            bytes_out: 42,
            client: "203.0.113.9".parse().unwrap(),
            instance: Some("web-1".into()),
        };
        let parsed = parsed(&record);
        assert_eq!(parsed.level.as_deref(), Some("error"));
        assert_eq!(parsed.message, "GET /cart 503 12.345ms");
        let fields = parsed.fields.unwrap();
        assert_eq!(fields["status"], 503);
        assert_eq!(fields["bytes"], 42);
        assert_eq!(fields["client"], "203.0.113.9");
        assert_eq!(fields["instance"], "web-1");
    }
}
