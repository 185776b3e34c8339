//! Row decoding shared by the store's tables.

use std::collections::BTreeMap;

use rusqlite::Connection;

use crate::*;

pub(crate) const RELEASE_COLUMNS: &str = "SELECT app, version, status, cause, slug, spec_json, processes_json, env_json, created_at, secrets_json FROM releases";

pub(crate) const RESOURCE_COLUMNS: &str =
    "SELECT app, kind, name, sealed_password, port, created_at FROM resources";

pub(crate) fn resource_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ResourceRow> {
    Ok(ResourceRow {
        app: row.get(0)?,
        kind: ResourceKind::from(row.get::<_, String>(1)?.as_str()),
        name: row.get(2)?,
        sealed_password: row.get(3)?,
        port: row.get(4)?,
        created_at: row.get(5)?,
    })
}

/// Makes the app's secrets table hold exactly `secrets`, keeping the time a
/// secret last changed when its value did not.
pub(crate) fn replace_secrets(
    tx: &Connection,
    app: &str,
    secrets: &BTreeMap<String, SealedSecret>,
) -> Result<()> {
    let now = now_rfc3339();
    let existing: BTreeMap<String, String> = {
        let mut stmt = tx.prepare("SELECT name, digest FROM secrets WHERE app = ?1")?;
        let rows = stmt.query_map([app], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for name in existing.keys() {
        if !secrets.contains_key(name) {
            tx.execute(
                "DELETE FROM secrets WHERE app = ?1 AND name = ?2",
                params![app, name],
            )?;
        }
    }
    for (name, secret) in secrets {
        if existing.get(name) == Some(&secret.digest) {
            tx.execute(
                "UPDATE secrets SET sealed = ?3 WHERE app = ?1 AND name = ?2",
                params![app, name, secret.sealed],
            )?;
        } else {
            tx.execute(
                "INSERT OR REPLACE INTO secrets (app, name, sealed, digest, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![app, name, secret.sealed, secret.digest, now],
            )?;
        }
    }
    Ok(())
}

pub(crate) type RawRelease = (
    String,
    u64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

pub(crate) fn raw_release(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRelease> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
    ))
}

pub(crate) fn release_from_raw(raw: RawRelease) -> Result<ReleaseRow> {
    let (
        app,
        version,
        status,
        cause,
        slug,
        spec_json,
        processes_json,
        env_json,
        created_at,
        secrets_json,
    ) = raw;
    Ok(ReleaseRow {
        processes: from_json("release processes", &processes_json)?,
        env: from_json("release env", &env_json)?,
        secrets: from_json("release secrets", &secrets_json)?,
        app,
        version,
        status: ReleaseStatus::from(status.as_str()),
        cause,
        slug,
        spec_json,
        created_at,
    })
}

pub(crate) fn app_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AppRow> {
    Ok(AppRow {
        name: row.get(0)?,
        created_at: row.get(1)?,
        target_release: row.get(2)?,
    })
}
