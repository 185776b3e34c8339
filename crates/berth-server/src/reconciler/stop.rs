//! Stopping instances: out of the route table, drained, then SIGTERM and
//! SIGKILL after the kill timeout.

use super::state::Phase;
use super::{DRAIN_TIMEOUT, Reconciler};

/// How long a one-off process gets after SIGTERM when the server stops.
const ONE_OFF_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl Reconciler {
    /// Marks an instance for stopping; the stop runs after the next publish,
    /// so it has left the route table first.
    pub(super) fn begin_stop(&mut self, id: &str, reason: &str) {
        let Some(instance) = self.instances.get_mut(id) else {
            return;
        };
        if !instance.phase.is_live() {
            return;
        }
        // A running instance drains whatever it carries: HTTP requests on
        // its backend, connections to its TCP services on the other.
        instance.phase = if instance.phase != Phase::Starting {
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

    pub(super) fn spawn_stop(&mut self, id: &str) {
        let Some(instance) = self.instances.get(id) else {
            return;
        };
        let running = instance.running.clone();
        let grace = instance.kill_timeout;
        let drain: Vec<_> = if instance.phase == Phase::Draining {
            instance
                .backend
                .iter()
                .chain([&instance.tcp_backend])
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        tokio::spawn(async move {
            // Retired, no router thread sends them anything new, even one
            // holding an older table (a request or connection counts itself
            // in flight before it checks); then what is in flight finishes,
            // within one deadline for both.
            for backend in &drain {
                backend.retire();
            }
            let _ = tokio::time::timeout(
                DRAIN_TIMEOUT,
                futures_util::future::join_all(drain.iter().map(|backend| backend.drained())),
            )
            .await;
            running.stop(grace).await;
        });
    }

    pub(super) async fn stop_everything(&mut self) {
        self.flush_records();
        let mut stops = Vec::new();
        for instance in self.instances.values() {
            let running = instance.running.clone();
            let grace = instance.kill_timeout;
            stops.push(tokio::spawn(async move { running.stop(grace).await }));
        }
        for (id, running) in self.one_offs.drain() {
            let running = running.clone();
            let store = self.parts.store.clone();
            stops.push(tokio::spawn(async move {
                let cause = running.stop(ONE_OFF_GRACE).await;
                let _ = store.forget_instance(&id);
                cause
            }));
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
