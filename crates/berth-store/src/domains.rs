//! Custom domains: each name is served by one app, added by hand (`berth
//! domains add`) or named in the app's berth.toml (`[http_service]
//! domains`), which a deploy makes the app's exact list of spec domains.

use rusqlite::{OptionalExtension, Transaction, params};

use crate::*;

/// A custom domain as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRow {
    /// The name (lowercase, no trailing dot).
    pub name: String,
    /// The app that serves it.
    pub app: String,
    /// Whether the app's spec names it (else it was added by hand).
    pub from_spec: bool,
    /// RFC 3339.
    pub created_at: String,
    /// Served with berth's own CA's certificate, never the ACME CA's.
    pub tls_internal: bool,
}

impl Store {
    /// Gives `name` to `app`, its certificate from berth's own CA when
    /// `tls_internal`; a name another app has is a conflict that names that
    /// app. Adding a name the app has already only sets `tls_internal`.
    pub fn add_domain(&self, app: &str, name: &str, tls_internal: bool) -> Result<DomainRow> {
        self.write(|tx| {
            ensure_app(tx, app)?;
            claim(tx, app, name, false)?;
            tx.execute(
                "UPDATE domains SET tls_internal = ?2 WHERE name = ?1",
                params![name, tls_internal],
            )?;
            domain(tx, name)
        })
    }

    /// Makes `names` the domains `app`'s spec gives it: those no longer
    /// named are released, new ones claimed (a name added by hand that the
    /// spec then names becomes a spec domain). All or
    /// nothing: one taken by another app fails the whole change.
    pub fn set_spec_domains(&self, app: &str, names: &[String]) -> Result<()> {
        self.write(|tx| {
            ensure_app(tx, app)?;
            let had: Vec<String> = {
                let mut stmt =
                    tx.prepare("SELECT name FROM domains WHERE app = ?1 AND from_spec = 1")?;
                let rows = stmt.query_map([app], |row| row.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for gone in had.iter().filter(|name| !names.contains(name)) {
                tx.execute("DELETE FROM domains WHERE name = ?1", [gone])?;
            }
            for name in names {
                claim(tx, app, name, true)?;
            }
            Ok(())
        })
    }

    /// Takes `name` from `app`.
    pub fn remove_domain(&self, app: &str, name: &str) -> Result<()> {
        self.write(|tx| {
            let removed = tx.execute(
                "DELETE FROM domains WHERE name = ?1 AND app = ?2",
                params![name, app],
            )?;
            if removed == 0 {
                return Err(StoreError::NotFound(format!(
                    "domain `{name}` of app `{app}`"
                )));
            }
            Ok(())
        })
    }

    /// The domains of `app`, or of every app, by name.
    pub fn domains(&self, app: Option<&str>) -> Result<Vec<DomainRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT name, app, from_spec, created_at, tls_internal FROM domains \
             WHERE ?1 IS NULL OR app = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map([app], domain_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn claim(tx: &Transaction<'_>, app: &str, name: &str, from_spec: bool) -> Result<()> {
    let owner: Option<String> = tx
        .query_row("SELECT app FROM domains WHERE name = ?1", [name], |row| {
            row.get(0)
        })
        .optional()?;
    match owner {
        Some(owner) if owner != app => Err(StoreError::Conflict(format!(
            "domain `{name}` belongs to app `{owner}`; remove it there first (berth domains remove {name} --app {owner})"
        ))),
        Some(_) if from_spec => {
            tx.execute("UPDATE domains SET from_spec = 1 WHERE name = ?1", [name])?;
            Ok(())
        }
        Some(_) => Ok(()),
        None => {
            tx.execute(
                "INSERT INTO domains (name, app, from_spec, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, app, from_spec, now_rfc3339()],
            )?;
            Ok(())
        }
    }
}

fn domain(tx: &Transaction<'_>, name: &str) -> Result<DomainRow> {
    Ok(tx.query_row(
        "SELECT name, app, from_spec, created_at, tls_internal FROM domains WHERE name = ?1",
        [name],
        domain_from_row,
    )?)
}

fn domain_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DomainRow> {
    Ok(DomainRow {
        name: row.get(0)?,
        app: row.get(1)?,
        from_spec: row.get(2)?,
        created_at: row.get(3)?,
        tls_internal: row.get(4)?,
    })
}
