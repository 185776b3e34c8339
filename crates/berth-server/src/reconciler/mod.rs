//! The reconciler: one loop that makes what runs match what the store wants.
//!
//! Desired state (each app's target release and per-group counts) is read
//! from the store; actual state (the instances) lives only in this loop,
//! which owns it. Every change elsewhere — a deploy, a scale, a rollback — is
//! a store write followed by [`ReconcilerHandle::nudge`]; instance exits and
//! health changes arrive as messages. After each pass the loop publishes a
//! route table for the router and a [`Snapshot`] for the API. Rollouts are
//! rolling: instances of the new release start and must pass their health
//! check before old ones leave the route table, and those drain their
//! in-flight requests before they get SIGTERM.

use berth_store::EventKind;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use berth_logs::{LogSource, LogStore};
use berth_proto::LogStream;
use berth_router::{AppTraffic, RouteTable};
use berth_runtime::Driver;
use berth_spec::AppSpec;
use berth_store::{DesiredApp, ReleaseRow, Store};
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod alerts;
mod converge;
mod handle;
pub(crate) mod hold;
mod inbox;
mod lifecycle;
mod oneoff;
mod publish;
mod replace;
mod start;
mod state;
mod stop;
mod wake;

#[cfg(test)]
pub(crate) use handle::AppActual;
pub use handle::{ENDED_KEPT, EndedInstance, ReconcilerHandle, Snapshot, StartFailure};
pub(crate) use replace::{Replacement, instance_ceiling, replacement};
pub(crate) use wake::FROM_ZERO;
pub use wake::Woken;

use handle::Message;
use state::{Backoff, Instance, Override, RouteKey};

/// How long a draining instance may take to finish its requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Consecutive failures after which a group counts as crash-looping.
const CRASH_LOOP_AFTER: u32 = 3;
/// An instance up this long resets its group's failure count.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How long an instance may stay unhealthy before it is replaced.
const REPLACE_UNHEALTHY_AFTER: Duration = Duration::from_secs(30);
/// Failed health checks in a row before an instance leaves the route table.
const UNHEALTHY_AFTER: u32 = 3;

/// The parts the reconciler drives.
pub struct ReconcilerParts {
    /// Desired state.
    pub store: Arc<Store>,
    /// Where instance output goes.
    pub logs: Arc<LogStore>,
    /// How instances run.
    pub driver: Arc<dyn Driver>,
    /// Makes instance specs (slug, env, volumes).
    pub launcher: crate::launch::Launcher,
    /// How instances' health is checked.
    pub probe: Arc<dyn crate::health::HealthProbe>,
    /// Where the route table goes.
    pub routes: watch::Sender<Arc<RouteTable>>,
    /// Told of each group a request started from zero (the reconciler
    /// decided and started it; the autoscaler records the count). `None`:
    /// such requests get 503 at once.
    pub wakes: Option<mpsc::UnboundedSender<Woken>>,
}

