//! Budgets that act: after each meter flush, every budget (an app's, set
//! with `berth budget set` or in berth.toml, and the server's `*`) is
//! measured; thresholds alert once a month, a spike alerts once, and past
//! 100% the budget's action is written as a hold the reconciler applies
//! (never a process killed here). Resuming lifts the hold for the month;
//! changing the budget re-arms it (and lifts the hold when the new one is
//! not crossed). One lock serialises every read-change-write of a
//! budget's state: the meter's evaluation, `set` and `resume`.

mod evaluate;
mod figures;

use std::sync::{Arc, Mutex};

use berth_cost::{PriceTable, used};
use berth_proto::{BudgetSettings, BudgetStatus, EventKind};
use berth_store::{BudgetEvent, SERVER_BUDGET, Store};

use crate::jobs::JobRunner;
use crate::notify::Notifier;
use crate::reconciler::ReconcilerHandle;

/// Where a budget comes from.
const SET_HERE: &str = "berth budget set";
const FROM_SPEC: &str = "berth.toml";

/// The budgets and what they act through.
pub(crate) struct Budgets {
    pub(crate) store: Arc<Store>,
    pub(crate) tables: Arc<Vec<PriceTable>>,
    /// The server's monthly price, for `own-server` prices.
    pub(crate) server_usd: Option<f64>,
    pub(crate) reconciler: ReconcilerHandle,
    pub(crate) jobs: Arc<JobRunner>,
    pub(crate) notifier: Arc<Notifier>,
    /// Held across every read-change-write of a budget's state.
    pub(crate) lock: Mutex<()>,
}

/// An event to record and send: its kind, message, webhook name, data.
pub(crate) type Happened = (EventKind, String, &'static str, serde_json::Value);

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

    fn locked(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
                &figures::Reads::load(&self.store, now)?,
                &self.tables,
                self.server_usd,
                app,
                settings,
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
        let reads = match figures::Reads::load(&self.store, now) {
            Ok(reads) => reads,
            Err(err) => {
                tracing::error!(error = %err, "budgets cannot read usage");
                return false;
            }
        };
        let mut changed = false;
        for key in keys {
            let _guard = self.locked();
            match self.evaluate_one(&key, &reads) {
                Ok(acted) => changed |= acted,
                Err(err) => tracing::warn!(app = %key, error = %err, "cannot evaluate a budget"),
            }
        }
        changed
    }

    /// Saves `state` with what happened, in one transaction (the events,
    /// and their webhook deliveries), then wakes the deliverer.
    fn save(
        &self,
        app: &str,
        state: &berth_store::BudgetState,
        happened: Vec<Happened>,
    ) -> Result<(), String> {
        let events: Vec<BudgetEvent> = happened
            .iter()
            .map(|(kind, message, event, data)| BudgetEvent {
                kind: kind.clone(),
                message: message.clone(),
                notify: Some((
                    event.to_string(),
                    crate::notify::payload(message, data.clone()),
                )),
            })
            .collect();
        self.store
            .save_budget_state(app, state, &events)
            .map_err(|err| err.to_string())?;
        for (_, message, event, _) in &happened {
            tracing::info!(app, event, "{message}");
        }
        if !happened.is_empty() {
            self.notifier.wake();
        }
        Ok(())
    }

    /// Lifts the hold on `app` (or `*`) for the rest of the month.
    pub(crate) fn resume(&self, app: &str, now: u64) -> Result<BudgetStatus, String> {
        {
            let _guard = self.locked();
            let mut state = self
                .store
                .budget_state(app)
                .map_err(|err| err.to_string())?;
            if let Some(hold) = state.hold.take() {
                let message = format!(
                    "resumed by hand; the budget ({}) will not act again this month unless it is changed",
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
        }
        self.status(app, now)
    }

    /// Sets `app`'s budget by hand (`None`: removes it), then evaluates
    /// it: a changed budget re-arms.
    pub(crate) fn set(
        &self,
        app: &str,
        settings: Option<&BudgetSettings>,
        now: u64,
    ) -> Result<BudgetStatus, String> {
        if let Some(settings) = settings {
            self.check(settings)?;
        }
        {
            let _guard = self.locked();
            self.store
                .set_budget(app, settings)
                .map_err(|err| err.to_string())?;
            if self.evaluate_one(app, &figures::Reads::load(&self.store, now)?)? {
                self.reconciler.nudge();
            }
        }
        self.status(app, now)
    }
}
