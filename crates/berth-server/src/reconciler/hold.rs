//! A budget's action in force on an app, as the reconciler applies it:
//! counts lowered (never raised), no start from zero, a 503 page that says
//! why, or a lower rate limit. The store's counts stay as they were, so
//! lifting the hold restores the previous scale.

use berth_proto::{BudgetAction, BudgetHold, RateLimit};
use berth_store::DesiredApp;

/// The action a hold takes on `group` (its own, else the one for all).
pub(crate) fn action_on(hold: &BudgetHold, group: &str) -> Option<BudgetAction> {
    hold.action_on(group)
}

/// `wanted` instances of `group`, as the app's hold allows.
pub(crate) fn held_count(app: &DesiredApp, group: &str, wanted: u32) -> u32 {
    match app.hold.as_ref().and_then(|hold| action_on(hold, group)) {
        Some(BudgetAction::ScaleToZero | BudgetAction::Suspend) => 0,
        Some(BudgetAction::Cap) => wanted.min(1),
        _ => wanted,
    }
}

/// Whether `group` of `app` is stopped by its budget.
pub(crate) fn stopped_by_budget(app: &DesiredApp, group: &str) -> bool {
    held_count(app, group, 1) == 0
}

/// Whether the app's jobs are stopped (`suspend`).
pub(crate) fn jobs_suspended(hold: Option<&BudgetHold>) -> bool {
    hold.is_some_and(|hold| {
        hold.actions
            .values()
            .any(|action| *action == BudgetAction::Suspend)
    })
}

/// The command that lifts `hold` on `app`.
pub(crate) fn resume_command(app: &str, hold: &BudgetHold) -> String {
    if hold.both {
        format!("berth budget resume --app {app}` and `berth budget resume --server-wide")
    } else if hold.server_wide {
        "berth budget resume --server-wide".into()
    } else {
        format!("berth budget resume --app {app}")
    }
}

/// What the 503 page says while the budget keeps the app stopped.
pub(crate) fn budget_page_reason(app: &str, hold: &BudgetHold) -> String {
    format!(
        "its monthly budget was reached ({}); the owner can run `{}` or raise the budget",
        hold.reason,
        resume_command(app, hold)
    )
}

/// The rate limit a throttled app gets, on top of its own.
pub(crate) fn throttle_limit(hold: &BudgetHold) -> Option<RateLimit> {
    hold.is_throttled().then(|| RateLimit {
        requests: hold.throttle_rps.max(1),
        per_ms: 1000,
        burst: hold.throttle_rps.max(1),
        path: None,
    })
}
