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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_logs::{LogSource, LogStore};
use berth_proto::{GroupHealth, InstanceInfo, InstanceState, LogStream, ProcessGroupStatus};
use berth_router::{AppRoute, AppTraffic, Backend, RouteTable};
use berth_runtime::{Driver, ExitCause, RunningInstance};
use berth_spec::AppSpec;
use berth_store::{DesiredApp, ReleaseRow, Store};
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::health;

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

/// What the API sees of the actual state.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Per app.
    pub apps: HashMap<String, AppActual>,
}

/// One app's actual state.
#[derive(Debug, Default, Clone)]
pub struct AppActual {
    /// Every instance, oldest first.
    pub instances: Vec<InstanceInfo>,
    /// Every process group of the target release.
    pub groups: Vec<ProcessGroupStatus>,
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
    nudge: Arc<Notify>,
    /// Set with each nudge: the store changed, the held desired state is old.
    stale: Arc<std::sync::atomic::AtomicBool>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    failures: broadcast::Sender<StartFailure>,
    messages: mpsc::UnboundedSender<Message>,
}

impl ReconcilerHandle {
    /// Asks the loop to converge now.
    pub fn nudge(&self) {
        self.stale.store(true, std::sync::atomic::Ordering::Release);
        self.nudge.notify_one();
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Running,
    Unhealthy,
    Draining,
    Stopping,
}

impl Phase {
    fn is_live(self) -> bool {
        matches!(self, Phase::Starting | Phase::Running | Phase::Unhealthy)
    }

