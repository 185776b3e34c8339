//! Scale from zero: a request held at the router starts one instance at
//! once, ahead of the store.

use berth_store::{EventKind, ReleaseStatus};
use tokio::time::Instant;

use super::Reconciler;
use super::state::Override;

/// Why an app at zero starts (recorded as the instance starts).
pub(crate) const FROM_ZERO: &str = "a request arrived while scaled to zero";

/// A group a request started from zero: decided and started here, then
/// recorded in the store by the autoscaler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Woken {
    /// The app.
    pub app: String,
    /// Its group that now runs one instance.
    pub group: String,
}

impl Reconciler {
    /// A request waits at the router for `app`, which has no instance:
    /// one instance of each of its HTTP groups at zero, now, ahead of the
    /// store (the autoscaler, told after this pass, records it).
    pub(super) fn wake(&mut self, app: &str) {
        let Some(desired) = self.take_desired() else {
            return;
        };
        if let Some(target) = desired.iter().find(|candidate| candidate.app == app)
            && let Some(release) = &target.release
            && release.status == ReleaseStatus::Active
            && let Some(spec) = self.spec(release)
        {
            let scaling = &spec.http.scaling;
            if scaling.is_active() && scaling.auto_start {
                for group in release.processes.keys() {
                    let live = self.instances.values().any(|instance| {
                        instance.app == app
                            && &instance.process == group
                            && instance.phase.is_live()
                    });
                    // A group its budget stopped stays stopped; a capped or
                    // throttled one still starts from zero.
                    let allowed = super::hold::held_count(target, group, 1) > 0;
                    if spec.serves_http(group)
                        && allowed
                        && !live
                        && self.wanted(target, group) == 0
                    {
                        tracing::debug!(app, group = %group, "woken: starting one");
                        self.event(
                            app,
                            EventKind::ScaleFromZero,
                            &format!("{group}: {}", FROM_ZERO),
                        );
                        self.overrides.insert(
                            (app.to_string(), group.clone()),
                            Override {
                                count: 1,
                                at: Instant::now(),
                                stored_then: None,
                            },
                        );
                        self.woken.push(Woken {
                            app: app.to_string(),
                            group: group.clone(),
                        });
                        self.cold_pending
                            .insert((app.to_string(), group.clone()), Instant::now());
                    }
                }
            }
        }
        self.desired = Some(desired);
    }
}
