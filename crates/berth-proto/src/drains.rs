//! Log drains: where an app's lines are also sent as they are stored
//! (`berth logs drain add URL`), and how a drain's URL is read.

use serde::{Deserialize, Serialize};

/// How a drain delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum DrainKind {
    /// `http://` or `https://`: batches of NDJSON lines, POSTed.
    Http,
    /// `otlp+http://` or `otlp+https://`: OTLP/HTTP logs, JSON encoding.
    Otlp,
    /// `syslog+tcp://HOST:PORT`: RFC 5424 messages, octet-counted (RFC 6587).
    SyslogTcp,
    /// `syslog+tls://HOST:PORT`: the same over TLS (RFC 5425).
    SyslogTls,
}

impl DrainKind {
    /// Its name in `berth logs drain list`.
    pub fn as_str(self) -> &'static str {
        match self {
            DrainKind::Http => "http",
            DrainKind::Otlp => "otlp",
            DrainKind::SyslogTcp => "syslog-tcp",
            DrainKind::SyslogTls => "syslog-tls",
        }
    }
}

/// A drain's URL, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainTarget {
    /// How it delivers.
    pub kind: DrainKind,
    /// For HTTP and OTLP: the URL to POST to (`https://…`); for syslog:
    /// `HOST:PORT`.
    pub address: String,
    /// The host name (for TLS).
    pub host: String,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// The longest drain URL taken.
pub const MAX_DRAIN_URL: usize = 2048;

impl DrainTarget {
    /// Reads a drain URL: `https://logs.example.com/ingest`,
    /// `otlp+https://collector:4318/v1/logs`, `syslog+tls://logs.example.com:6514`.
    pub fn parse(url: &str) -> Result<DrainTarget, String> {
        if url.len() > MAX_DRAIN_URL {
            return Err(format!("a drain URL is at most {MAX_DRAIN_URL} bytes"));
        }
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("`{url}` holds a space or a control character"));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!(
                "`{url}` is not a URL (such as https://logs.example.com/ingest)"
            ));
        };
        let (kind, tls) = match scheme.to_ascii_lowercase().as_str() {
            "http" => (DrainKind::Http, false),
            "https" => (DrainKind::Http, true),
            "otlp+http" => (DrainKind::Otlp, false),
            "otlp+https" => (DrainKind::Otlp, true),
            "syslog+tcp" | "syslog" => (DrainKind::SyslogTcp, false),
            "syslog+tls" => (DrainKind::SyslogTls, true),
            other => {
                return Err(format!(
                    "unknown drain scheme `{other}` (use https, http, otlp+https, otlp+http, syslog+tls or syslog+tcp)"
                ));
            }
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(format!(
                "`{url}`: credentials in a drain URL would be shown with it; put a token in the query instead (its values are hidden when drains are listed)"
            ));
        }
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| format!("`{url}` has no host (such as logs.example.com)"))?;
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(c))
        {
            return Err(format!("`{host}` in `{url}` is not a host name or address"));
        }
        let port = match port {
            Some(port) => Some(
                port.parse::<u16>()
                    .ok()
                    .filter(|port| *port > 0)
                    .ok_or_else(|| format!("`{port}` in `{url}` is not a port"))?,
            ),
            None => None,
        };
        let address = match kind {
            DrainKind::Http | DrainKind::Otlp => {
                let scheme = if tls { "https" } else { "http" };
                format!("{scheme}://{authority}{path}")
            }
            DrainKind::SyslogTcp | DrainKind::SyslogTls => {
                if !path.is_empty() && path != "/" {
                    return Err(format!("a syslog drain takes HOST:PORT only, not `{path}`"));
                }
                let port = port.ok_or_else(|| {
                    format!("`{url}` needs a port (syslog is usually 6514 over TLS, 514 over TCP)")
                })?;
                format!("{host}:{port}")
            }
        };
        Ok(DrainTarget {
            kind,
            address,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            tls,
        })
    }
}

/// `host` and `port` of `host:port` or `[v6]:port` (port optional).
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.is_empty() {
        return None;
    }
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        let host = &authority[..=end];
        let rest = &authority[end + 1..];
        return match rest.strip_prefix(':') {
            Some(port) => Some((host, Some(port))),
            None if rest.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((authority, None)),
    }
}

/// Body of `POST /v1/apps/{app}/drains`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddDrain {
    /// Where lines go (see [`DrainTarget::parse`]).
    pub url: String,
    /// A CA certificate (PEM) to trust for the drain's TLS, beside the
    /// system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Lines kept for a drain that is down before the oldest are dropped
    /// (default [`DEFAULT_DRAIN_BUFFER`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_lines: Option<u64>,
}

/// Lines a drain that is down may fall behind before its oldest are dropped.
pub const DEFAULT_DRAIN_BUFFER: u64 = 100_000;

/// A drain, as `berth logs drain list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DrainInfo {
    /// Its id.
    pub id: i64,
    /// The app whose lines it gets.
    pub app: String,
    /// Where they go.
    pub url: String,
    /// How.
    pub kind: DrainKind,
    /// Lines a drain that is down may fall behind.
    pub buffer_lines: u64,
    /// Lines delivered so far.
    pub delivered: u64,
    /// Lines dropped: the drain fell further behind than its buffer.
    pub dropped: u64,
    /// Why the last delivery failed, while it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it was added (RFC 3339).
    pub created_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scheme_reads_to_its_kind_and_address() {
        let cases = [
            (
                "https://logs.example.com/ingest?token=abc",
                DrainKind::Http,
                "https://logs.example.com/ingest?token=abc",
                true,
            ),
            (
                "http://127.0.0.1:9000/x",
                DrainKind::Http,
                "http://127.0.0.1:9000/x",
                false,
            ),
            (
                "otlp+https://collector:4318/v1/logs",
                DrainKind::Otlp,
                "https://collector:4318/v1/logs",
                true,
            ),
            (
                "syslog+tls://logs.example.com:6514",
                DrainKind::SyslogTls,
                "logs.example.com:6514",
                true,
            ),
            (
                "syslog+tcp://[::1]:514",
                DrainKind::SyslogTcp,
                "[::1]:514",
                false,
            ),
        ];
        for (url, kind, address, tls) in cases {
            let target = DrainTarget::parse(url).unwrap();
            assert_eq!(
                (target.kind, target.address.as_str(), target.tls),
                (kind, address, tls),
                "{url}"
            );
        }
        assert_eq!(
            DrainTarget::parse("syslog+tcp://[::1]:514").unwrap().host,
            "::1"
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases = [
            ("logs.example.com", "is not a URL"),
            ("ftp://x", "unknown drain scheme `ftp`"),
            ("https://", "has no host"),
            ("https://user:pw@x/", "credentials"),
            ("https://x:99999/", "`99999`"),
            ("syslog+tls://x", "needs a port"),
            ("syslog+tcp://x:514/path", "HOST:PORT only"),
            ("https://x y/", "a space"),
            ("https://ex%61mple/", "not a host name"),
        ];
        for (url, expected) in cases {
            let err = DrainTarget::parse(url).unwrap_err();
            assert!(err.contains(expected), "{url}: {err}");
        }
    }
}
