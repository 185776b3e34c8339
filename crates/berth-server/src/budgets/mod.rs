//! Budgets that act: after each meter flush, every budget (an app's, set
//! with `berth budget set` or in berth.toml, and the server's `*`) is
//! measured; thresholds alert once a month, a spike alerts once, and past
//! 100% the budget's action is written as a hold the reconciler applies
//! (never a process killed here). Resuming lifts the hold for the month;
//! raising the budget lifts it and re-arms it.

mod figures;

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_cost::{PriceTable, SPIKE_FACTOR, due_alerts, is_spike, used};
use berth_proto::{
    BudgetAction, BudgetHold, BudgetSettings, BudgetStatus, DEFAULT_THROTTLE_RPS, EventKind,
};
use berth_store::{BudgetState, SERVER_BUDGET, Store};

use crate::jobs::JobRunner;
use crate::notify::Notifier;
use crate::reconciler::ReconcilerHandle;

/// Where a budget comes from.
const SET_HERE: &str = "berth budget set";
const FROM_SPEC: &str = "berth.toml";

/// The budgets and what they act through.
pub(crate) struct Budgets {
    pub(crate) store: Arc<Store>,
    pub(crate) tables: Vec<PriceTable>,
    /// The server's monthly price, for `own-server` prices.
    pub(crate) server_usd: Option<f64>,
    pub(crate) reconciler: ReconcilerHandle,
    pub(crate) jobs: Arc<JobRunner>,
    pub(crate) notifier: Arc<Notifier>,
}

impl Budgets {
    /// The budget in force for `app` (or `*`) and where it comes from.
    pub(crate) fn settings(
        &self,
        app: &str,
    ) -> Result<(Option<BudgetSettings>, Option<&'static str>), String> {
        if let Some(set) = self
            .store
            .budget_set_here(app)
            .map_err(|err| err.to_string())?
        {
            return Ok((Some(set), Some(SET_HERE)));
        }
        if app == SERVER_BUDGET {
            return Ok((None, None));
        }
        let spec_budget = self
            .store
            .active_release(app)
            .map_err(|err| err.to_string())?
            .and_then(|release| crate::stored_spec::spec_of(&release).ok())
            .and_then(|spec| spec.budget);
        Ok((spec_budget.clone(), spec_budget.map(|_| FROM_SPEC)))
    }

    /// Checks a budget a person set: its numbers and its provider.
    pub(crate) fn check(&self, settings: &BudgetSettings) -> Result<(), String> {
        settings.validate()?;
        berth_cost::find_plan(&self.tables, &settings.price_as)
            .map(|_| ())
            .map_err(|err| err.to_string())
    }

    /// Where `app`'s (or `*`'s) budget stands now.
    pub(crate) fn status(&self, app: &str, now: u64) -> Result<BudgetStatus, String> {
        let (settings, source) = self.settings(app)?;
        let state = self
            .store
            .budget_state(app)
            .map_err(|err| err.to_string())?;
        let month = berth_cost::CalendarMonth::of(now);
        let measured = match &settings {
            Some(settings) => figures::measure(
                &self.store,
                &self.tables,
                self.server_usd,
                app,
                settings,
                now,
            )?,
            None => figures::Measured::default(),
        };
        let percent = settings
            .as_ref()
            .map_or(0.0, |settings| used(settings, &measured.figures).percent);
        let current = state.period == month.name;
        Ok(BudgetStatus {
            app: app.to_string(),
            settings,
            source: source.map(str::to_string),
            period: month.name,
            spent_usd: measured.figures.spent_usd,
            projected_usd: measured.projected_usd,
            requests: measured.figures.requests,
            egress_gb: measured.figures.egress_gb,
            instance_hours: measured.figures.instance_hours,
            used_percent: percent,
            alerted: if current { state.alerted } else { Vec::new() },
            hold: if current { state.hold } else { None },
        })
    }

    /// Evaluates every budget (off the async threads), then has the
    /// reconciler apply what changed.
    pub(crate) async fn evaluate(self: &Arc<Self>, now: u64) {
        let budgets = self.clone();
        let changed = tokio::task::spawn_blocking(move || budgets.evaluate_all(now))
            .await
            .unwrap_or(false);
        if changed {
            self.reconciler.nudge();
        }
    }

    fn evaluate_all(&self, now: u64) -> bool {
        let mut keys = vec![SERVER_BUDGET.to_string()];
        match self.store.apps() {
            Ok(apps) => keys.extend(apps.into_iter().map(|app| app.name)),
            Err(err) => {
                tracing::error!(error = %err, "budgets cannot list apps");
                return false;
            }
        }
        let mut changed = false;
        for key in keys {
            match self.evaluate_one(&key, now) {
                Ok(acted) => changed |= acted,
                Err(err) => tracing::warn!(app = %key, error = %err, "cannot evaluate a budget"),
            }
        }
        changed
    }

