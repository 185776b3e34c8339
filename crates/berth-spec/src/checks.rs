//! Health checks, layer-4 services and the stop signal: how berth talks to
//! an instance besides HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::duration_ms;

/// A health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// `None`: a TCP connect to the port; `Some(path)`: an HTTP request for
    /// `path` that must answer 2xx or 3xx.
    pub http_path: Option<String>,
    /// Time between checks once the instance is up.
    #[serde(with = "duration_ms")]
    pub interval: Duration,
    /// How long one check may take.
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    /// The port checked; `None`: the instance's `PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The HTTP method; `None`: GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Headers sent with an HTTP check.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Failures in this long after start do not count against the instance
    /// (it still has to pass before the deploy goes on).
    #[serde(default, with = "duration_ms")]
    pub grace_period: Duration,
    /// The process groups it applies to; `None`: the groups that serve HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<String>>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            http_path: None,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            port: None,
            method: None,
            headers: BTreeMap::new(),
            grace_period: Duration::ZERO,
            processes: None,
        }
    }
}

impl HealthCheck {
    /// The HTTP method, upper-cased (GET by default).
    pub fn method(&self) -> &str {
        self.method.as_deref().unwrap_or("GET")
    }
}

impl crate::AppSpec {
    /// Whether instances of `process` serve `service`: the groups it names,
    /// else those that serve HTTP.
    pub fn serves_tcp(&self, service: &TcpService, process: &str) -> bool {
        match &service.processes {
            Some(groups) => groups.iter().any(|group| group == process),
            None => self.serves_http(process),
        }
    }

    /// The ports instances of `process` listen on themselves (fly's
    /// `internal_port`s): its HTTP port and its TCP services' ports.
    pub fn fixed_ports(&self, process: &str) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .http
            .internal_port
            .filter(|_| self.serves_http(process))
            .into_iter()
            .collect();
        for service in &self.tcp_services {
            if self.serves_tcp(service, process) && !ports.contains(&service.internal_port) {
                ports.push(service.internal_port);
            }
        }
        ports
    }
}

/// A service the router forwards as a byte stream (fly's `[[services]]`
/// whose ports have no `http` handler): a database, SMTP, a game server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpService {
    /// The port the app listens on inside its instance.
    pub internal_port: u16,
    /// The public ports that reach it.
    pub ports: Vec<TcpPort>,
    /// The groups whose instances serve it; `None`: the groups that serve
    /// HTTP (`web`, or fly's `app`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<String>>,
}

/// One public port of a [`TcpService`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpPort {
    /// The port the router listens on.
    pub port: u16,
    /// berth ends TLS (fly's `tls` handler) and forwards plaintext.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// The app gets a PROXY protocol v2 header with the client's address
    /// (fly's `proxy_proto` handler or `proxy_proto_options`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy_proto: bool,
    /// The PROXY protocol header is v1's text line
    /// (`proxy_proto_options = { version = "v1" }`), not v2.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy_proto_v1: bool,
}

/// The signal that asks an instance to stop (fly's `kill_signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum StopSignal {
    /// SIGTERM, the default.
    Sigterm,
    /// SIGINT, as Ctrl-C sends.
    Sigint,
    /// SIGQUIT.
    Sigquit,
    /// SIGHUP.
    Sighup,
    /// SIGUSR1.
    Sigusr1,
    /// SIGUSR2.
    Sigusr2,
    /// SIGKILL: no graceful stop at all.
    Sigkill,
    /// SIGABRT.
    Sigabrt,
    /// SIGALRM.
    Sigalrm,
}

impl StopSignal {
    const ALL: [StopSignal; 9] = [
        StopSignal::Sigterm,
        StopSignal::Sigint,
        StopSignal::Sigquit,
        StopSignal::Sighup,
        StopSignal::Sigusr1,
        StopSignal::Sigusr2,
        StopSignal::Sigkill,
        StopSignal::Sigabrt,
        StopSignal::Sigalrm,
    ];

    /// Reads `SIGINT`, `sigint` or `INT`.
    pub fn parse(text: &str) -> Option<StopSignal> {
        let upper = text.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Self::ALL
            .into_iter()
            .find(|signal| &signal.name()[3..] == bare)
    }

    /// Its name, `SIGINT`.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Sigterm => "SIGTERM",
            StopSignal::Sigint => "SIGINT",
            StopSignal::Sigquit => "SIGQUIT",
            StopSignal::Sighup => "SIGHUP",
            StopSignal::Sigusr1 => "SIGUSR1",
            StopSignal::Sigusr2 => "SIGUSR2",
            StopSignal::Sigkill => "SIGKILL",
            StopSignal::Sigabrt => "SIGABRT",
            StopSignal::Sigalrm => "SIGALRM",
        }
    }

    /// Its number on Linux (the same on x86-64 and arm64).
    pub fn number(self) -> i32 {
        match self {
            StopSignal::Sighup => 1,
            StopSignal::Sigint => 2,
            StopSignal::Sigquit => 3,
            StopSignal::Sigabrt => 6,
            StopSignal::Sigkill => 9,
            StopSignal::Sigusr1 => 10,
            StopSignal::Sigusr2 => 12,
            StopSignal::Sigalrm => 14,
            StopSignal::Sigterm => 15,
        }
    }

    /// The names [`StopSignal::parse`] accepts, for error messages.
    pub fn known() -> String {
        Self::ALL.map(StopSignal::name).join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_parse_by_any_spelling_and_map_to_linux_numbers() {
        assert_eq!(StopSignal::parse("SIGINT"), Some(StopSignal::Sigint));
        assert_eq!(StopSignal::parse("sigusr1"), Some(StopSignal::Sigusr1));
        assert_eq!(StopSignal::parse("QUIT"), Some(StopSignal::Sigquit));
        assert_eq!(StopSignal::parse("SIGSTOP"), None);
        let json = serde_json::to_string(&StopSignal::Sigusr2).unwrap();
        assert_eq!(json, "\"SIGUSR2\"");
        assert!(StopSignal::known().contains("SIGHUP"));
    }
}
