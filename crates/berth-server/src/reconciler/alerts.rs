//! A group that starts crash-looping is an alert for the webhooks that ask
//! for `app.crash-loop`: once when it starts, again only after it
//! recovered. Queued here, written with the pass's events.

use berth_proto::{GroupHealth, ProcessGroupStatus};

use super::Reconciler;

impl Reconciler {
    /// Notes which groups of `app` crash-loop now, queueing an alert for
    /// each that just began.
    pub(super) fn note_crash_loops(&mut self, app: &str, groups: &[ProcessGroupStatus]) {
        for group in groups {
            let key = (app.to_string(), group.name.clone());
            if group.health == GroupHealth::CrashLoop {
                if self.crash_looping.insert(key) {
                    let reason = group.reason.clone().unwrap_or_default();
                    let body = serde_json::json!({
                        "message": format!("{app}: {} is crash-looping: {reason}", group.name),
                        "data": { "group": group.name, "reason": reason },
                    })
                    .to_string();
                    self.pending_notifications
                        .push(("app.crash-loop", app.to_string(), body));
                }
            } else {
                self.crash_looping.remove(&key);
            }
        }
    }
}
