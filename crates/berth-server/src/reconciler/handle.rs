//! The reconciler's handle (what the API, deploys and the autoscaler hold)
//! and the messages the loop receives from instances and the router.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::{InstanceInfo, ProcessGroupStatus};
use berth_runtime::ExitCause;
use tokio::sync::{Notify, broadcast, mpsc, watch};

/// What the API sees of the actual state.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Per app.
    pub apps: HashMap<String, AppActual>,
    /// Passes the reconciler made since the server started.
    pub passes: u64,
    /// When it was published: instances' uptimes are as of then.
    pub published: Option<tokio::time::Instant>,
    /// Instances that exited in the last [`ENDED_KEPT`], with how long
    /// each ran: the meter counts an instance's last second from this.
    pub ended: Vec<EndedInstance>,
}

/// How long an exited instance stays in [`Snapshot::ended`].
pub const ENDED_KEPT: Duration = Duration::from_secs(60);

/// An instance that exited.
#[derive(Debug, Clone, PartialEq)]
pub struct EndedInstance {
    /// Its id.
    pub id: String,
    /// Its app.
    pub app: String,
    /// Its process group.
    pub process: String,
    /// The release it ran.
    pub release: u64,
    /// From its start to its exit.
    pub ran: Duration,
}

/// One app's actual state.
#[derive(Debug, Default, Clone)]
pub struct AppActual {
    /// The release the groups are of (the app's target).
    pub release: Option<u64>,
    /// Every instance, oldest first.
    pub instances: Vec<InstanceInfo>,
    /// Every process group of the target release.
    pub groups: Vec<ProcessGroupStatus>,
    /// What its `[edge]` rules refused.
    pub edge: berth_proto::EdgeCounts,
    /// What the router counted for it.
    pub traffic: TrafficCounts,
    /// Per process group: restarts, OOM kills, cold starts.
    pub lifecycle: std::collections::BTreeMap<String, super::lifecycle::GroupLifecycle>,
}

/// The router's counts for one app, as of the last pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrafficCounts {
    /// Requests routed (and TCP service connections made).
    pub requests: u64,
    /// Requests the router answered with a 5xx of its own.
    pub router_errors: u64,
    /// Requests held now.
    pub held: usize,
    /// TCP service connections open now.
    pub tcp_open: usize,
    /// Answers by status class, latency and bytes.
    pub http: berth_router::HttpFigures,
}

/// Sent when an instance of a release fails before it became healthy, so a
/// waiting deploy can fail at once.
#[derive(Debug, Clone)]
pub struct StartFailure {
    /// The app.
    pub app: String,
    /// The release the instance ran.
    pub release: u64,
    /// The instance.
    pub instance: String,
    /// What happened.
    pub reason: String,
}

/// A handle to the running reconciler.
#[derive(Clone)]
pub struct ReconcilerHandle {
    pub(super) nudge: Arc<Notify>,
    /// Set with each nudge: the store changed, the held desired state is old.
    pub(super) stale: Arc<std::sync::atomic::AtomicBool>,
    pub(super) snapshot: watch::Receiver<Arc<Snapshot>>,
    pub(super) failures: broadcast::Sender<StartFailure>,
    pub(super) messages: mpsc::UnboundedSender<Message>,
}

impl ReconcilerHandle {
    /// Asks the loop to converge now.
    pub fn nudge(&self) {
        self.stale.store(true, std::sync::atomic::Ordering::Release);
        self.nudge.notify_one();
    }

    /// Asks the loop to converge now and returns once a pass that began
    /// after the ask has published (or `at_most` has passed): a change
    /// just written to the store is then in the route table.
    pub async fn nudge_and_wait(&self, at_most: Duration) {
        let mut snapshots = self.snapshot.clone();
        snapshots.borrow_and_update();
        self.nudge();
        // The first publish may close a pass that read the store before
        // the change; the second is of a pass begun after it.
        let _ = tokio::time::timeout(at_most, async {
            for _ in 0..2 {
                if snapshots.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// Runs `count` instances of `group` from now, ahead of the store (the
    /// autoscaler persists the same count right after): a cold start does
    /// not wait for a disk write.
    pub fn set_count(&self, app: &str, group: &str, count: u32) {
        let _ = self.messages.send(Message::SetCount {
            app: app.to_string(),
            group: group.to_string(),
            count,
        });
    }

    /// The latest actual state.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Changes of the actual state.
    pub fn watch_snapshot(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// Start failures, from now on.
    pub fn start_failures(&self) -> broadcast::Receiver<StartFailure> {
        self.failures.subscribe()
    }
}

pub(super) enum Message {
    Healthy {
        id: String,
        after: Duration,
    },
    StartFailed {
        id: String,
        reason: String,
    },
    Unhealthy {
        id: String,
        reason: String,
    },
    Recovered {
        id: String,
    },
    Exited {
        id: String,
        cause: ExitCause,
    },
    SetCount {
        app: String,
        group: String,
        count: u32,
    },
    /// A request is held at the router for `app`, which has no instance.
    Wake {
        app: String,
    },
    /// Start a one-off process (see `oneoff.rs`).
    RunOnce {
        spec: Box<berth_runtime::InstanceSpec>,
        output: berth_runtime::OutputSink,
        reply: tokio::sync::oneshot::Sender<
            Result<berth_runtime::RunningInstance, crate::launch::StartError>,
        >,
    },
    /// A one-off process exited.
    OneOffExited {
        id: String,
    },
}
