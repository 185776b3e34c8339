//! One budget's evaluation: a new month starts over, a changed budget
//! re-arms, thresholds alert, a spike alerts, and past 100% the action is
//! written. Called with the budgets' lock held.

use std::collections::BTreeMap;

use berth_cost::{SPIKE_FACTOR, due_alerts, is_spike, used};
use berth_proto::{BudgetAction, BudgetHold, DEFAULT_THROTTLE_RPS, EventKind};
use berth_store::{BudgetState, SERVER_BUDGET};

use super::{Budgets, Happened, figures};

impl Budgets {
    /// Evaluates one budget; whether its hold changed. The caller holds
    /// the lock.
    pub(super) fn evaluate_one(&self, app: &str, reads: &figures::Reads) -> Result<bool, String> {
        let now = reads.now();
        let (settings, _) = self.settings(app)?;
        let month = berth_cost::CalendarMonth::of(now);
        let mut state = self
            .store
            .budget_state(app)
            .map_err(|err| err.to_string())?;
        let mut changed = false;
        if state.period != month.name {
            // Saved before anything that may fail: last month's hold never
            // outlives it.
            let lifted = state.hold.is_some();
            let happened = if lifted {
                vec![(
                    EventKind::BudgetResumed,
                    format!(
                        "a new month ({}) began: the budget's action is lifted",
                        month.name
                    ),
                    "budget.resumed",
                    serde_json::json!({ "period": month.name }),
                )]
            } else {
                Vec::new()
            };
            state = BudgetState {
                period: month.name.clone(),
                settings_seen: state.settings_seen,
                ..BudgetState::default()
            };
            self.save(app, &state, happened)?;
            changed |= lifted;
        }
        let Some(settings) = settings else {
            // A budget added again starts armed.
            let forgot = state.acted || state.settings_seen.is_some();
            state.acted = false;
            state.settings_seen = None;
            if let Some(hold) = state.hold.take() {
                self.save(
                    app,
                    &state,
                    vec![(
                        EventKind::BudgetResumed,
                        "the budget was removed: its action is lifted".into(),
                        "budget.resumed",
                        serde_json::json!({ "period": hold.period }),
                    )],
                )?;
                return Ok(true);
            }
            if forgot {
                self.save(app, &state, Vec::new())?;
            }
            return Ok(changed);
        };
        let measured = figures::measure(reads, &self.tables, self.server_usd, app, &settings)?;
        let usage = used(&settings, &measured.figures);
        let mut happened: Vec<Happened> = Vec::new();
        let mut suspend = false;
        // A changed budget starts over: its action may be taken again, and
        // the thresholds above the use alert again.
        let seen = serde_json::to_string(&settings).unwrap_or_default();
        let mut lifted = None;
        if state.settings_seen.as_deref() != Some(seen.as_str()) {
            if state.settings_seen.is_some() {
                lifted = state.hold.take();
                state.acted = false;
                state.alerted.retain(|at| f64::from(*at) <= usage.percent);
            }
            state.settings_seen = Some(seen);
        }
        let data = serde_json::json!({
            "period": state.period,
            "percent": usage.percent,
            "limit": usage.limit,
            "spent_usd": measured.figures.spent_usd,
            "projected_usd": measured.projected_usd,
            "requests": measured.figures.requests,
            "egress_gb": measured.figures.egress_gb,
            "instance_hours": measured.figures.instance_hours,
            "price_as": settings.price_as,
        });
        for threshold in due_alerts(&settings, usage.percent, &state.alerted) {
            state.alerted.push(threshold);
            let mut data = data.clone();
            data["threshold"] = threshold.into();
            happened.push((
                EventKind::BudgetAlert,
                format!(
                    "{threshold}% of the monthly budget reached: {}",
                    usage.limit
                ),
                "budget.alert",
                data,
            ));
        }
        if !state.spiked
            && is_spike(
                measured.last_hour_usd,
                measured.trailing_hourly_usd * 23.0,
                SPIKE_FACTOR,
                settings.monthly_usd.unwrap_or(f64::INFINITY),
            )
        {
            state.spiked = true;
            happened.push((
                EventKind::BudgetSpike,
                format!(
                    "the last hour cost ${:.4}, over {SPIKE_FACTOR}× the trailing day's hourly rate; by month's end: ${:.2}",
                    measured.last_hour_usd, measured.projected_usd
                ),
                "budget.spike",
                data.clone(),
            ));
        }
        if usage.percent >= 100.0 && !state.acted {
            state.acted = true;
            let mut actions = BTreeMap::from([("*".to_string(), settings.on_exceed)]);
            actions.extend(settings.processes.clone());
            let taken: Vec<String> = actions
                .iter()
                .map(|(group, action)| format!("{group}: {}", action.as_str()))
                .collect();
            if actions
                .values()
                .any(|action| *action != BudgetAction::Alert)
            {
                state.hold = Some(BudgetHold {
                    period: state.period.clone(),
                    actions: actions.clone(),
                    since: now,
                    reason: usage.limit.clone(),
                    throttle_rps: settings.throttle_rps.unwrap_or(DEFAULT_THROTTLE_RPS),
                    server_wide: app == SERVER_BUDGET,
                    both: false,
                    throttled: false,
                });
                changed = true;
                suspend = actions
                    .values()
                    .any(|action| *action == BudgetAction::Suspend);
            }
            let mut data = data.clone();
            data["actions"] = serde_json::json!(actions);
            happened.push((
                EventKind::BudgetExceeded,
                format!(
                    "the monthly budget was exceeded ({}); {}",
                    usage.limit,
                    taken.join(", ")
                ),
                "budget.exceeded",
                data,
            ));
        }
        if let Some(hold) = lifted
            && state.hold.is_none()
        {
            changed = true;
            happened.push((
                EventKind::BudgetResumed,
                format!(
                    "the budget was changed ({:.1}% used): its action is lifted",
                    usage.percent
                ),
                "budget.resumed",
                serde_json::json!({ "period": hold.period }),
            ));
        }
        self.save(app, &state, happened)?;
        // Once the hold is stored, so no job starts after the cancel.
        if suspend {
            self.cancel_jobs(app);
        }
        Ok(changed)
    }

    /// Cancels the running jobs of `app` (`*`: of every app).
    fn cancel_jobs(&self, app: &str) {
        if app != SERVER_BUDGET {
            self.jobs.cancel_all(app);
            return;
        }
        for app in self.store.apps().unwrap_or_default() {
            self.jobs.cancel_all(&app.name);
        }
    }
}
