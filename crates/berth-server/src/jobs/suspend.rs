//! Jobs under a budget's `suspend`: none start, running ones are cancelled.

use super::JobRunner;

impl JobRunner {
    /// Whether `app`'s budget suspended it (its own hold, or the server's).
    pub(crate) fn suspended(&self, app: &str) -> bool {
        let holds = self.store.budget_holds().unwrap_or_default();
        let hold = holds
            .get(app)
            .or_else(|| holds.get(berth_store::SERVER_BUDGET));
        crate::reconciler::hold::jobs_suspended(hold)
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
