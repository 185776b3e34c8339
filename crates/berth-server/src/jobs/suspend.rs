//! Jobs under a budget's `suspend`: none start, running ones are cancelled.

use super::JobRunner;

impl JobRunner {
    /// When `app`'s budget (its own, or the server's) suspended it: the
    /// command that lifts the suspension.
    pub(crate) fn suspended(&self, app: &str) -> Option<String> {
        let holds = self.store.budget_holds().unwrap_or_default();
        [holds.get(app), holds.get(berth_store::SERVER_BUDGET)]
            .into_iter()
            .flatten()
            .find(|hold| crate::reconciler::hold::jobs_suspended(Some(hold)))
            .map(|hold| crate::reconciler::hold::resume_command(app, hold))
    }

    /// Cancels every running execution of `app` (a budget suspended it)
    /// without waiting for them to stop.
    pub(crate) fn cancel_all(&self, app: &str) -> usize {
        let running = self.running();
        let mut cancelled = 0;
        for execution in running.values().filter(|running| running.app == app) {
            execution.cancel.cancel();
            cancelled += 1;
        }
        cancelled
    }
}