/// The loop's state.
pub struct Reconciler {
    parts: ReconcilerParts,
    instances: BTreeMap<String, Instance>,
    backoff: HashMap<(String, String), Backoff>,
    traffic: HashMap<String, Arc<AppTraffic>>,
    /// The edge rules set with `berth edge`, as last read: kept when a read
    /// fails, so a store error never drops a `deny`.
    edge_by_cli: HashMap<String, berth_proto::EdgeRuleSet>,
    /// Passes made since the server started.
    passes: u64,
    published_routes: Vec<RouteKey>,
    /// Counts set ahead of the store: (app, group) → the override.
    overrides: HashMap<(String, String), Override>,
    /// The desired state as last read from the store; read again after a
    /// nudge (someone wrote to the store) and on the tick, not for messages.
    desired: Option<Vec<DesiredApp>>,
    /// The router's side of a wake: it sends [`Message::Wake`] here.
    waker: Option<berth_router::Waker>,
    /// Groups woken in this pass, for the autoscaler.
    woken: Vec<Woken>,
    /// Groups woken and not yet started: when the request came.
    cold_pending: HashMap<(String, String), tokio::time::Instant>,
    /// Restarts, OOM kills and cold starts per group.
    lifecycles: lifecycle::Lifecycles,
    /// Groups crash-looping now (alerted once as each began).
    crash_looping: std::collections::HashSet<(String, String)>,
    /// Webhook events to queue with the pass's records: (event, app, body).
    pending_notifications: Vec<(&'static str, String, String)>,
    /// Events to store once routes are published (off the request path).
    pending_events: std::cell::RefCell<Vec<(String, EventKind, String)>>,
    /// Instances to journal once routes are published.
    pending_journal: Vec<(String, String, u32)>,
    /// Each release's decoded spec, or why it cannot be read.
    specs: HashMap<(String, u64, String), Option<Arc<AppSpec>>>,
    pending_stops: Vec<String>,
    /// Instances that exited lately, when (see [`Snapshot::ended`]).
    ended: std::collections::VecDeque<(Instant, EndedInstance)>,
    /// Release commands and job tasks running now, by id.
    one_offs: HashMap<String, berth_runtime::RunningInstance>,
    messages: mpsc::UnboundedSender<Message>,
    inbox: mpsc::UnboundedReceiver<Message>,
    nudge: Arc<Notify>,
    stale: Arc<std::sync::atomic::AtomicBool>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    failures: broadcast::Sender<StartFailure>,
}

impl Reconciler {
    /// Builds the loop and its handle; run it with [`Reconciler::run`].
    pub fn new(parts: ReconcilerParts) -> (Reconciler, ReconcilerHandle) {
        let (messages, inbox) = mpsc::unbounded_channel();
        let nudge = Arc::new(Notify::new());
        let (snapshot, snapshot_receiver) = watch::channel(Arc::new(Snapshot::default()));
        let (failures, _) = broadcast::channel(256);
        let waker = parts.wakes.as_ref().map(|_| {
            let messages = messages.clone();
            berth_router::Waker(Arc::new(move |app: &str| {
                let _ = messages.send(Message::Wake {
                    app: app.to_string(),
                });
            }))
        });
        let stale = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let handle = ReconcilerHandle {
            nudge: nudge.clone(),
            stale: stale.clone(),
            snapshot: snapshot_receiver,
            failures: failures.clone(),
            messages: messages.clone(),
        };
        let reconciler = Reconciler {
            parts,
            instances: BTreeMap::new(),
            backoff: HashMap::new(),
            traffic: HashMap::new(),
            edge_by_cli: HashMap::new(),
            passes: 0,
            published_routes: Vec::new(),
            specs: HashMap::new(),
            pending_stops: Vec::new(),
            ended: std::collections::VecDeque::new(),
            one_offs: HashMap::new(),
            overrides: HashMap::new(),
            desired: None,
            waker,
            woken: Vec::new(),
            cold_pending: HashMap::new(),
            lifecycles: HashMap::new(),
            crash_looping: std::collections::HashSet::new(),
            pending_notifications: Vec::new(),
            pending_events: std::cell::RefCell::new(Vec::new()),
            pending_journal: Vec::new(),
            messages,
            inbox,
            nudge,
            stale,
            snapshot,
            failures,
        };
        (reconciler, handle)
    }

