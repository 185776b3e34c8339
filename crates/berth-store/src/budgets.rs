//! Budgets: the ones set with `berth budget set` (over berth.toml's; `*`
//! is the server's), and where each stands this month — alerts sent, a
//! spike reported, the action in force.

use std::collections::BTreeMap;

use berth_proto::{BudgetHold, BudgetSettings};
use rusqlite::{OptionalExtension, params};

use crate::*;

/// The key of the server's own budget.
pub const SERVER_BUDGET: &str = "*";

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
    /// raising the budget does).
    pub acted: bool,
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
        let row: Option<(String, String, bool, bool, Option<String>)> = conn
            .query_row(
                "SELECT period, alerted, spiked, acted, hold FROM budget_state WHERE app = ?1",
                [app],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                },
            )
            .optional()?;
        let Some((period, alerted, spiked, acted, hold)) = row else {
            return Ok(BudgetState::default());
        };
        Ok(BudgetState {
            period,
            alerted: from_json("budget alerts", &alerted)?,
            spiked,
            acted,
            hold: hold
                .map(|hold| from_json("budget hold", &hold))
                .transpose()?,
        })
    }

    /// Saves where the budget of `app` stands, with an event when `event`
    /// says what changed.
    pub fn save_budget_state(
        &self,
        app: &str,
        state: &BudgetState,
        event: Option<(EventKind, &str)>,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO budget_state (app, period, alerted, spiked, acted, hold) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (app) DO UPDATE SET period = excluded.period, alerted = excluded.alerted, spiked = excluded.spiked, acted = excluded.acted, hold = excluded.hold",
                params![
                    app,
                    state.period,
                    serde_json::to_string(&state.alerted).unwrap_or_else(|_| "[]".into()),
                    state.spiked,
                    state.acted,
                    state
                        .hold
                        .as_ref()
                        .map(|hold| serde_json::to_string(hold).unwrap_or_default()),
                ],
            )?;
            if let Some((kind, message)) = event {
                insert_event(tx, app, &kind, message)?;
            }
            Ok(())
        })
    }

    /// The holds in force, by app (`*`: the server's, on every app).
    pub fn budget_holds(&self) -> Result<BTreeMap<String, BudgetHold>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT app, hold FROM budget_state WHERE hold IS NOT NULL")?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut holds = BTreeMap::new();
        for row in rows {
            let (app, hold) = row?;
            holds.insert(app, from_json("budget hold", &hold)?);
        }
        Ok(holds)
    }
}
