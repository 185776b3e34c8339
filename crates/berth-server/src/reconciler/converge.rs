//! One pass of the loop: the one home of the wanted-count rules — start
//! what is missing, stop what is surplus, replace what is stuck.

use berth_store::EventKind;
use std::collections::HashSet;
use std::time::Duration;

use berth_store::DesiredApp;
use tokio::time::Instant;

use super::handle::StartFailure;
use super::replace::{instance_ceiling, replacement};
use super::state::{Backoff, Instance, OVERRIDE_TTL, Phase};
use super::{REPLACE_UNHEALTHY_AFTER, Reconciler, STABLE_AFTER};

impl Reconciler {
    /// One pass: start what is missing, stop what is surplus, publish.
    pub(super) fn converge(&mut self) {
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
            self.event(&app, EventKind::HealthReplaced, &text);
            self.record_failure(&app, &process, &text);
            self.begin_stop(&id, "it stayed unhealthy");
        }
        self.specs.retain(|(app, _, _), _| keep_apps.contains(app));
        self.backoff.retain(|(app, _), _| keep_apps.contains(app));
        self.lifecycles
            .retain(|(app, _), _| keep_apps.contains(app));
        self.cold_pending
            .retain(|(app, _), _| keep_apps.contains(app));
        self.crash_looping
            .retain(|(app, _)| keep_apps.contains(app));
        self.publish(&desired);
        for id in std::mem::take(&mut self.pending_stops) {
            self.spawn_stop(&id);
        }
        self.desired = Some(desired);
    }

    /// The desired state, read from the store if not held (the caller puts
    /// it back in `self.desired`); `None` if the store cannot be read.
    pub(super) fn take_desired(&mut self) -> Option<Vec<DesiredApp>> {
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
    /// store, else the store's, as a budget's hold allows.
    pub(super) fn wanted(&self, app: &DesiredApp, group: &str) -> u32 {
        let wanted = self
            .overrides
            .iter()
            .find(|((name, overridden), _)| name == &app.app && overridden == group)
            .map(|(_, entry)| entry.count)
            .or_else(|| app.counts.get(group).copied())
            .unwrap_or(0);
        super::hold::held_count(app, group, wanted)
    }

    /// The instances `group` runs: [`Reconciler::wanted`] within its
    /// [`instance_ceiling`].
    pub(super) fn wanted_running(
        &self,
        app: &DesiredApp,
        group: &str,
        ceiling: Option<u32>,
    ) -> u32 {
        let wanted = self.wanted(app, group);
        ceiling.map_or(wanted, |ceiling| wanted.min(ceiling))
    }

    /// Whether instances get namespaces of their own.
    pub(super) fn isolated(&self) -> bool {
        self.parts.launcher.resources().isolated()
    }

    /// Counts set ahead of the store win (see [`Reconciler::wanted`]) until
    /// the store changes (the autoscaler's write lands, or someone scales by
    /// hand) or they grow old.
    pub(super) fn expire_overrides(&mut self, desired: &[DesiredApp]) {
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

    pub(super) fn converge_app(&mut self, app: &DesiredApp, now: Instant) {
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
        let Some(spec) = self.spec(release) else {
            // Nothing of it starts; what runs (an older release) keeps running.
            return;
        };
        for (process, command) in &release.processes {
            let serves_http = spec.serves_http(process);
            let fixed_port = if serves_http {
                spec.http.internal_port
            } else {
                None
            };
            let ceiling = instance_ceiling(&spec, process, self.isolated());
            let replacement = replacement(&spec, process, self.isolated());
            let want = self.wanted_running(app, process, ceiling) as usize;
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
            let allowed_old = replacement.old_allowed(want, healthy_new, old.len());
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
            let missing = replacement.may_start(
                want.saturating_sub(current.len()),
                current.len(),
                healthy_new,
                old_alive,
            );
            drop(group);
            for (id, reason) in stops {
                self.begin_stop(&id, reason);
            }
            if missing == 0 {
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
                if let Err(err) =
                    self.start_instance(release, &spec, process, command, serves_http, fixed_port)
                {
                    let delay = self.record_start_failure(&app.app, process, &err);
                    let text = format!(
                        "cannot start {process} (v{}): {err}; next try in {:.1}s",
                        release.version,
                        delay.as_secs_f64()
                    );
                    self.event(&app.app, EventKind::InstanceFailed, &text);
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

    /// A start that failed: retried on the usual back-off when the host
    /// was short of something, else at the longest (only a new release
    /// or config can fix it).
    pub(super) fn record_start_failure(
        &mut self,
        app: &str,
        process: &str,
        err: &crate::launch::StartError,
    ) -> Duration {
        if !err.transient {
            let backoff = self
                .backoff
                .entry((app.to_string(), process.to_string()))
                .or_default();
            backoff.failures = backoff.failures.max(Backoff::LONGEST_AFTER - 1);
        }
        self.record_failure(app, process, &err.to_string())
    }

    pub(super) fn record_failure(&mut self, app: &str, process: &str, cause: &str) -> Duration {
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
}
