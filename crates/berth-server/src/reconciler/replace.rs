//! How a process group moves from one release to the next: the one home
//! of the rules on instances side by side — how many fit at once, and
//! whether old and new may overlap (a fixed port shared without
//! namespaces, a volume that is not `shared` and `[deploy] strategy`).

use berth_spec::{AppSpec, DeployStrategy};

/// The most instances of `process` that can run side by side: one when it
/// listens on a fixed port and instances share the host's network (no
/// namespaces of their own, so no two can bind it); else no limit. The
/// count the reconciler runs, the count a deploy waits for and the counts
/// `berth scale` accepts all come from it.
pub(crate) fn instance_ceiling(spec: &AppSpec, process: &str, isolated: bool) -> Option<u32> {
    (!isolated && !spec.fixed_ports(process).is_empty()).then_some(1)
}

/// How old instances of a group give way to new ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Replacement {
    /// Old instances stop and exit before any new one starts (downtime).
    StopFirst(StopFirstBecause),
    /// New instances start; an old one leaves as each new one is healthy.
    Rolling,
    /// New instances all start; old ones leave once all are healthy.
    BlueGreen,
    /// One new instance starts; once it is healthy, the rest roll.
    Canary,
}

/// Why a group is replaced stop-first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StopFirstBecause {
    /// It mounts this volume, which is not `shared`.
    Volume(String),
    /// It listens on this fixed port without a network of its own.
    FixedPort(u16),
    /// `[deploy] strategy = "immediate"`.
    Immediate,
}

impl std::fmt::Display for StopFirstBecause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopFirstBecause::Volume(volume) => write!(
                f,
                "it mounts volume `{volume}`, which two processes must not write at once (mark it shared = true if they may)"
            ),
            StopFirstBecause::FixedPort(port) => write!(
                f,
                "it listens on the fixed port {port} and instances share one network without root"
            ),
            StopFirstBecause::Immediate => f.write_str("the deploy strategy is \"immediate\""),
        }
    }
}

/// How `process` of `spec` is replaced.
pub(crate) fn replacement(spec: &AppSpec, process: &str, isolated: bool) -> Replacement {
    if let Some(mount) = spec
        .mounts
        .iter()
        .find(|mount| mount.applies_to(process) && !mount.shared)
    {
        return Replacement::StopFirst(StopFirstBecause::Volume(mount.source.clone()));
    }
    if instance_ceiling(spec, process, isolated).is_some()
        && let Some(&port) = spec.fixed_ports(process).first()
    {
        return Replacement::StopFirst(StopFirstBecause::FixedPort(port));
    }
    match spec.deploy.strategy {
        DeployStrategy::Immediate => Replacement::StopFirst(StopFirstBecause::Immediate),
        DeployStrategy::Rolling => Replacement::Rolling,
        DeployStrategy::Bluegreen => Replacement::BlueGreen,
        DeployStrategy::Canary => Replacement::Canary,
    }
}

impl Replacement {
    /// Old instances that may still run while `healthy_new` of `want` new
    /// ones pass their checks.
    pub(crate) fn old_allowed(&self, want: usize, healthy_new: usize, old: usize) -> usize {
        match self {
            Replacement::StopFirst(_) => 0,
            Replacement::Rolling | Replacement::Canary => want.saturating_sub(healthy_new),
            Replacement::BlueGreen if healthy_new >= want => 0,
            Replacement::BlueGreen => old,
        }
    }

    /// New instances that may start now, of `missing`, with `current` new
    /// ones (`healthy_new` of them healthy) and old ones still about.
    pub(crate) fn may_start(
        &self,
        missing: usize,
        current: usize,
        healthy_new: usize,
        old_alive: bool,
    ) -> usize {
        match self {
            // Not one new instance while an old one has not exited.
            Replacement::StopFirst(_) if old_alive => 0,
            // One first, and the rest once it is healthy.
            Replacement::Canary if old_alive && healthy_new == 0 => {
                missing.min(1usize.saturating_sub(current))
            }
            _ => missing,
        }
    }
}