    /// Evaluates one budget; whether its hold changed.
    fn evaluate_one(&self, app: &str, now: u64) -> Result<bool, String> {
        let (settings, _) = self.settings(app)?;
        let month = berth_cost::CalendarMonth::of(now);
        let mut state = self
            .store
            .budget_state(app)
            .map_err(|err| err.to_string())?;
        let mut changed = false;
        let mut events: Vec<(EventKind, String, &str, serde_json::Value)> = Vec::new();
        if state.period != month.name {
            if state.hold.is_some() {
                changed = true;
                events.push((
                    EventKind::BudgetResumed,
                    format!(
                        "a new month ({}) began: the budget's action is lifted",
                        month.name
                    ),
                    "budget.resumed",
                    serde_json::json!({ "period": month.name }),
                ));
            }
            state = BudgetState {
                period: month.name.clone(),
                ..BudgetState::default()
            };
        }
        let Some(settings) = settings else {
            if state.hold.take().is_some() {
                changed = true;
                events.push((
                    EventKind::BudgetResumed,
                    "the budget was removed: its action is lifted".into(),
                    "budget.resumed",
                    serde_json::json!({}),
                ));
            }
            self.save(app, &state, events)?;
            return Ok(changed);
        };
        let measured = figures::measure(
            &self.store,
            &self.tables,
            self.server_usd,
            app,
            &settings,
            now,
        )?;
        let usage = used(&settings, &measured.figures);
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
            events.push((
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
                measured.trailing_day_usd,
                SPIKE_FACTOR,
                settings.monthly_usd.unwrap_or(f64::INFINITY),
            )
        {
            state.spiked = true;
            events.push((
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
            let acts = actions
                .values()
                .any(|action| *action != BudgetAction::Alert);
            let taken: Vec<String> = actions
                .iter()
                .map(|(group, action)| format!("{group}: {}", action.as_str()))
                .collect();
            if acts {
                state.hold = Some(BudgetHold {
                    period: state.period.clone(),
                    actions: actions.clone(),
                    since: now,
                    reason: usage.limit.clone(),
                    throttle_rps: settings.throttle_rps.unwrap_or(DEFAULT_THROTTLE_RPS),
                });
                changed = true;
                if actions
                    .values()
                    .any(|action| *action == BudgetAction::Suspend)
                {
                    self.cancel_jobs(app);
                }
            }
            let mut data = data.clone();
            data["actions"] = serde_json::json!(actions);
            events.push((
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
        self.save(app, &state, events)?;
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

    fn save(
        &self,
        app: &str,
        state: &BudgetState,
        events: Vec<(EventKind, String, &str, serde_json::Value)>,
    ) -> Result<(), String> {
        if events.is_empty() {
            return self
                .store
                .save_budget_state(app, state, None)
                .map_err(|err| err.to_string());
        }
        for (kind, message, event, data) in &events {
            // Each event is written with the state, in one transaction: a
            // crash between two repeats no alert.
            self.store
                .save_budget_state(app, state, Some((kind.clone(), message)))
                .map_err(|err| err.to_string())?;
            tracing::info!(app, event, "{message}");
            self.notifier.send(event, app, message, data.clone());
        }
        Ok(())
    }

    /// Lifts the hold on `app` (or `*`) for the rest of the month.
    pub(crate) fn resume(&self, app: &str, now: u64) -> Result<BudgetStatus, String> {
        let mut state = self
            .store
            .budget_state(app)
            .map_err(|err| err.to_string())?;
        if let Some(hold) = state.hold.take() {
            let message = format!(
                "resumed by hand; the budget ({}) will not act again this month",
                hold.reason
            );
            self.save(
                app,
                &state,
                vec![(
                    EventKind::BudgetResumed,
                    message,
                    "budget.resumed",
                    serde_json::json!({ "period": hold.period }),
                )],
            )?;
            self.reconciler.nudge();
        }
        self.status(app, now)
    }

    /// Sets `app`'s budget by hand (`None`: removes it). A budget now
    /// above what was used lifts the hold and re-arms its action and the
    /// alerts above the use.
    pub(crate) fn set(
        &self,
        app: &str,
        settings: Option<&BudgetSettings>,
        now: u64,
    ) -> Result<BudgetStatus, String> {
        if let Some(settings) = settings {
            self.check(settings)?;
        }
        self.store
            .set_budget(app, settings)
            .map_err(|err| err.to_string())?;
        let status = self.status(app, now)?;
        let mut state = self
            .store
            .budget_state(app)
            .map_err(|err| err.to_string())?;
        if state.period == status.period && status.used_percent < 100.0 {
            let lifted = state.hold.take();
            state.acted = false;
            state
                .alerted
                .retain(|at| f64::from(*at) <= status.used_percent);
            let events = match lifted {
                Some(_) => vec![(
                    EventKind::BudgetResumed,
                    format!(
                        "the budget was raised ({:.1}% used): its action is lifted",
                        status.used_percent
                    ),
                    "budget.resumed",
                    serde_json::json!({ "period": state.period }),
                )],
                None => Vec::new(),
            };
            self.save(app, &state, events)?;
            self.reconciler.nudge();
        }
        self.evaluate_one(app, now)?;
        self.status(app, now)
    }
}
