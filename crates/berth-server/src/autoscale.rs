//! The autoscaler: sets the instance count of HTTP groups that scale by
//! themselves (fly's `auto_stop_machines` / `auto_start_machines` /
//! `min/max_machines_running` / `concurrency`), from what the router sees.
//!
//! Twice a second, for each such group, it reads the requests in flight on
//! its instances plus those held at the router, and:
//!
//! - scales **out** at once when they exceed `soft_limit` per instance (up to
//!   the maximum: `max_machines_running`, `berth scale --max`, else the
//!   count set with `berth scale`);
//! - scales **in** when fewer instances would do and that has held for
//!   `scale_in_delay` (never below the minimum, never below one while
//!   requests arrive); the reconciler drains what it stops;
//! - scales **to zero** when auto stop is on, the minimum is 0 and no request
//!   came for `idle_timeout`;
//! - scales **from zero** the moment the router asks (a request arrived):
//!   one instance, however many requests wait for it.
//!
//! Its count is stored beside the manual one (it wins while set), with the
//! reason `berth status` shows, and every change is an event. A deploy
//! clears it, so a new release is proven at the manual count first.

use berth_store::{EventKind, ReleaseStatus};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_router::RouteTable;
use berth_spec::Scaling;
use berth_store::{GroupScaling, Store};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::reconciler::{FROM_ZERO, ReconcilerHandle, Woken};

/// How often load is looked at.
const TICK: Duration = Duration::from_millis(500);
/// How long after a wake its decision is recorded (the reconciler has
/// started the instance; the store's write and the event can wait).
const RECORD_WAKES_AFTER: Duration = Duration::from_millis(20);

/// What the autoscaler sees of one group at one moment.
#[derive(Debug, Clone)]
pub(crate) struct Observation {
    /// Instances wanted now.
    pub current: u32,
    /// Requests in flight on its instances plus those held at the router.
    pub load: usize,
    /// The group's bounds.
    pub min: u32,
    /// See [`Observation::min`].
    pub max: u32,
    /// How long since the last request (or since the release began).
    pub idle_for: Duration,
    /// How long fewer instances would have done, if they would now.
    pub below_for: Option<Duration>,
}

/// A change of count, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    /// The new count.
    pub count: u32,
    /// Event kind: `scale.out`, `scale.in`, `scale.to_zero`, `scale.from_zero`.
    pub kind: EventKind,
    /// For `berth status` and `berth events`.
    pub reason: String,
}

/// Instances `load` needs under `scaling`.
pub(crate) fn needed(scaling: &Scaling, load: usize) -> u32 {
    match scaling.soft_limit {
        Some(soft) => load.div_ceil(soft.max(1) as usize) as u32,
        None => u32::from(load > 0),
    }
}

/// What to do with one group, if anything.
pub(crate) fn decide(scaling: &Scaling, seen: &Observation) -> Option<Decision> {
    let current = seen.current;
    let set = |count: u32, kind: EventKind, reason: String| {
        (count != current).then_some(Decision {
            count,
            kind,
            reason,
        })
    };
    if current < seen.min {
        return set(
            seen.min,
            EventKind::ScaleOut,
            format!("below the minimum of {}", seen.min),
        );
    }
    if current > seen.max {
        return set(
            seen.max,
            EventKind::ScaleIn,
            format!("above the maximum of {}", seen.max),
        );
    }
    let needed = needed(scaling, seen.load);
    if scaling.auto_start
        && let Some(soft) = scaling.soft_limit
        && needed > current
        && current < seen.max
        && current > 0
    {
        return set(
            needed.min(seen.max),
            EventKind::ScaleOut,
            format!(
                "load: {} requests in flight on {current} instance(s), soft limit {soft} each",
                seen.load
            ),
        );
    }
    if !scaling.auto_stop {
        return None;
    }
    if current > 0 && seen.min == 0 && seen.load == 0 && seen.idle_for >= scaling.idle_timeout {
        return set(
            0,
            EventKind::ScaleToZero,
            format!(
                "idle: no request for {}",
                berth_spec::format_duration(scaling.idle_timeout)
            ),
        );
    }
    let floor = seen.min.max(1);
    if needed < current
        && current > floor
        && seen
            .below_for
            .is_some_and(|below| below >= scaling.scale_in_delay)
    {
        return set(
            needed.max(floor),
            EventKind::ScaleIn,
            format!(
                "load fell: {} requests in flight for {current} instance(s)",
                seen.load
            ),
        );
    }
    None
}

/// Per-group memory between ticks.
#[derive(Debug, Default)]
struct GroupMemory {
    release: u64,
    release_seen: Option<Instant>,
    below_since: Option<Instant>,
    /// The app's request counter when last looked at, and when it last moved.
    requests: u64,
    last_active: Option<Instant>,
}

/// The autoscaler's loop.
pub struct Autoscaler {
    store: Arc<Store>,
    reconciler: ReconcilerHandle,
    routes: watch::Receiver<Arc<RouteTable>>,
    wakes: mpsc::UnboundedReceiver<Woken>,
    memory: HashMap<(String, String), GroupMemory>,
}

