//! Numbered schema migrations, applied in order inside one transaction each.
//! A migration, once released, is never edited: add the next number instead.

use rusqlite::Connection;

pub(crate) const MIGRATIONS: &[&str] = &[
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
    // 2: job executions, their task attempts, and when each schedule last fired.
    r#"
    CREATE TABLE job_executions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app TEXT NOT NULL,
        job TEXT NOT NULL,
        release INTEGER NOT NULL,
        trigger TEXT NOT NULL,
        status TEXT NOT NULL,
        tasks INTEGER NOT NULL,
        parallelism INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        message TEXT
    );
    CREATE INDEX job_executions_by_job ON job_executions (app, job, id);
    CREATE TABLE job_task_attempts (
        execution INTEGER NOT NULL REFERENCES job_executions(id) ON DELETE CASCADE,
        task_index INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        status TEXT NOT NULL,
        exit_code INTEGER,
        reason TEXT,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        PRIMARY KEY (execution, task_index, attempt)
    );
    CREATE TABLE job_schedules (
        app TEXT NOT NULL,
        job TEXT NOT NULL,
        last_fired TEXT NOT NULL,
        PRIMARY KEY (app, job)
    );
    "#,
    // 3: secrets (sealed by the vault), each release's secrets, managed resources.
    r#"
    ALTER TABLE releases ADD COLUMN secrets_json TEXT NOT NULL DEFAULT '{}';
    CREATE TABLE secrets (
        app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        sealed TEXT NOT NULL,
        digest TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (app, name)
    );
    CREATE TABLE resources (
        app TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        sealed_password TEXT NOT NULL,
        port INTEGER,
        created_at TEXT NOT NULL,
        PRIMARY KEY (app, kind)
    );
    "#,
    // 4: autoscaling: the autoscaler's count (over the manual one while set),
    // bounds set with `berth scale --min/--max`, and why the count is what it is.
    r#"
    ALTER TABLE process_groups ADD COLUMN scaled INTEGER;
    ALTER TABLE process_groups ADD COLUMN scale_min INTEGER;
    ALTER TABLE process_groups ADD COLUMN scale_max INTEGER;
    ALTER TABLE process_groups ADD COLUMN scale_reason TEXT;
    "#,
    // 5: each app's own user id, for its instances' sandbox.
    r#"
    ALTER TABLE apps ADD COLUMN uid INTEGER;
    "#,
    // 6: custom domains, each served by one app; `from_spec` when its
    // berth.toml names it (a deploy replaces those).
    r#"
    CREATE TABLE domains (
        name TEXT PRIMARY KEY,
        app TEXT NOT NULL,
        from_spec INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );
    "#,
    // 7: edge rules set with `berth edge` (JSON `EdgeRuleSet`), on top of
    // the ones each release's berth.toml sets.
    r#"
    CREATE TABLE edge_rules (
        app TEXT PRIMARY KEY,
        rules TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    "#,
    // 8: a custom domain served with berth's own CA even with ACME
    // (`berth domains add --tls internal`).
    r#"
    ALTER TABLE domains ADD COLUMN tls_internal INTEGER NOT NULL DEFAULT 0;
    "#,
    // 9: log drains, with how far each has delivered (an id of logs.db).
    r#"
    CREATE TABLE log_drains (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        url TEXT NOT NULL,
        ca_pem TEXT,
        buffer_lines INTEGER NOT NULL,
        cursor INTEGER NOT NULL,
        delivered INTEGER NOT NULL DEFAULT 0,
        dropped INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at TEXT NOT NULL
    );
    "#,
    // 10: metered usage per app, process group and size, by minute, hour
    // and day; budgets set with `berth budget set` (`*`: the server's) and
    // where each stands this month; webhooks and their deliveries.
    r#"
    CREATE TABLE usage (
        app TEXT NOT NULL,
        process TEXT NOT NULL,
        resolution TEXT NOT NULL,
        at INTEGER NOT NULL,
        cpus REAL NOT NULL,
        memory_mb INTEGER NOT NULL,
        instance_seconds REAL NOT NULL DEFAULT 0,
        busy_seconds REAL NOT NULL DEFAULT 0,
        cpu_seconds REAL NOT NULL DEFAULT 0,
        memory_peak INTEGER NOT NULL DEFAULT 0,
        memory_byte_seconds REAL NOT NULL DEFAULT 0,
        requests INTEGER NOT NULL DEFAULT 0,
        bytes_in INTEGER NOT NULL DEFAULT 0,
        bytes_out INTEGER NOT NULL DEFAULT 0,
        egress_bytes INTEGER NOT NULL DEFAULT 0,
        build_seconds REAL NOT NULL DEFAULT 0,
        job_seconds REAL NOT NULL DEFAULT 0,
        volume_bytes INTEGER NOT NULL DEFAULT 0,
        database_bytes INTEGER NOT NULL DEFAULT 0,
        backup_bytes INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (resolution, at, app, process, cpus, memory_mb)
    ) WITHOUT ROWID;
    CREATE INDEX usage_by_app ON usage (app, resolution, at);
    CREATE TABLE budgets (
        app TEXT PRIMARY KEY,
        settings TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE budget_state (
        app TEXT PRIMARY KEY,
        period TEXT NOT NULL,
        alerted TEXT NOT NULL DEFAULT '[]',
        spiked INTEGER NOT NULL DEFAULT 0,
        acted INTEGER NOT NULL DEFAULT 0,
        settings_seen TEXT,
        hold TEXT
    );
    CREATE TABLE notify_channels (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        url TEXT NOT NULL,
        events TEXT NOT NULL,
        format TEXT NOT NULL,
        secret TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE notify_deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel INTEGER NOT NULL REFERENCES notify_channels(id) ON DELETE CASCADE,
        event TEXT NOT NULL,
        app TEXT NOT NULL,
        at TEXT NOT NULL,
        body TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL,
        last_error TEXT
    );
    CREATE INDEX notify_due ON notify_deliveries (status, next_at);
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
