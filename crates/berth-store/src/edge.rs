//! Edge rules set with `berth edge`: kept per app across deploys, applied
//! on top of the rules its berth.toml sets.

use std::collections::HashMap;

use berth_proto::EdgeRuleSet;
use rusqlite::OptionalExtension;

use crate::*;

fn parse(app: &str, text: &str) -> Result<EdgeRuleSet> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        what: format!("edge rules of app `{app}`"),
        source,
    })
}

impl Store {
    /// The rules set for `app` with `berth edge` (empty when none).
    pub fn edge_rules(&self, app: &str) -> Result<EdgeRuleSet> {
        let conn = self.conn();
        let text: Option<String> = conn
            .prepare_cached("SELECT rules FROM edge_rules WHERE app = ?1")?
            .query_row([app], |row| row.get(0))
            .optional()?;
        text.map_or(Ok(EdgeRuleSet::default()), |text| parse(app, &text))
    }

    /// The rules set with `berth edge`, by app, for every app that has any.
    pub fn all_edge_rules(&self) -> Result<HashMap<String, EdgeRuleSet>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT app, rules FROM edge_rules")?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut all = HashMap::new();
        for row in rows {
            let (app, text) = row?;
            let rules = parse(&app, &text)?;
            all.insert(app, rules);
        }
        Ok(all)
    }

    /// Makes `rules` the ones set for `app` with `berth edge` (empty rules
    /// clear them).
    pub fn set_edge_rules(&self, app: &str, rules: &EdgeRuleSet) -> Result<()> {
        self.write(|tx| {
            ensure_app(tx, app)?;
            if rules.is_empty() {
                tx.execute("DELETE FROM edge_rules WHERE app = ?1", [app])?;
                return Ok(());
            }
            let text = serde_json::to_string(rules).map_err(|source| StoreError::Corrupt {
                what: format!("edge rules of app `{app}`"),
                source,
            })?;
            tx.execute(
                "INSERT INTO edge_rules (app, rules, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (app) DO UPDATE SET rules = excluded.rules, updated_at = excluded.updated_at",
                rusqlite::params![app, text, now_rfc3339()],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_kept_per_app_cleared_when_empty_and_gone_with_the_app() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("berth.db")).unwrap();
        store.create_app("api").unwrap();
        assert!(store.edge_rules("api").unwrap().is_empty());
        let rules = EdgeRuleSet {
            deny: vec!["10.0.0.0/8".parse().unwrap()],
            max_connections: Some(3),
            ..EdgeRuleSet::default()
        };
        store.set_edge_rules("api", &rules).unwrap();
        assert_eq!(store.edge_rules("api").unwrap(), rules);
        assert_eq!(store.all_edge_rules().unwrap()["api"], rules);
        assert!(matches!(
            store.set_edge_rules("nope", &rules),
            Err(StoreError::NotFound(_))
        ));
        store
            .set_edge_rules("api", &EdgeRuleSet::default())
            .unwrap();
        assert!(store.all_edge_rules().unwrap().is_empty());
        store.set_edge_rules("api", &rules).unwrap();
        store.destroy_app("api").unwrap();
        assert!(store.all_edge_rules().unwrap().is_empty());
    }
}