impl Autoscaler {
    /// An autoscaler over the store, reading load from the route table and
    /// the apps a request woke from the reconciler (which started them
    /// already: see `ReconcilerParts::wakes`).
    pub fn new(
        store: Arc<Store>,
        reconciler: ReconcilerHandle,
        routes: watch::Receiver<Arc<RouteTable>>,
        wakes: mpsc::UnboundedReceiver<Woken>,
    ) -> Autoscaler {
        Autoscaler {
            store,
            reconciler,
            routes,
            wakes,
            memory: HashMap::new(),
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                woken = self.wakes.recv() => {
                    let Some(first) = woken else { return };
                    // The instance is starting: record the reconciler's
                    // decision once it had the machine to itself a moment,
                    // taking every group woken meanwhile along.
                    tokio::time::sleep(RECORD_WAKES_AFTER).await;
                    let mut woken = vec![first];
                    while let Ok(more) = self.wakes.try_recv() {
                        woken.push(more);
                    }
                    let mut apps: Vec<&str> = woken.iter().map(|woken| woken.app.as_str()).collect();
                    apps.sort_unstable();
                    apps.dedup();
                    for app in apps {
                        let groups: Vec<&str> = woken
                            .iter()
                            .filter(|woken| woken.app == app)
                            .map(|woken| woken.group.as_str())
                            .collect();
                        tracing::debug!(%app, ?groups, "woken by a request");
                        self.scale_app(app, &groups);
                    }
                }
                _ = tick.tick() => self.scale_all(),
            }
        }
    }

    fn scale_all(&mut self) {
        let Ok(apps) = self.store.apps() else { return };
        for app in apps {
            self.scale_app(&app.name, &[]);
        }
        let known: Vec<(String, String)> = self.memory.keys().cloned().collect();
        for key in known {
            if self.store.app(&key.0).is_err() {
                self.memory.remove(&key);
            }
        }
    }

    /// Decides `app`'s counts; `woken` are its groups a request just
    /// started from zero (the reconciler's decision, recorded here).
    fn scale_app(&mut self, app: &str, woken: &[&str]) {
        let Ok(app_row) = self.store.app(app) else {
            return;
        };
        let Some(version) = app_row.target_release else {
            return;
        };
        let Ok(release) = self.store.release(app, version) else {
            return;
        };
        // An unreadable spec runs nothing (the reconciler says why).
        let Ok(spec) = crate::stored_spec::spec_of(&release) else {
            return;
        };
        let scaling = &spec.http.scaling;
        if !scaling.is_active() {
            return;
        }
        // Only a live release scales: a deploy proves itself first.
        if release.status != ReleaseStatus::Active {
            return;
        }
        let Ok(groups) = self.store.scaling(app) else {
            return;
        };
        let table = self.routes.borrow().clone();
        let route = table.apps.get(app);
        let load = route.map_or(0, |route| {
            route
                .backends
                .iter()
                .map(|backend| backend.in_flight())
                .sum::<usize>()
                + route.traffic.waiting()
        });
        let requests = route.map_or(0, |route| route.traffic.requests());
        let mut decisions = Vec::new();
        for (group, state) in &groups {
            if !spec.serves_http(group) || !release.processes.contains_key(group) {
                continue;
            }
            let memory = self
                .memory
                .entry((app.to_string(), group.clone()))
                .or_default();
            if memory.release != version || memory.release_seen.is_none() {
                *memory = GroupMemory {
                    release: version,
                    release_seen: Some(Instant::now()),
                    requests,
                    ..GroupMemory::default()
                };
            }
            let woken = woken.contains(&group.as_str());
            let tcp_open = route.is_some_and(|route| {
                route
                    .traffic
                    .tcp_open
                    .load(std::sync::atomic::Ordering::Relaxed)
                    > 0
            });
            if requests != memory.requests || woken || tcp_open {
                memory.requests = requests;
                memory.last_active = Some(Instant::now());
            }
            if woken {
                // Started by the reconciler (reconciler/wake.rs), which
                // recorded the event; the store follows its count.
                if state.effective() == 0 {
                    decisions.push((
                        group.clone(),
                        Decision {
                            count: 1,
                            kind: EventKind::ScaleFromZero,
                            reason: FROM_ZERO.into(),
                        },
                    ));
                }
                continue;
            }
            let observation = observe(scaling, state, load, memory);
            let Some(decision) = decide(scaling, &observation) else {
                continue;
            };
            // The reconciler acts first; the store follows.
            self.reconciler.set_count(app, group, decision.count);
            tracing::info!(app, group = %group, count = decision.count, reason = %decision.reason, "autoscale");
            memory.below_since = None;
            decisions.push((group.clone(), decision));
        }
        if decisions.is_empty() {
            return;
        }
        // The store's write (an fsync) happens off the runtime's threads: the
        // reconciler, starting the instance meanwhile, must not wait for it.
        let store = self.store.clone();
        let reconciler = self.reconciler.clone();
        let app = app.to_string();
        tokio::task::spawn_blocking(move || {
            for (group, decision) in decisions {
                // A wake's start was recorded by the reconciler, which made it.
                let recorded = decision.kind == EventKind::ScaleFromZero;
                if let Err(err) = store.set_scaled(
                    &app,
                    &group,
                    Some(decision.count),
                    &decision.reason,
                    (!recorded).then_some(decision.kind),
                ) {
                    tracing::error!(error = %err, "cannot store a scaling decision");
                }
            }
            reconciler.nudge();
        });
    }
}

