//! Budgets: the ones set with `berth budget set` (over berth.toml's; `*`
//! is the server's), and where each stands this month — alerts sent, a
//! spike reported, the action in force.

use std::collections::BTreeMap;

use berth_proto::{BudgetHold, BudgetSettings};
use rusqlite::{OptionalExtension, params};

use crate::*;

/// The key of the server's own budget.
pub const SERVER_BUDGET: &str = "*";

/// Something a budget did: an event for the log and, when `notify` is
/// set, a webhook event (its name and JSON payload).
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetEvent {
    /// Its kind in the event log.
    pub kind: EventKind,
    /// For a person.
    pub message: String,
    /// The webhook event's name and payload.
    pub notify: Option<(String, String)>,
}

/// Where a budget stands this month.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BudgetState {
    /// The month, `2026-12`.
    pub period: String,
    /// Thresholds alerted.
    pub alerted: Vec<u32>,
    /// Whether a spike was reported.
    pub spiked: bool,
    /// Whether the budget acted this month (a resume does not re-arm it;
    /// changing the budget does).
    pub acted: bool,
    /// The settings last evaluated (JSON): a change re-arms the budget.
    pub settings_seen: Option<String>,
    /// The action in force.
    pub hold: Option<BudgetHold>,
}

impl Store {
    /// Sets (or with `None` removes) the budget of `app` (or `*`).
    pub fn set_budget(&self, app: &str, settings: Option<&BudgetSettings>) -> Result<()> {
        self.write(|tx| {
            if app != SERVER_BUDGET {
                ensure_app(tx, app)?;
            }
            match settings {
                Some(settings) => {
                    let json = serde_json::to_string(settings).unwrap_or_default();
                    tx.execute(
                        "INSERT INTO budgets (app, settings, updated_at) VALUES (?1, ?2, ?3)
                         ON CONFLICT (app) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
                        params![app, json, now_rfc3339()],
                    )?;
                }
                None => {
                    tx.execute("DELETE FROM budgets WHERE app = ?1", [app])?;
                }
            }
            Ok(())
        })
    }

    /// The budget set with `berth budget set` for `app` (or `*`).
    pub fn budget_set_here(&self, app: &str) -> Result<Option<BudgetSettings>> {
        let conn = self.conn();
        let text: Option<String> = conn
            .query_row(
                "SELECT settings FROM budgets WHERE app = ?1",
                [app],
                |row| row.get(0),
            )
            .optional()?;
        text.map(|text| from_json("budget", &text)).transpose()
    }

    /// Where the budget of `app` (or `*`) stands (empty if never evaluated).
    pub fn budget_state(&self, app: &str) -> Result<BudgetState> {
        let conn = self.conn();
        type Row = (String, String, bool, bool, Option<String>, Option<String>);
        let row: Option<Row> = conn
            .query_row(
                "SELECT period, alerted, spiked, acted, settings_seen, hold FROM budget_state WHERE app = ?1",
                [app],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((period, alerted, spiked, acted, settings_seen, hold)) = row else {
            return Ok(BudgetState::default());
        };
        Ok(BudgetState {
            period,
            alerted: from_json("budget alerts", &alerted)?,
            spiked,
            acted,
            settings_seen,
            hold: hold
                .map(|hold| from_json("budget hold", &hold))
                .transpose()?,
        })
    }

    /// Saves where the budget of `app` stands with what happened, in one
    /// transaction: each event into the event log and, when it notifies,
    /// into the outbox of every webhook that asks for it.
    pub fn save_budget_state(
        &self,
        app: &str,
        state: &BudgetState,
        events: &[BudgetEvent],
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO budget_state (app, period, alerted, spiked, acted, settings_seen, hold) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (app) DO UPDATE SET period = excluded.period, alerted = excluded.alerted, spiked = excluded.spiked,
                    acted = excluded.acted, settings_seen = excluded.settings_seen, hold = excluded.hold",
                params![
                    app,
                    state.period,
                    serde_json::to_string(&state.alerted).unwrap_or_else(|_| "[]".into()),
                    state.spiked,
                    state.acted,
                    state.settings_seen,
                    state
                        .hold
                        .as_ref()
                        .map(|hold| serde_json::to_string(hold).unwrap_or_default()),
                ],
            )?;
            for event in events {
                insert_event(tx, app, &event.kind, &event.message)?;
                if let Some((name, body)) = &event.notify {
                    crate::notify::enqueue_in(tx, name, app, body)?;
                }
            }
            Ok(())
        })
    }

    /// The holds in force this month, by app (`*`: the server's, on every
    /// app). A hold of an earlier month is over, evaluated or not.
    pub fn budget_holds(&self) -> Result<BTreeMap<String, BudgetHold>> {
        let now = time::OffsetDateTime::now_utc();
        let month = format!("{:04}-{:02}", now.year(), u8::from(now.month()));
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT app, hold FROM budget_state WHERE hold IS NOT NULL")?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut holds = BTreeMap::new();
        for row in rows {
            let (app, hold) = row?;
            let hold: BudgetHold = from_json("budget hold", &hold)?;
            if hold.period == month {
                holds.insert(app, hold);
            }
        }
        Ok(holds)
    }
}
