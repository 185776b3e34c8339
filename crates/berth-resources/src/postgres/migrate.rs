//! An app's `migrations/` folder applied the way sqlx applies it, with
//! sqlx's own bookkeeping table (`_sqlx_migrations`: version, description,
//! success, SHA-384 checksum, execution time), so `sqlx migrate run`,
//! `sqlx::migrate!()` and `berth postgres migrate` agree on what is applied.
//!
//! Files are `VERSION_DESCRIPTION.sql` (or `.up.sql`; `.down.sql` files are
//! reverts and never applied here). Each runs in a transaction with its row,
//! unless its first line is `-- no-transaction`. A migration whose file
//! changed after it was applied, or one that failed half-way (a row with
//! `success = false`), stops the run with the reason.

use std::path::Path;

use sha2::{Digest, Sha384};

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Its version (the number before the first `_`).
    pub version: i64,
    /// Its description, as sqlx makes it (underscores become spaces).
    pub description: String,
    /// Its SQL.
    pub sql: String,
    /// SHA-384 of the SQL.
    pub checksum: Vec<u8>,
    /// Whether it runs outside a transaction (`-- no-transaction`).
    pub no_transaction: bool,
}

/// What applying did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Versions and descriptions applied now, in order.
    pub applied: Vec<(i64, String)>,
    /// How many were applied before.
    pub already: usize,
}

/// The largest migration file read.
const MAX_MIGRATION: u64 = 16 * 1024 * 1024;

/// Reads the migrations in `dir` (an app tree's `migrations/`), in version
/// order. Files that are not migrations (no number before `_`, not `.sql`)
/// are refused by name, as sqlx refuses them.
///
/// The app wrote them, and the server reads them: within the tree `dir`
/// is in, so links inside it are followed (a workspace's `migrations ->
/// crates/db/migrations`) but none leads out, and within a bound.
pub fn read_migrations(dir: &Path) -> Result<Vec<Migration>, String> {
    let (Some(root), Some(folder)) = (dir.parent(), dir.file_name()) else {
        return Err(format!("{} is not a folder of a tree", dir.display()));
    };
    let folder = Path::new(folder);
    let mut migrations = Vec::new();
    let names = berth_runtime::list_in_root(root, folder)
        .map_err(|err| format!("cannot read {}: {err}", dir.display()))?;
    for name in names {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let within = folder.join(&name);
        // Folders in it are skipped.
        if berth_runtime::open_in_root(root, &within)
            .and_then(|file| file.metadata())
            .is_ok_and(|meta| meta.is_dir())
        {
            continue;
        }
        if name.ends_with(".down.sql") {
            continue;
        }
        let Some(stem) = name
            .strip_suffix(".up.sql")
            .or_else(|| name.strip_suffix(".sql"))
        else {
            return Err(format!(
                "migrations/{name} is not a migration (VERSION_DESCRIPTION.sql)"
            ));
        };
        let (version, description) = stem.split_once('_').ok_or_else(|| {
            format!("migrations/{name}: the name needs a version, `_` and a description")
        })?;
        let version: i64 = version
            .parse()
            .map_err(|_| format!("migrations/{name}: `{version}` is not a version number"))?;
        let sql = berth_runtime::read_in_root(root, &within, MAX_MIGRATION)
            .map_err(|err| format!("cannot read migrations/{name}: {err}"))
            .and_then(|bytes| {
                String::from_utf8(bytes).map_err(|_| format!("migrations/{name} is not UTF-8"))
            })?;
        if migrations
            .iter()
            .any(|known: &Migration| known.version == version)
        {
            return Err(format!(
                "migrations/{name}: version {version} is used twice"
            ));
        }
        migrations.push(Migration {
            version,
            description: description.replace('_', " "),
            checksum: Sha384::digest(sql.as_bytes()).to_vec(),
            no_transaction: sql.trim_start().starts_with("-- no-transaction"),
            sql,
        });
    }
    migrations.sort_by_key(|migration| migration.version);
    Ok(migrations)
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
)";