    fn wire(self) -> InstanceState {
        match self {
            Phase::Starting => InstanceState::Starting,
            Phase::Running => InstanceState::Running,
            Phase::Unhealthy => InstanceState::Unhealthy,
            Phase::Draining => InstanceState::Draining,
            Phase::Stopping => InstanceState::Stopping,
        }
    }
}

struct Instance {
    id: String,
    app: String,
    process: String,
    release: u64,
    port: Option<u16>,
    started: Instant,
    phase: Phase,
    running: RunningInstance,
    backend: Option<Arc<Backend>>,
    kill_timeout: Duration,
    watcher: JoinHandle<()>,
    unhealthy_since: Option<Instant>,
    /// Its network namespace and the bridges into it, when it has one.
    _network: Option<berth_runtime::net::InstanceNetwork>,
}

#[derive(Debug, Default, Clone)]
struct Backoff {
    failures: u32,
    next_start: Option<Instant>,
    last_cause: String,
    last_failure: Option<Instant>,
}

impl Backoff {
    fn delay(failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(7);
        (Duration::from_millis(250) * 2u32.pow(exponent)).min(Duration::from_secs(30))
    }
}

enum Message {
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
}

/// How long a count set ahead of the store is trusted without the store
/// agreeing.
const OVERRIDE_TTL: Duration = Duration::from_secs(10);

/// A count set ahead of the store.
struct Override {
    count: u32,
    at: Instant,
    /// The store's count when the override was first applied: once the
    /// store says anything else (the autoscaler's write, or a manual
    /// `berth scale`), the store wins.
    stored_then: Option<u32>,
}

/// The parts the reconciler drives.
pub struct ReconcilerParts {
    /// Desired state.
    pub store: Arc<Store>,
    /// Where instance output goes.
    pub logs: Arc<LogStore>,
    /// How instances run.
    pub driver: Arc<dyn Driver>,
    /// Makes instance specs (slug, env, volumes).
    pub launcher: crate::oneoff::Launcher,
    /// Where the route table goes.
    pub routes: watch::Sender<Arc<RouteTable>>,
    /// Told of apps a request found at zero, once the reconciler has
    /// started them (the autoscaler records the decision). `None`: such
    /// requests get 503 at once.
    pub wakes: Option<mpsc::UnboundedSender<String>>,
}

/// What a published route is made of, to publish only on change.
#[derive(Debug, PartialEq)]
struct RouteKey {
    app: String,
    backends: Vec<String>,
    reason: Option<String>,
    failing: bool,
    admission: berth_router::Admission,
    statics: Vec<berth_router::StaticDir>,
}

/// The loop's state.
pub struct Reconciler {
    parts: ReconcilerParts,
    instances: BTreeMap<String, Instance>,
    backoff: HashMap<(String, String), Backoff>,
    traffic: HashMap<String, Arc<AppTraffic>>,
    published_routes: Vec<RouteKey>,
    /// Counts set ahead of the store: (app, group) → the override.
    overrides: HashMap<(String, String), Override>,
    /// The desired state as last read from the store; read again after a
    /// nudge (someone wrote to the store) and on the tick, not for messages.
    desired: Option<Vec<DesiredApp>>,
    /// The router's side of a wake: it sends [`Message::Wake`] here.
    waker: Option<berth_router::Waker>,
    /// Apps woken in this pass, for the autoscaler.
    woken: Vec<String>,
    /// Events to store once routes are published (off the request path).
    pending_events: std::cell::RefCell<Vec<(String, String, String)>>,
    /// Instances to journal once routes are published.
    pending_journal: Vec<(String, String, u32)>,
    specs: HashMap<(String, u64, String), Arc<AppSpec>>,
    pending_stops: Vec<String>,
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
            published_routes: Vec::new(),
            specs: HashMap::new(),
            pending_stops: Vec::new(),
            overrides: HashMap::new(),
            desired: None,
            waker,
            woken: Vec::new(),
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
                for app in self.woken.drain(..) {
                    let _ = wakes.send(app);
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

    fn spec(&mut self, release: &ReleaseRow) -> Arc<AppSpec> {
        self.specs
            .entry((release.app.clone(), release.version, release.created_at.clone()))
            .or_insert_with(|| {
                Arc::new(serde_json::from_str(&release.spec_json).unwrap_or_else(|err| {
                    tracing::error!(app = %release.app, version = release.version, error = %err, "stored spec unreadable; using defaults");
                    AppSpec::default()
                }))
            })
            .clone()
    }

    /// Records an event; stored at the end of this pass, after the route
    /// table is out, so a disk write never delays a request.
    fn event(&self, app: &str, kind: &str, message: &str) {
        self.pending_events.borrow_mut().push((
            app.to_string(),
            kind.to_string(),
            message.to_string(),
        ));
    }

    /// Stores what this pass recorded, on a blocking thread: a disk write
    /// (SQLite with fsync) must not hold the runtime thread that the health
    /// checks of instances just started are waiting for.
    fn flush_records(&mut self) {
        let journal = std::mem::take(&mut self.pending_journal);
        let events = std::mem::take(&mut *self.pending_events.borrow_mut());
        if journal.is_empty() && events.is_empty() {
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

    /// One pass: start what is missing, stop what is surplus, publish.
    fn converge(&mut self) {
        let Some(desired) = self.take_desired() else {
            return;
        };
        self.expire_overrides(&desired);
        let now = Instant::now();
        let mut keep_apps = HashSet::new();
        for app in &desired {
            keep_apps.insert(app.app.clone());
            self.converge_app(app, now);
        }
        let orphaned: Vec<String> = self
            .instances
            .values()
            .filter(|instance| instance.phase.is_live() && !keep_apps.contains(&instance.app))
            .map(|instance| instance.id.clone())
            .collect();
        for id in orphaned {
            self.begin_stop(&id, "the app was destroyed");
        }
        // An instance started after its group's last failure and up long
        // enough since resets the group's failure count.
        let stable: Vec<(String, String, Instant)> = self
            .instances
            .values()
            .filter(|instance| {
                instance.phase == Phase::Running && instance.started.elapsed() > STABLE_AFTER
            })
            .map(|instance| {
                (
                    instance.app.clone(),
                    instance.process.clone(),
                    instance.started,
                )
            })
            .collect();
        for (app, process, started) in stable {
            if let Some(backoff) = self.backoff.get_mut(&(app, process))
                && backoff.last_failure.is_none_or(|failed| started > failed)
            {
                backoff.failures = 0;
                backoff.next_start = None;
            }
        }
        // Replace instances that stayed unhealthy too long (deadlocked, say).
        let stuck: Vec<(String, String, String)> = self
            .instances
            .values()
            .filter(|instance| {
                instance.phase == Phase::Unhealthy
                    && instance
                        .unhealthy_since
                        .is_some_and(|since| since.elapsed() > REPLACE_UNHEALTHY_AFTER)
            })
            .map(|instance| {
                (
                    instance.id.clone(),
                    instance.app.clone(),
                    instance.process.clone(),
                )
            })
            .collect();
        for (id, app, process) in stuck {
            let text = format!(
                "{id} failed its health check for {}s; replacing it",
                REPLACE_UNHEALTHY_AFTER.as_secs()
            );
            self.event(&app, "health.replaced", &text);
            self.record_failure(&app, &process, &text);
            self.begin_stop(&id, "it stayed unhealthy");
        }
        self.specs.retain(|(app, _, _), _| keep_apps.contains(app));
        self.backoff.retain(|(app, _), _| keep_apps.contains(app));
        self.publish(&desired);
        for id in std::mem::take(&mut self.pending_stops) {
            self.spawn_stop(&id);
        }
        self.desired = Some(desired);
    }

    /// The desired state, read from the store if not held (the caller puts
    /// it back in `self.desired`); `None` if the store cannot be read.
    fn take_desired(&mut self) -> Option<Vec<DesiredApp>> {
        // A nudge not yet taken (a message came first) counts already.
        let stale = self.stale.swap(false, std::sync::atomic::Ordering::Acquire);
        if let Some(desired) = self.desired.take().filter(|_| !stale) {
            return Some(desired);
        }
        self.parts
            .store
            .desired()
            .map_err(|err| tracing::error!(error = %err, "cannot read desired state"))
            .ok()
    }

    /// The instances `group` of `app` should have: a count set ahead of the
    /// store, else the store's.
    fn wanted(&self, app: &DesiredApp, group: &str) -> u32 {
        self.overrides
            .iter()
            .find(|((name, overridden), _)| name == &app.app && overridden == group)
            .map(|(_, entry)| entry.count)
            .or_else(|| app.counts.get(group).copied())
            .unwrap_or(0)
    }

    /// A request waits at the router for `app`, which has no instance:
    /// one instance of each of its HTTP groups at zero, now, ahead of the
    /// store (the autoscaler, told after this pass, records it).
    fn wake(&mut self, app: &str) {
        let Some(desired) = self.take_desired() else {
            return;
        };
        if let Some(target) = desired.iter().find(|candidate| candidate.app == app)
            && let Some(release) = &target.release
            && release.status == "active"
        {
            let spec = self.spec(release);
            let scaling = &spec.http.scaling;
            if scaling.is_active() && scaling.auto_start {
                for group in release.processes.keys() {
                    let live = self.instances.values().any(|instance| {
                        instance.app == app
                            && &instance.process == group
                            && instance.phase.is_live()
                    });
                    if spec.serves_http(group) && !live && self.wanted(target, group) == 0 {
                        tracing::debug!(app, group = %group, "woken: starting one");
                        self.event(
                            app,
                            "scale.from_zero",
                            &format!("{group}: {}", crate::autoscale::FROM_ZERO),
                        );
                        self.overrides.insert(
                            (app.to_string(), group.clone()),
                            Override {
                                count: 1,
                                at: Instant::now(),
                                stored_then: None,
                            },
                        );
                    }
                }
            }
        }
        self.desired = Some(desired);
        if !self.woken.iter().any(|woken| woken == app) {
            self.woken.push(app.to_string());
        }
    }

    fn converge_app(&mut self, app: &DesiredApp, now: Instant) {
        let Some(release) = &app.release else {
            let live: Vec<String> = self
                .instances
                .values()
                .filter(|instance| instance.app == app.app && instance.phase.is_live())
                .map(|instance| instance.id.clone())
                .collect();
            for id in live {
                self.begin_stop(&id, "the app has no release");
            }
            return;
        };
        let spec = self.spec(release);
        for (process, command) in &release.processes {
            let serves_http = spec.serves_http(process);
            let fixed_port = if serves_http {
                spec.http.internal_port
            } else {
                None
            };
            // Without namespaces a fixed port fits one instance, replaced stop-first.
            let one_at_a_time = fixed_port.is_some() && !self.parts.launcher.resources().isolated();
            let mut want = self.wanted(app, process) as usize;
            if one_at_a_time {
                want = want.min(1);
            }
            let group: Vec<&Instance> = self
                .instances
                .values()
                .filter(|instance| instance.app == app.app && &instance.process == process)
                .collect();
            let mut current: Vec<&Instance> = group
                .iter()
                .copied()
                .filter(|instance| instance.release == release.version && instance.phase.is_live())
                .collect();
            let mut old: Vec<&Instance> = group
                .iter()
                .copied()
                .filter(|instance| instance.release != release.version && instance.phase.is_live())
                .collect();
            let old_alive = group
                .iter()
                .any(|instance| instance.release != release.version);

            let mut stops: Vec<(String, &'static str)> = Vec::new();
            if current.len() > want {
                // Stop the least useful first: not yet running, then the newest.
                current.sort_by_key(|instance| {
                    (
                        instance.phase == Phase::Running,
                        std::cmp::Reverse(instance.started),
                    )
                });
                for instance in current.drain(..current.len() - want) {
                    stops.push((instance.id.clone(), "scaled down"));
                }
            }
            let healthy_new = current
                .iter()
                .filter(|instance| instance.phase == Phase::Running)
                .count();
            let allowed_old = if one_at_a_time {
                0
            } else {
                want.saturating_sub(healthy_new)
            };
            if old.len() > allowed_old {
                old.sort_by_key(|instance| {
                    (
                        instance.phase == Phase::Running,
                        instance.release,
                        instance.started,
                    )
                });
                let surplus = old.len() - allowed_old;
                for instance in old.drain(..surplus) {
                    stops.push((instance.id.clone(), "replaced by a newer release"));
                }
            }
            let missing = want.saturating_sub(current.len());
            drop(group);
            for (id, reason) in stops {
                self.begin_stop(&id, reason);
            }
            if missing == 0 || (one_at_a_time && old_alive) {
                continue;
            }
            let key = (app.app.clone(), process.clone());
            if self
                .backoff
                .get(&key)
                .and_then(|backoff| backoff.next_start)
                .is_some_and(|at| at > now)
            {
                continue;
            }
            for _ in 0..missing {
                if let Err(reason) =
                    self.start_instance(release, &spec, process, command, serves_http, fixed_port)
                {
                    self.record_failure(&app.app, process, &reason);
                    let text = format!("cannot start {process} (v{}): {reason}", release.version);
                    self.event(&app.app, "instance.failed", &text);
                    // A deploy waiting for this release fails now, with why.
                    let _ = self.failures.send(StartFailure {
                        app: app.app.clone(),
                        release: release.version,
                        instance: process.to_string(),
                        reason: text,
                    });
                    break;
                }
            }
        }
        let groups: HashSet<&String> = release.processes.keys().collect();
        let retired: Vec<String> = self
            .instances
            .values()
            .filter(|instance| {
                instance.app == app.app
                    && instance.phase.is_live()
                    && !groups.contains(&instance.process)
            })
            .map(|instance| instance.id.clone())
            .collect();
        for id in retired {
            self.begin_stop(&id, "its process group is not in the release");
        }
    }

    fn record_failure(&mut self, app: &str, process: &str, cause: &str) -> Duration {
        let backoff = self
            .backoff
            .entry((app.to_string(), process.to_string()))
            .or_default();
        backoff.failures += 1;
        backoff.last_failure = Some(Instant::now());
        let delay = Backoff::delay(backoff.failures);
        backoff.next_start = Some(Instant::now() + delay);
        backoff.last_cause = cause.to_string();
        delay
    }

    fn start_instance(
        &mut self,
        release: &ReleaseRow,
        spec: &AppSpec,
        process: &str,
        command: &str,
        serves_http: bool,
        fixed_port: Option<u16>,
    ) -> Result<(), String> {
        let id = format!("{process}-{:08x}", rand::random::<u32>());
        tracing::debug!(instance = %id, "starting: preparing its env");
        let port = if serves_http {
            Some(match fixed_port {
                Some(port) => port,
                None => free_port().map_err(|err| format!("no free port: {err}"))?,
            })
        } else {
            None
        };
        let extra: Vec<(String, String)> = port
            .map(|port| ("PORT".to_string(), port.to_string()))
            .into_iter()
            .collect();
        let mut instance_spec = self
            .parts
            .launcher
            .instance_spec(release, spec, process, &id, command, &extra)?;
        let network = self.parts.launcher.attach_network(
            release,
            spec,
            &mut instance_spec,
            fixed_port.is_some(),
        )?;
        tracing::debug!(instance = %id, "starting: env and network ready");
        let netns = network.as_ref().map(|network| network.netns.clone());
        let source = LogSource {
            app: release.app.clone(),
            process: process.to_string(),
            instance: id.clone(),
            release: release.version,
        };
        let sink = crate::oneoff::log_sink(self.parts.logs.clone(), source, None);
        let running = self
            .parts
            .driver
            .start(&instance_spec, sink)
            .map_err(|err| format!("{err}: {}", err_source(&err)))?;
        tracing::debug!(instance = %id, pid = running.pid, "starting: spawned");
        self.pending_journal
            .push((id.clone(), release.app.clone(), running.pid));

        let messages = self.messages.clone();
        let watcher = {
            let running = running.clone();
            let id = id.clone();
            let check = spec.http.check.clone();
            let startup = spec.deploy.wait_timeout;
            tokio::spawn(async move {
                let exit = {
                    let running = running.clone();
                    let messages = messages.clone();
                    let id = id.clone();
                    async move {
                        let cause = running.exited().await;
                        let _ = messages.send(Message::Exited { id, cause });
                    }
                };
                let health =
                    watch_health(id.clone(), port, netns, check, startup, messages.clone());
                tokio::select! {
                    () = exit => {}
                    () = health => {
                        // Health watching only ends on start failure; still report the exit.
                        let cause = running.exited().await;
                        let _ = messages.send(Message::Exited { id, cause });
                    }
                }
            })
        };
        let backend = port.map(|port| {
            let backend = Backend::new(SocketAddr::from(([127, 0, 0, 1], port)), id.clone());
            Arc::new(match &network {
                Some(network) => backend.in_namespace(network.netns.clone()),
                None => backend,
            })
        });
        let instance = Instance {
            id: id.clone(),
            app: release.app.clone(),
            process: process.to_string(),
            release: release.version,
            port,
            started: Instant::now(),
            phase: Phase::Starting,
            running,
            backend,
            kill_timeout: spec.kill_timeout,
            watcher,
            unhealthy_since: None,
            _network: network,
        };
        let port_text = port
            .map(|port| format!(" on port {port}"))
            .unwrap_or_default();
        self.berth_line(
            &instance,
            &format!("starting {id} (v{}): {command}{port_text}", release.version),
        );
        self.instances.insert(id, instance);
        Ok(())
    }

    fn apply(&mut self, message: Message) {
        match message {
            Message::Wake { app } => self.wake(&app),
            Message::SetCount { app, group, count } => {
                self.overrides.insert(
                    (app, group),
                    Override {
                        count,
                        at: Instant::now(),
                        stored_then: None,
                    },
                );
            }
            Message::Healthy { id, after } => {
                tracing::debug!(instance = %id, ?after, "healthy");
                let Some(instance) = self.instances.get_mut(&id) else {
                    return;
                };
                if instance.phase != Phase::Starting {
                    return;
                }
                instance.phase = Phase::Running;
                let text = format!(
                    "{id} (v{}) is up after {:.1} ms",
                    instance.release,
                    after.as_secs_f64() * 1000.0
                );
                let app = instance.app.clone();
                self.event(&app, "instance.started", &text);
            }
            Message::StartFailed { id, reason } => {
                let Some(instance) = self.instances.get(&id) else {
                    return;
                };
                if instance.phase != Phase::Starting {
                    return;
                }
                let (app, process, release) = (
                    instance.app.clone(),
                    instance.process.clone(),
                    instance.release,
                );
                let text =
                    format!("{id} (v{release}) did not pass its health check in time: {reason}");
                self.event(&app, "health.timeout", &text);
                self.record_failure(&app, &process, &text);
                let _ = self.failures.send(StartFailure {
                    app,
                    release,
                    instance: id.clone(),
                    reason: text,
                });
                self.begin_stop(&id, "its health check never passed");
            }
            Message::Unhealthy { id, reason } => {
                let Some(instance) = self.instances.get_mut(&id) else {
                    return;
                };
                if instance.phase != Phase::Running {
                    return;
                }
                instance.phase = Phase::Unhealthy;
                instance.unhealthy_since = Some(Instant::now());
                let app = instance.app.clone();
                self.event(
                    &app,
                    "health.failed",
                    &format!("{id} is unhealthy and out of rotation: {reason}"),
                );
            }
            Message::Recovered { id } => {
                let Some(instance) = self.instances.get_mut(&id) else {
                    return;
                };
                if instance.phase != Phase::Unhealthy {
                    return;
                }
                instance.phase = Phase::Running;
                instance.unhealthy_since = None;
                let app = instance.app.clone();
                self.event(&app, "health.recovered", &format!("{id} is healthy again"));
            }
            Message::Exited { id, cause } => {
                let Some(instance) = self.instances.remove(&id) else {
                    return;
                };
                instance.watcher.abort();
                if let Err(err) = self.parts.store.forget_instance(&id) {
                    tracing::warn!(error = %err, "cannot forget instance");
                }
                let release = instance.release;
                match instance.phase {
                    Phase::Draining | Phase::Stopping => {
                        self.berth_line(&instance, &format!("{id} stopped ({cause})"));
                    }
                    phase => {
                        let uptime = instance.started.elapsed();
                        let delay = self.record_failure(
                            &instance.app,
                            &instance.process,
                            &cause.to_string(),
                        );
                        let text = format!(
                            "{id} (v{release}) exited unexpectedly after {:.1}s: {cause}; restarting in {:.1}s",
                            uptime.as_secs_f64(),
                            delay.as_secs_f64()
                        );
                        self.berth_line(&instance, &text);
                        self.event(&instance.app, "instance.exited", &text);
                        if phase == Phase::Starting {
                            let _ = self.failures.send(StartFailure {
                                app: instance.app.clone(),
                                release,
                                instance: id.clone(),
                                reason: format!("{id} exited during start-up: {cause}"),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Marks an instance for stopping; the stop runs after the next publish,
    /// so it has left the route table first.
    fn begin_stop(&mut self, id: &str, reason: &str) {
        let Some(instance) = self.instances.get_mut(id) else {
            return;
        };
        if !instance.phase.is_live() {
            return;
        }
        instance.phase = if instance.phase != Phase::Starting && instance.backend.is_some() {
            Phase::Draining
        } else {
            Phase::Stopping
        };
        let text = format!("stopping {id}: {reason}");
        if let Some(instance) = self.instances.get(id) {
            self.berth_line(instance, &text);
        }
        self.pending_stops.push(id.to_string());
    }

    fn spawn_stop(&mut self, id: &str) {
        let Some(instance) = self.instances.get(id) else {
            return;
        };
        let running = instance.running.clone();
        let grace = instance.kill_timeout;
        let drain = (instance.phase == Phase::Draining)
            .then(|| instance.backend.clone())
            .flatten();
        tokio::spawn(async move {
            if let Some(backend) = drain {
                // Retired, no router thread sends it anything new, even one
                // holding an older table; then in-flight requests finish.
                backend.retire();
                tokio::time::sleep(Duration::from_millis(20)).await;
                let deadline = Instant::now() + DRAIN_TIMEOUT;
                while backend.in_flight() > 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            running.stop(grace).await;
        });
    }

    /// Counts set ahead of the store win (see [`Reconciler::wanted`]) until
    /// the store changes (the autoscaler's write lands, or someone scales by
    /// hand) or they grow old.
    fn expire_overrides(&mut self, desired: &[DesiredApp]) {
        self.overrides.retain(|(app, group), entry| {
            let stored = desired
                .iter()
                .find(|candidate| &candidate.app == app)
                .and_then(|candidate| candidate.counts.get(group).copied());
            let Some(stored) = stored else {
                return false;
            };
            let unchanged = *entry.stored_then.get_or_insert(stored) == stored;
            unchanged && stored != entry.count && entry.at.elapsed() < OVERRIDE_TTL
        });
    }

    fn publish(&mut self, desired: &[DesiredApp]) {
        let mut table = RouteTable::default();
        let mut key = Vec::with_capacity(desired.len());
        let mut snapshot = Snapshot::default();
        for app in desired {
            let traffic = self.traffic.entry(app.app.clone()).or_default().clone();
            let backends: Vec<Arc<Backend>> = self
                .instances
                .values()
                .filter(|instance| instance.app == app.app && instance.phase == Phase::Running)
                .filter_map(|instance| instance.backend.clone())
                .collect();
            let groups = self.group_statuses(app);
            let reason = if backends.is_empty() {
                Some(unavailable_reason(app, &groups))
            } else {
                None
            };
            let mut statics = Vec::new();
            let (admission, failing) = match &app.release {
                Some(release) => {
                    let spec = self.spec(release);
                    let slug = self.parts.launcher.slug_dir(release);
                    statics = spec
                        .statics
                        .iter()
                        .filter_map(|entry| {
                            Some(berth_router::StaticDir {
                                prefix: entry.url_prefix.clone(),
                                root: slug.clone(),
                                dir: entry.slug_relative()?,
                            })
                        })
                        .collect();
                    let scaling = &spec.http.scaling;
                    let failing = groups.iter().any(|group| {
                        spec.serves_http(&group.name) && group.health == GroupHealth::CrashLoop
                    });
                    let admission = berth_router::Admission {
                        hard_limit: scaling.hard_limit.map(|limit| limit as usize),
                        wake: (scaling.is_active() && scaling.auto_start)
                            .then(|| self.waker.clone())
                            .flatten(),
                        hold_timeout: spec.deploy.wait_timeout,
                        ..berth_router::Admission::default()
                    };
                    (admission, failing)
                }
                None => (berth_router::Admission::default(), false),
            };
            key.push(RouteKey {
                app: app.app.clone(),
                backends: backends
                    .iter()
                    .map(|backend| backend.instance.clone())
                    .collect(),
                reason: reason.clone(),
                failing,
                admission: admission.clone(),
                statics: statics.clone(),
            });
            table.apps.insert(
                app.app.clone(),
                AppRoute {
                    backends,
                    unavailable_reason: reason,
                    traffic,
                    failing,
                    admission,
                    statics: statics.into(),
                },
            );
            let instances = self
                .instances
                .values()
                .filter(|instance| instance.app == app.app)
                .map(|instance| InstanceInfo {
                    id: instance.id.clone(),
                    process: instance.process.clone(),
                    release: instance.release,
                    state: instance.phase.wire(),
                    healthy: instance.phase == Phase::Running,
                    restarts: self
                        .backoff
                        .get(&(instance.app.clone(), instance.process.clone()))
                        .map_or(0, |backoff| backoff.failures),
                    uptime_secs: instance.started.elapsed().as_secs(),
                    pid: Some(instance.running.pid),
                    port: instance.port,
                })
                .collect();
            snapshot
                .apps
                .insert(app.app.clone(), AppActual { instances, groups });
        }
        self.traffic.retain(|app, _| table.apps.contains_key(app));
        if key != self.published_routes {
            self.published_routes = key;
            let _ = self.parts.routes.send(Arc::new(table));
            tracing::debug!("routes published");
        }
        let _ = self.snapshot.send(Arc::new(snapshot));
    }

    fn group_statuses(&self, app: &DesiredApp) -> Vec<ProcessGroupStatus> {
        let Some(release) = &app.release else {
            return Vec::new();
        };
        release
            .processes
            .iter()
            .map(|(process, command)| {
                let desired = self.wanted(app, process);
                let running = self
                    .instances
                    .values()
                    .filter(|instance| {
                        instance.app == app.app
                            && &instance.process == process
                            && instance.release == release.version
                            && instance.phase == Phase::Running
                    })
                    .count() as u32;
                let backoff = self.backoff.get(&(app.app.clone(), process.clone()));
                let (health, reason) = if desired == 0 {
                    (GroupHealth::Stopped, Some("scaled to zero".to_string()))
                } else if let Some(backoff) =
                    backoff.filter(|backoff| backoff.failures >= CRASH_LOOP_AFTER)
                {
                    let next = backoff
                        .next_start
                        .map(|at| at.saturating_duration_since(Instant::now()).as_secs_f64())
                        .unwrap_or(0.0);
                    (
                        GroupHealth::CrashLoop,
                        Some(format!(
                            "failed {} times in a row (last: {}); next restart in {next:.1}s",
                            backoff.failures, backoff.last_cause
                        )),
                    )
                } else if running >= desired {
                    (GroupHealth::Healthy, None)
                } else {
                    (
                        GroupHealth::Converging,
                        Some(format!("{running} of {desired} running")),
                    )
                };
                ProcessGroupStatus {
                    name: process.clone(),
                    command: command.clone(),
                    desired,
                    running,
                    health,
                    reason,
                    autoscaled: false,
                    why: None,
                    min: None,
                    max: None,
                }
            })
            .collect()
    }

    async fn stop_everything(&mut self) {
        self.flush_records();
        let mut stops = Vec::new();
        for instance in self.instances.values() {
            let running = instance.running.clone();
            let grace = instance.kill_timeout;
            stops.push(tokio::spawn(async move { running.stop(grace).await }));
        }
        for stop in stops {
            let _ = stop.await;
        }
        for id in self.instances.keys() {
            let _ = self.parts.store.forget_instance(id);
        }
        self.instances.clear();
        self.flush_records();
    }
}

fn unavailable_reason(app: &DesiredApp, groups: &[ProcessGroupStatus]) -> String {
    if app.release.is_none() {
        return "it has not been deployed yet".into();
    }
    match groups
        .iter()
        .find(|group| group.name == berth_spec::DEFAULT_PROCESS || group.name == "app")
    {
        Some(group) if group.health == GroupHealth::Stopped => "it is scaled to zero".into(),
        Some(group) if group.health == GroupHealth::CrashLoop => {
            format!(
                "it is crash-looping ({})",
                group.reason.clone().unwrap_or_default()
            )
        }
        _ => "its instances are starting".into(),
    }
}

async fn watch_health(
    id: String,
    port: Option<u16>,
    netns: health::Namespace,
    check: berth_spec::HealthCheck,
    startup: Duration,
    messages: mpsc::UnboundedSender<Message>,
) {
    let Some(port) = port else {
        // A process without HTTP counts as up once it has run for a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = messages.send(Message::Healthy {
            id,
            after: Duration::from_secs(1),
        });
        std::future::pending::<()>().await;
        return;
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match health::wait_until_healthy(addr, &netns, &check, Instant::now() + startup).await {
        Ok(after) => {
            let _ = messages.send(Message::Healthy {
                id: id.clone(),
                after,
            });
        }
        Err(reason) => {
            let _ = messages.send(Message::StartFailed { id, reason });
            return;
        }
    }
    let mut failed_in_a_row = 0u32;
    loop {
        tokio::time::sleep(check.interval).await;
        match health::probe(addr, &netns, &check).await {
            Ok(()) => {
                if failed_in_a_row >= UNHEALTHY_AFTER {
                    let _ = messages.send(Message::Recovered { id: id.clone() });
                }
                failed_in_a_row = 0;
            }
            Err(reason) => {
                failed_in_a_row += 1;
                if failed_in_a_row == UNHEALTHY_AFTER {
                    let _ = messages.send(Message::Unhealthy {
                        id: id.clone(),
                        reason,
                    });
                }
            }
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn err_source(err: &dyn std::error::Error) -> String {
    err.source()
        .map(|source| source.to_string())
        .unwrap_or_default()
}