    /// Runs until `shutdown` is cancelled, then stops every instance.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.kill_orphans();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.converge();
            self.flush_records();
            if let Some(wakes) = &self.parts.wakes {
                for woken in self.woken.drain(..) {
                    let _ = wakes.send(woken);
                }
            }
            // Wake when the earliest restart back-off ends, not a tick later.
            let next_restart = self
                .backoff
                .values()
                .filter_map(|backoff| backoff.next_start)
                .filter(|at| *at > Instant::now())
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                () = tokio::time::sleep_until(next_restart) => {}
                message = self.inbox.recv() => {
                    if let Some(message) = message {
                        self.apply(message);
                    }
                    while let Ok(message) = self.inbox.try_recv() {
                        self.apply(message);
                    }
                }
                () = self.nudge.notified() => {}
                _ = tick.tick() => self.desired = None,
                () = shutdown.cancelled() => break,
            }
        }
        self.stop_everything().await;
    }

    /// Kills instances a crashed server left running.
    fn kill_orphans(&mut self) {
        let journaled = match self.parts.store.journaled_instances() {
            Ok(journaled) => journaled,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the instance journal");
                return;
            }
        };
        let ids: HashSet<String> = journaled.iter().map(|entry| entry.id.clone()).collect();
        let killed = berth_runtime::kill_orphans(&ids);
        if killed > 0 {
            tracing::info!(
                processes = killed,
                "killed processes left by an earlier server"
            );
        }
        for entry in journaled {
            let _ = self.parts.store.forget_instance(&entry.id);
        }
    }

    /// `release`'s spec; `None` (said once, as an event) when the stored
    /// spec cannot be read: such a release runs nothing rather than
    /// running with no config.
    fn spec(&mut self, release: &ReleaseRow) -> Option<Arc<AppSpec>> {
        let key = (
            release.app.clone(),
            release.version,
            release.created_at.clone(),
        );
        if let Some(known) = self.specs.get(&key) {
            return known.clone();
        }
        let decoded = match crate::stored_spec::spec_of(release) {
            Ok(spec) => Some(Arc::new(spec)),
            Err(err) => {
                tracing::error!(app = %release.app, version = release.version, error = %err, "stored spec unreadable");
                self.event(&release.app, EventKind::ReleaseUnreadable, &err.to_string());
                None
            }
        };
        self.specs.insert(key, decoded.clone());
        decoded
    }

    /// `release`'s spec if this loop has decoded it already.
    fn cached_spec(&self, release: &ReleaseRow) -> Option<Arc<AppSpec>> {
        let key = (
            release.app.clone(),
            release.version,
            release.created_at.clone(),
        );
        self.specs.get(&key).cloned().flatten()
    }

    /// Records an event; stored at the end of this pass, after the route
    /// table is out, so a disk write never delays a request.
    fn event(&self, app: &str, kind: EventKind, message: &str) {
        self.pending_events
            .borrow_mut()
            .push((app.to_string(), kind, message.to_string()));
    }

    /// Stores what this pass recorded, on a blocking thread: a disk write
    /// (SQLite with fsync) must not hold the runtime thread that the health
    /// checks of instances just started are waiting for.
    fn flush_records(&mut self) {
        let journal = std::mem::take(&mut self.pending_journal);
        let events = std::mem::take(&mut *self.pending_events.borrow_mut());
        let notifications = std::mem::take(&mut self.pending_notifications);
        if journal.is_empty() && events.is_empty() && notifications.is_empty() {
            return;
        }
        let store = self.parts.store.clone();
        tokio::task::spawn_blocking(move || {
            for (id, app, pid) in journal {
                if let Err(err) = store.journal_instance(&id, &app, pid) {
                    tracing::warn!(error = %err, "cannot journal instance");
                }
            }
            if !events.is_empty()
                && let Err(err) = store.record_events(&events)
            {
                tracing::warn!(error = %err, "cannot record events");
            }
            for (event, app, body) in notifications {
                if let Err(err) = store.enqueue_notification(event, &app, &body) {
                    tracing::warn!(error = %err, "cannot queue a webhook event");
                }
            }
        });
    }

    fn berth_line(&self, instance: &Instance, text: &str) {
        let source = LogSource {
            app: instance.app.clone(),
            process: instance.process.clone(),
            instance: instance.id.clone(),
            release: instance.release,
        };
        self.parts.logs.append(&source, LogStream::Berth, text);
    }
}

#[cfg(test)]
mod hold_tests;
#[cfg(test)]
mod tests;
