//! End to end: `berth postgres migrate` applies an app's `migrations/` to its
//! database the way sqlx does, keeping `_sqlx_migrations`, and `up` says
//! when some are not applied.

use berth_testkit::{TestServer, example};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// `sql` run with psql on the app's database; its unaligned output.
async fn psql(server: &TestServer, sql: &str) -> String {
    let url = server
        .ok(&["postgres", "url", "--app", "migrated"])
        .await
        .stdout
        .trim()
        .to_string();
    let output = tokio::process::Command::new("psql")
        .arg(url)
        .args(["-tAc", sql])
        .output()
        .await
        .expect("psql (.ci/run installs postgresql-client)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_in_order_with_sqlx_bookkeeping() {
    setup();
    let server = TestServer::start().await;
    let dir = example("plain");
    std::fs::write(
        dir.path().join("berth.toml"),
        "app = \"migrated\"\n\n[resources]\npostgres = true\n",
    )
    .unwrap();
    let migrations = dir.path().join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    std::fs::write(
        migrations.join("20240101000000_create_notes.sql"),
        "CREATE TABLE notes (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL);",
    )
    .unwrap();
    std::fs::write(
        migrations.join("20240102000000_add_title.sql"),
        "ALTER TABLE notes ADD COLUMN title TEXT;",
    )
    .unwrap();
    let deployed = server.ok_in(dir.path(), &["up"]).await;
    assert!(
        deployed
            .stderr
            .contains("2 migration(s) in migrations/ are not applied")
            && deployed
                .stderr
                .contains("berth postgres migrate --app migrated"),
        "{}",
        deployed.stderr
    );

    let applied = server
        .ok(&["postgres", "migrate", "--app", "migrated"])
        .await;
    assert_eq!(
        applied.stdout.trim(),
        "applied 20240101000000 create notes\napplied 20240102000000 add title"
    );
    assert_eq!(
        psql(&server, "SELECT version, description, success, length(checksum) FROM _sqlx_migrations ORDER BY version").await,
        "20240101000000|create notes|t|48\n20240102000000|add title|t|48"
    );
    assert_eq!(
        psql(&server, "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'notes'").await,
        "id,body,title"
    );
    let again = server
        .ok(&["postgres", "migrate", "--app", "migrated"])
        .await;
    assert_eq!(again.stdout.trim(), "nothing to apply (2 applied before)");
    let quiet = server.ok_in(dir.path(), &["up"]).await;
    assert!(!quiet.stderr.contains("not applied"), "{}", quiet.stderr);

    // A failing migration applies nothing of itself and says why.
    std::fs::write(
        migrations.join("20240103000000_bad.sql"),
        "ALTER TABLE notes ADD COLUMN rating INT; SELECT * FROM nowhere;",
    )
    .unwrap();
    server.ok_in(dir.path(), &["up"]).await;
    let failed = server
        .fails(&["postgres", "migrate", "--app", "migrated"])
        .await;
    assert!(
        failed
            .stderr
            .contains("migration 20240103000000 (bad) failed")
            && failed.stderr.contains("\"nowhere\" does not exist"),
        "{}",
        failed.stderr
    );
    assert_eq!(
        psql(&server, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'notes' AND column_name = 'rating'").await,
        "0",
        "its transaction was rolled back"
    );

    // A migration changed after it was applied is refused by name.
    std::fs::remove_file(migrations.join("20240103000000_bad.sql")).unwrap();
    std::fs::write(
        migrations.join("20240101000000_create_notes.sql"),
        "CREATE TABLE notes (id INT);",
    )
    .unwrap();
    server.ok_in(dir.path(), &["up"]).await;
    let changed = server
        .fails(&["postgres", "migrate", "--app", "migrated"])
        .await;
    assert!(
        changed
            .stderr
            .contains("migration 20240101000000 (create notes) was changed after it was applied"),
        "{}",
        changed.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_speaks_tls_to_apps_that_require_it() {
    setup();
    let server = TestServer::start().await;
    let dir = example("plain");
    std::fs::write(
        dir.path().join("berth.toml"),
        "app = \"migrated\"\n\n[resources]\npostgres = true\n",
    )
    .unwrap();
    server.ok_in(dir.path(), &["up"]).await;
    let url = server
        .ok(&["postgres", "url", "--app", "migrated"])
        .await
        .stdout
        .trim()
        .to_string();
    assert!(url.ends_with("?sslmode=prefer"), "{url}");
    let ca = server.data_dir().join("postgres/tls/ca.crt");
    // sslmode=require, and verify-full against berth's own CA.
    for mode in [
        "sslmode=require".to_string(),
        format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    ] {
        let output = tokio::process::Command::new("psql")
            .arg(url.replace("sslmode=prefer", &mode))
            .args([
                "-tAc",
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            ])
            .output()
            .await
            .expect("psql");
        assert!(
            output.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "t",
            "{mode}"
        );
    }
}