/// The versions applied so far and their checksums (failed ones included,
/// with `success` false).
async fn applied_rows(
    client: &tokio_postgres::Client,
) -> Result<Vec<(i64, bool, Vec<u8>)>, String> {
    client
        .batch_execute(CREATE_TABLE)
        .await
        .map_err(|err| format!("cannot make _sqlx_migrations: {err}"))?;
    let rows = client
        .query(
            "SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(|err| format!("cannot read _sqlx_migrations: {err}"))?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect())
}

/// The migrations of `migrations` not yet applied on the database at `url`
/// (checks the applied ones too).
pub async fn pending(url: &str, migrations: &[Migration]) -> Result<Vec<Migration>, String> {
    let client = connect(url).await?;
    let applied = applied_rows(&client).await?;
    check_applied(&applied, migrations)?;
    Ok(migrations
        .iter()
        .filter(|migration| {
            !applied
                .iter()
                .any(|(version, ..)| *version == migration.version)
        })
        .cloned()
        .collect())
}

/// Applies what `migrations` holds that the database at `url` lacks.
pub async fn apply(url: &str, migrations: &[Migration]) -> Result<Applied, String> {
    let mut client = connect(url).await?;
    let applied = applied_rows(&client).await?;
    check_applied(&applied, migrations)?;
    let mut done = Applied {
        already: applied.len(),
        ..Applied::default()
    };
    for migration in migrations {
        if applied
            .iter()
            .any(|(version, ..)| *version == migration.version)
        {
            continue;
        }
        let started = std::time::Instant::now();
        let failed = |err: tokio_postgres::Error| {
            format!(
                "migration {} ({}) failed: {}",
                migration.version,
                migration.description,
                err.as_db_error()
                    .map_or_else(|| err.to_string(), |db| db.message().to_string())
            )
        };
        if migration.no_transaction {
            run_and_record(&client, migration, started)
                .await
                .map_err(failed)?;
        } else {
            let transaction = client.transaction().await.map_err(failed)?;
            run_and_record(&transaction, migration, started)
                .await
                .map_err(failed)?;
            transaction.commit().await.map_err(failed)?;
        }
        done.applied
            .push((migration.version, migration.description.clone()));
    }
    Ok(done)
}

/// Runs `migration` and records it as sqlx does, on `client` (the
/// connection, or a transaction around both).
async fn run_and_record(
    client: &impl tokio_postgres::GenericClient,
    migration: &Migration,
    started: std::time::Instant,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(&migration.sql).await?;
    let nanos = started.elapsed().as_nanos() as i64;
    client
        .execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES ($1, $2, TRUE, $3, $4)",
            &[&migration.version, &migration.description, &migration.checksum, &nanos],
        )
        .await?;
    Ok(())
}

fn check_applied(applied: &[(i64, bool, Vec<u8>)], migrations: &[Migration]) -> Result<(), String> {
    for (version, success, checksum) in applied {
        if !success {
            return Err(format!(
                "migration {version} failed part-way before (its row in _sqlx_migrations says success = false); repair the database, delete that row, and run again"
            ));
        }
        if let Some(migration) = migrations.iter().find(|m| m.version == *version)
            && migration.checksum != *checksum
        {
            return Err(format!(
                "migration {version} ({}) was changed after it was applied; put the file back as it was and add a new migration instead",
                migration.description
            ));
        }
    }
    Ok(())
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|err| format!("cannot connect to the app's database: {err}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_read_as_sqlx_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, sql: &str| std::fs::write(dir.path().join(name), sql).unwrap();
        write(
            "20240102000000_add_users.sql",
            "CREATE TABLE users (id INT);",
        );
        write("1_create_notes.up.sql", "CREATE TABLE notes (id INT);");
        write("1_create_notes.down.sql", "DROP TABLE notes;");
        write(
            "3_big_index.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY i ON notes (id);",
        );
        let migrations = read_migrations(dir.path()).unwrap();
        let versions: Vec<(i64, &str, bool)> = migrations
            .iter()
            .map(|m| (m.version, m.description.as_str(), m.no_transaction))
            .collect();
        assert_eq!(
            versions,
            [
                (1, "create notes", false),
                (3, "big index", true),
                (20240102000000, "add users", false)
            ]
        );
        assert_eq!(migrations[0].checksum.len(), 48, "SHA-384");

        write("notes.txt", "not a migration");
        let err = read_migrations(dir.path()).unwrap_err();
        assert!(
            err.contains("migrations/notes.txt is not a migration"),
            "{err}"
        );
        std::fs::remove_file(dir.path().join("notes.txt")).unwrap();
        // A migration that links out of the tree (to the superuser's
        // password, say) is not read through.
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "superuser-password").unwrap();
        std::os::unix::fs::symlink(secret.path(), dir.path().join("4_leak.sql")).unwrap();
        let err = read_migrations(dir.path()).unwrap_err();
        assert!(err.contains("cannot read migrations/4_leak.sql"), "{err}");
        assert!(!err.contains("superuser-password"), "{err}");
        std::fs::remove_file(dir.path().join("4_leak.sql")).unwrap();
        // A workspace's migrations folder that is a link inside the tree
        // is read; one that links out of it is not.
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tree.path().join("crates/db")).unwrap();
        std::fs::rename(dir.path(), tree.path().join("crates/db/migrations")).unwrap();
        std::os::unix::fs::symlink("crates/db/migrations", tree.path().join("migrations")).unwrap();
        assert_eq!(
            read_migrations(&tree.path().join("migrations"))
                .unwrap()
                .len(),
            3
        );
        let other = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            tree.path().join("crates/db/migrations"),
            other.path().join("migrations"),
        )
        .unwrap();
        assert!(read_migrations(&other.path().join("migrations")).is_err());
    }
}
