//! Process-group scaling: counts, bounds, and what every app wants running.

use std::collections::BTreeMap;

use rusqlite::params;

use crate::*;

impl Store {
    /// How each process group of `app` is scaled.
    pub fn scaling(&self, app: &str) -> Result<BTreeMap<String, GroupScaling>> {
        let conn = self.conn();
        ensure_app(&conn, app)?;
        let mut stmt = conn.prepare_cached(
            "SELECT name, desired, scaled, scale_min, scale_max, scale_reason FROM process_groups WHERE app = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map([app], |row| {
            Ok((
                row.get::<_, String>(0)?,
                GroupScaling {
                    manual: row.get(1)?,
                    scaled: row.get(2)?,
                    min: row.get(3)?,
                    max: row.get(4)?,
                    reason: row.get(5)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Sets the autoscaler's count for a group (`None` hands it back to the
    /// manual count), with the reason, recording the event of that kind
    /// (`None`: whoever acted on it recorded it).
    pub fn set_scaled(
        &self,
        app: &str,
        group: &str,
        count: Option<u32>,
        reason: &str,
        event: Option<EventKind>,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE process_groups SET scaled = ?3, scale_reason = ?4 WHERE app = ?1 AND name = ?2",
                params![app, group, count, reason],
            )?;
            if let Some(kind) = event {
                insert_event(tx, app, &kind, &format!("{group}: {reason}"))?;
            }
            Ok(())
        })
    }

    /// Sets a group's autoscaling bounds (`None` leaves one to the spec).
    pub fn set_scale_bounds(
        &self,
        app: &str,
        group: &str,
        min: Option<u32>,
        max: Option<u32>,
    ) -> Result<()> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE process_groups SET scale_min = COALESCE(?3, scale_min), scale_max = COALESCE(?4, scale_max) WHERE app = ?1 AND name = ?2",
                params![app, group, min, max],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!(
                    "process group `{group}` of app `{app}`"
                )));
            }
            let mut bounds = Vec::new();
            if let Some(min) = min {
                bounds.push(format!("min {min}"));
            }
            if let Some(max) = max {
                bounds.push(format!("max {max}"));
            }
            insert_event(
                tx,
                app,
                &EventKind::Scale,
                &format!("{group}: autoscaling bounds {}", bounds.join(", ")),
            )?;
            Ok(())
        })
    }

    /// Desired counts per process group.
    pub fn counts(&self, app: &str) -> Result<BTreeMap<String, u32>> {
        let conn = self.conn();
        ensure_app(&conn, app)?;
        counts(&conn, app)
    }

    /// Sets desired counts; every named group must exist in the target release.
    pub fn set_counts(&self, app: &str, counts: &BTreeMap<String, u32>) -> Result<()> {
        self.write(|tx| {
            ensure_app(tx, app)?;
            let known = self::counts(tx, app)?;
            for name in counts.keys() {
                if !known.contains_key(name) {
                    let groups: Vec<&str> = known.keys().map(String::as_str).collect();
                    return Err(StoreError::NotFound(format!(
                        "process group `{name}` of app `{app}` (it has: {})",
                        if groups.is_empty() {
                            "none yet; deploy first".to_string()
                        } else {
                            groups.join(", ")
                        }
                    )));
                }
            }
            let mut changes = Vec::new();
            for (name, desired) in counts {
                tx.execute(
                    "UPDATE process_groups SET desired = ?3, scaled = NULL, scale_reason = 'manual' WHERE app = ?1 AND name = ?2",
                    params![app, name, desired],
                )?;
                changes.push(format!("{name}={desired}"));
            }
            insert_event(
                tx,
                app,
                &EventKind::Scale,
                &format!("scaled {} (manual)", changes.join(" ")),
            )?;
            Ok(())
        })
    }

    /// What every app should run: its target release and counts.
    pub fn desired(&self) -> Result<Vec<DesiredApp>> {
        let apps = self.apps()?;
        let mut holds = self.budget_holds()?;
        let server_hold = holds.remove(SERVER_BUDGET);
        let mut desired = Vec::with_capacity(apps.len());
        for app in apps {
            let release = match app.target_release {
                Some(version) => Some(self.release(&app.name, version)?),
                None => None,
            };
            let counts = {
                let conn = self.conn();
                counts(&conn, &app.name)?
            };
            // The app's own hold and the server's: the stricter on each group.
            let hold = match (holds.remove(&app.name), &server_hold) {
                (Some(own), Some(server)) => Some(own.merged(server)),
                (own, server) => own.or_else(|| server.clone()),
            };
            desired.push(DesiredApp {
                app: app.name,
                release,
                counts,
                hold,
            });
        }
        Ok(desired)
    }
}
