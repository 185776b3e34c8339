//! Numbered schema migrations, applied in order inside one transaction each.
//! A migration, once released, is never edited: add the next number instead.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: apps, releases, process groups, env, events, instance journal.
    r#"
    CREATE TABLE apps (
        name TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        target_release INTEGER
    );
    CREATE TABLE releases (
        app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        status TEXT NOT NULL,
        cause TEXT NOT NULL,
        slug TEXT NOT NULL,
        spec_json TEXT NOT NULL,
        processes_json TEXT NOT NULL,
        env_json TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (app, version)
    );
    CREATE TABLE process_groups (
        app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        desired INTEGER NOT NULL,
        PRIMARY KEY (app, name)
    );
    CREATE TABLE env (
        app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (app, key)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        app TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX events_by_app ON events (app, id);
    CREATE TABLE instance_journal (
        id TEXT PRIMARY KEY,
        app TEXT NOT NULL,
        pid INTEGER NOT NULL
    );
    "#,
];

/// Brings the schema to the newest version.
pub(crate) fn apply(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: usize = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(())
}
