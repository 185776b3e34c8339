//! Why a process of a release could not start: which side failed and
//! whether trying again soon can help. The reconciler picks its back-off
//! from it; deploys, jobs and events show it.

use std::fmt;

use berth_runtime::DriverError;

/// Which side of a start failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartSide {
    /// The app: its program is missing or will not execute.
    App,
    /// The app's configuration: an env source, a shared resource.
    Config,
    /// Its sandbox: namespaces, mounts, its cgroup or network.
    Sandbox,
    /// Berth itself: something of its data dir (a slug) is missing.
    Berth,
    /// The host: short of memory, processes, descriptors, disk or ports.
    Host,
}

impl fmt::Display for StartSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StartSide::App => "the app",
            StartSide::Config => "the app's configuration",
            StartSide::Sandbox => "its sandbox",
            StartSide::Berth => "berth",
            StartSide::Host => "the host",
        })
    }
}

/// A start that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError {
    /// Who failed.
    pub side: StartSide,
    /// Whether a try a little later may work (the host was short of
    /// something); otherwise only a new release or config will.
    pub transient: bool,
    /// What happened.
    pub message: String,
}

impl StartError {
    /// A failure of `side` that retrying will not fix.
    pub fn lasting(side: StartSide, message: impl Into<String>) -> StartError {
        StartError {
            side,
            transient: false,
            message: message.into(),
        }
    }

    /// A failure of the host that a later try may not meet.
    pub fn transient(message: impl Into<String>) -> StartError {
        StartError {
            side: StartSide::Host,
            transient: true,
            message: message.into(),
        }
    }
}

impl From<DriverError> for StartError {
    fn from(err: DriverError) -> StartError {
        let cause = std::error::Error::source(&err)
            .map(|source| format!(": {source}"))
            .unwrap_or_default();
        let message = format!("{err}{cause}");
        if err.is_transient() {
            return StartError::transient(message);
        }
        let side = match err {
            DriverError::Spawn { .. } => StartSide::App,
            DriverError::Sandbox { .. } => StartSide::Sandbox,
        };
        StartError::lasting(side, message)
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let retry = if self.transient {
            "a later try may work"
        } else {
            "retrying will not help until the release or its config changes"
        };
        write!(f, "{} (failed: {}; {retry})", self.message, self.side)
    }
}

impl std::error::Error for StartError {}
