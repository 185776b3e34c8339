//! What the loop holds between passes: each instance it runs, each
//! group's restart back-off, counts set ahead of the store, and the
//! routes it last published.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::InstanceState;
use berth_router::Backend;
use berth_runtime::RunningInstance;
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Starting,
    Running,
    Unhealthy,
    Draining,
    Stopping,
}

impl Phase {
    pub(super) fn is_live(self) -> bool {
        matches!(self, Phase::Starting | Phase::Running | Phase::Unhealthy)
    }

    pub(super) fn wire(self) -> InstanceState {
        match self {
            Phase::Starting => InstanceState::Starting,
            Phase::Running => InstanceState::Running,
            Phase::Unhealthy => InstanceState::Unhealthy,
            Phase::Draining => InstanceState::Draining,
            Phase::Stopping => InstanceState::Stopping,
        }
    }
}

pub(super) struct Instance {
    pub(super) id: String,
    pub(super) app: String,
    pub(super) process: String,
    pub(super) release: u64,
    pub(super) port: Option<u16>,
    pub(super) started: Instant,
    pub(super) phase: Phase,
    pub(super) running: RunningInstance,
    pub(super) backend: Option<Arc<Backend>>,
    /// Where TCP services reach it (their own connection counts, apart
    /// from HTTP's limits): its address, the port given per service.
    pub(super) tcp_backend: Arc<Backend>,
    pub(super) kill_timeout: Duration,
    pub(super) watcher: JoinHandle<()>,
    pub(super) unhealthy_since: Option<Instant>,
    /// Started for a request while its group was at zero: when it came.
    pub(super) cold_since: Option<Instant>,
    /// Its network namespace and the bridges into it, when it has one.
    pub(super) network: Option<berth_runtime::net::InstanceNetwork>,
}

#[derive(Debug, Default, Clone)]
pub(super) struct Backoff {
    pub(super) failures: u32,
    pub(super) next_start: Option<Instant>,
    pub(super) last_cause: String,
    pub(super) last_failure: Option<Instant>,
}

impl Backoff {
    /// Failures after which the delay is the longest.
    pub(super) const LONGEST_AFTER: u32 = 8;

    pub(super) fn delay(failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(7);
        (Duration::from_millis(250) * 2u32.pow(exponent)).min(Duration::from_secs(30))
    }
}

/// How long a count set ahead of the store is trusted without the store
/// agreeing.
pub(super) const OVERRIDE_TTL: Duration = Duration::from_secs(10);

/// A count set ahead of the store.
pub(super) struct Override {
    pub(super) count: u32,
    pub(super) at: Instant,
    /// The store's count when the override was first applied: once the
    /// store says anything else (the autoscaler's write, or a manual
    /// `berth scale`), the store wins.
    pub(super) stored_then: Option<u32>,
}

/// What a TCP service forwards: public and internal port, TLS ended,
/// PROXY protocol sent and its version.
pub(super) type TcpShape = (u16, u16, bool, bool, u8);

/// What a published route is made of, to publish only on change.
#[derive(Debug, PartialEq)]
pub(super) struct RouteKey {
    pub(super) app: String,
    pub(super) backends: Vec<String>,
    pub(super) reason: Option<String>,
    pub(super) failing: bool,
    pub(super) admission: berth_router::Admission,
    pub(super) statics: Vec<berth_router::StaticDir>,
    pub(super) internal: berth_router::InternalAccess,
    /// Custom domains, each with whether it is `tls internal`.
    pub(super) domains: Vec<(String, bool)>,
    /// `force_https`, `hsts` and `tls = "internal"`.
    pub(super) https: (bool, bool, bool),
    pub(super) edge: berth_proto::EdgeRuleSet,
    /// Each TCP service and the instances behind it.
    pub(super) tcp: Vec<(TcpShape, Vec<String>)>,
    /// The static site the app is, if it is one.
    pub(super) site: Option<berth_router::Site>,
}