fn observe(
    scaling: &Scaling,
    state: &GroupScaling,
    load: usize,
    memory: &mut GroupMemory,
) -> Observation {
    let current = state.effective();
    let min = state.min.unwrap_or(scaling.min);
    let max = state
        .max
        .or(scaling.max)
        .unwrap_or(state.manual)
        .max(min)
        .max(1);
    let since_release = memory
        .release_seen
        .map_or(Duration::ZERO, |seen| seen.elapsed());
    let since_request = memory
        .last_active
        .map_or(since_release, |active| active.elapsed());
    let needed = needed(scaling, load);
    if needed < current {
        memory.below_since.get_or_insert_with(Instant::now);
    } else {
        memory.below_since = None;
    }
    Observation {
        current,
        load,
        min,
        max,
        idle_for: since_request.min(since_release),
        below_for: memory.below_since.map(|since| since.elapsed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaling() -> Scaling {
        Scaling {
            auto_stop: true,
            auto_start: true,
            min: 0,
            max: Some(4),
            soft_limit: Some(10),
            hard_limit: Some(20),
            idle_timeout: Duration::from_secs(60),
            scale_in_delay: Duration::from_secs(5),
            ..Scaling::default()
        }
    }

    fn seen(current: u32, load: usize) -> Observation {
        Observation {
            current,
            load,
            min: 0,
            max: 4,
            idle_for: Duration::ZERO,
            below_for: None,
        }
    }

    #[test]
    fn load_over_the_soft_limit_scales_out_up_to_the_maximum() {
        let decision = decide(&scaling(), &seen(1, 25)).unwrap();
        assert_eq!((decision.count, decision.kind), (3, EventKind::ScaleOut));
        assert!(
            decision.reason.contains("25 requests in flight"),
            "{}",
            decision.reason
        );
        assert_eq!(decide(&scaling(), &seen(2, 300)).unwrap().count, 4);
        assert_eq!(decide(&scaling(), &seen(4, 300)), None);
        assert_eq!(decide(&scaling(), &seen(2, 20)), None);
    }

    #[test]
    fn scaling_in_waits_for_the_delay_and_keeps_one_while_requests_come() {
        let mut low = seen(3, 4);
        assert_eq!(decide(&scaling(), &low), None);
        low.below_for = Some(Duration::from_secs(2));
        assert_eq!(decide(&scaling(), &low), None);
        low.below_for = Some(Duration::from_secs(5));
        let decision = decide(&scaling(), &low).unwrap();
        assert_eq!((decision.count, decision.kind), (1, EventKind::ScaleIn));
        let mut idle = seen(3, 0);
        idle.below_for = Some(Duration::from_secs(6));
        assert_eq!(decide(&scaling(), &idle).unwrap().count, 1);
    }

    #[test]
    fn idle_past_the_timeout_goes_to_zero_and_load_alone_never_wakes_it() {
        let mut idle = seen(1, 0);
        idle.idle_for = Duration::from_secs(59);
        assert_eq!(decide(&scaling(), &idle), None);
        idle.idle_for = Duration::from_secs(60);
        let decision = decide(&scaling(), &idle).unwrap();
        assert_eq!((decision.count, decision.kind), (0, EventKind::ScaleToZero));
        assert!(
            decision.reason.contains("no request for 1m"),
            "{}",
            decision.reason
        );
        // A start from zero is the reconciler's (a request wakes it).
        assert_eq!(decide(&scaling(), &seen(0, 7)), None);
    }

    #[test]
    fn the_minimum_is_never_undercut() {
        let mut idle = seen(1, 0);
        idle.min = 1;
        idle.idle_for = Duration::from_secs(3600);
        idle.below_for = Some(Duration::from_secs(3600));
        assert_eq!(decide(&scaling(), &idle), None);
        let mut under = seen(0, 0);
        under.min = 2;
        assert_eq!(decide(&scaling(), &under).unwrap().count, 2);
    }

    #[test]
    fn without_auto_stop_nothing_stops_and_without_auto_start_nothing_starts() {
        let mut keep = scaling();
        keep.auto_stop = false;
        let mut idle = seen(2, 0);
        idle.idle_for = Duration::from_secs(3600);
        idle.below_for = Some(Duration::from_secs(3600));
        assert_eq!(decide(&keep, &idle), None);
        let mut manual_start = scaling();
        manual_start.auto_start = false;
        assert_eq!(decide(&manual_start, &seen(1, 50)), None);
    }
}
