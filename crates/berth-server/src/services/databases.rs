//! PostgreSQL databases and Redis servers of apps, and their backups.

use berth_store::EventKind;
use std::path::{Path, PathBuf};

use berth_proto::BackupInfo;
use berth_resources::postgres::PgDatabase;
use berth_store::ResourceRow;
use berth_vault::Vault;

use super::{Resources, ResourcesError};
use berth_store::ResourceKind;

impl Resources {
    /// Gives `app` a PostgreSQL database if it has none. Returns true when
    /// one was made now.
    pub async fn attach_postgres(&self, app: &str) -> Result<bool, ResourcesError> {
        self.store.app(app)?;
        if let Some(row) = self.store.resource(app, &ResourceKind::Postgres)? {
            // Make sure it exists on this cluster (it may have been made anew).
            let password = self.open_password(&row)?;
            self.postgres.provision(app, &password).await?;
            return Ok(false);
        }
        let password = Vault::generate_password(32);
        let database = self.postgres.provision(app, &password).await?;
        self.store.put_resource(
            &ResourceRow {
                app: app.to_string(),
                kind: ResourceKind::Postgres,
                name: database.name.clone(),
                sealed_password: self.vault.seal(app, "postgres:password", &password),
                port: None,
                created_at: berth_store::now_rfc3339(),
            },
            &format!(
                "PostgreSQL database {} attached (DATABASE_URL)",
                database.name
            ),
        )?;
        self.refresh_masks(app);
        Ok(true)
    }

    /// Gives `app` a Redis if it has none. Returns true when one was made now.
    pub async fn attach_redis(&self, app: &str) -> Result<bool, ResourcesError> {
        self.store.app(app)?;
        if let Some(row) = self.store.resource(app, &ResourceKind::Redis)? {
            self.start_redis(&row).await?;
            return Ok(false);
        }
        let password = Vault::generate_password(32);
        let port = self.redis.ensure_running(app, &password, None).await?;
        self.store.put_resource(
            &ResourceRow {
                app: app.to_string(),
                kind: ResourceKind::Redis,
                name: app.to_string(),
                sealed_password: self.vault.seal(app, "redis:password", &password),
                port: Some(port),
                created_at: berth_store::now_rfc3339(),
            },
            &format!(
                "Redis attached (REDIS_URL, {} MiB)",
                berth_resources::redis::DEFAULT_MAX_MEMORY_MIB
            ),
        )?;
        self.refresh_masks(app);
        Ok(true)
    }

    /// The app's database and how to log in, starting PostgreSQL if needed.
    /// The connections `app`'s database role has open now.
    pub async fn postgres_connections(&self, app: &str) -> Result<u32, ResourcesError> {
        Ok(self.postgres.connections(app).await?)
    }

    pub async fn postgres_database(&self, app: &str) -> Result<PgDatabase, ResourcesError> {
        let row = self.store.resource(app, &ResourceKind::Postgres)?.ok_or_else(|| {
            ResourcesError::NotFound(format!(
                "app `{app}` has no PostgreSQL database; `berth postgres attach --app {app}` or [resources] postgres = true gives it one"
            ))
        })?;
        let password = self.open_password(&row)?;
        let port = self.postgres.ensure_running().await?;
        Ok(PgDatabase {
            name: row.name,
            password,
            port,
        })
    }

    /// The app's Redis URL and port.
    pub async fn redis_url(&self, app: &str) -> Result<(String, u16), ResourcesError> {
        let row = self.store.resource(app, &ResourceKind::Redis)?.ok_or_else(|| {
            ResourcesError::NotFound(format!(
                "app `{app}` has no Redis; `berth redis attach --app {app}` or [resources] redis = true gives it one"
            ))
        })?;
        let password = self.open_password(&row)?;
        let port = self.start_redis(&row).await?;
        Ok((berth_resources::redis::url(port, &password), port))
    }

    /// Per app with a database: the bytes it takes and its backups take.
    pub(crate) async fn storage_bytes(&self) -> Vec<(String, u64, u64)> {
        let apps: Vec<String> = self
            .store
            .apps()
            .unwrap_or_default()
            .into_iter()
            .map(|app| app.name)
            .filter(|app| {
                self.store
                    .resource(app, &ResourceKind::Postgres)
                    .is_ok_and(|row| row.is_some())
            })
            .collect();
        let sizes = self.postgres.database_sizes(&apps).await;
        apps.into_iter()
            .map(|app| {
                let database = sizes
                    .iter()
                    .find(|(name, _)| *name == app)
                    .map_or(0, |(_, bytes)| *bytes);
                let backups = self
                    .backups(&app)
                    .unwrap_or_default()
                    .iter()
                    .map(|backup| backup.size_bytes)
                    .sum();
                (app, database, backups)
            })
            .collect()
    }

    pub(crate) fn backups_of(&self, app: &str) -> PathBuf {
        self.backups_dir.join(app)
    }

    /// Takes a backup of `app`'s database.
    pub async fn backup(&self, app: &str) -> Result<BackupInfo, ResourcesError> {
        let database = self.postgres_database(app).await?;
        let dir = self.backups_of(app);
        std::fs::create_dir_all(&dir).map_err(|err| {
            ResourcesError::Invalid(format!("cannot create {}: {err}", dir.display()))
        })?;
        let now = chrono::Utc::now();
        let mut id = now.format("%Y%m%dT%H%M%S%.3fZ").to_string();
        let mut serial = 1;
        while dir.join(format!("{id}.dump")).exists() {
            serial += 1;
            id = format!("{}-{serial}", now.format("%Y%m%dT%H%M%S%.3fZ"));
        }
        let file = dir.join(format!("{id}.dump"));
        self.postgres.backup(&database, &file).await?;
        let _ = self.store.record_event(
            app,
            EventKind::PostgresBackup,
            &format!("backup {id} taken"),
        );
        self.backup_info(&file)
            .ok_or_else(|| ResourcesError::Invalid(format!("backup {id} vanished")))
    }

    pub(crate) fn backup_info(&self, file: &Path) -> Option<BackupInfo> {
        let id = file.file_stem()?.to_str()?.to_string();
        let meta = std::fs::metadata(file).ok()?;
        let created_at = meta
            .modified()
            .ok()
            .map(|time| chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339())
            .unwrap_or_default();
        Some(BackupInfo {
            id,
            size_bytes: meta.len(),
            created_at,
        })
    }

    /// `app`'s backups, newest first.
    pub fn backups(&self, app: &str) -> Result<Vec<BackupInfo>, ResourcesError> {
        self.store.app(app)?;
        let mut backups: Vec<BackupInfo> = std::fs::read_dir(self.backups_of(app))
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "dump"))
            .filter_map(|path| self.backup_info(&path))
            .collect();
        backups.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(backups)
    }

    /// Restores backup `id` (the newest when `None`) into `app`'s database.
    pub async fn restore(&self, app: &str, id: Option<&str>) -> Result<BackupInfo, ResourcesError> {
        let backups = self.backups(app)?;
        let backup = match id {
            Some(id) => backups
                .into_iter()
                .find(|backup| backup.id == id)
                .ok_or_else(|| {
                    ResourcesError::NotFound(format!(
                        "app `{app}` has no backup `{id}`; `berth postgres backups` lists them"
                    ))
                })?,
            None => backups.into_iter().next().ok_or_else(|| {
                ResourcesError::NotFound(format!("app `{app}` has no backups yet"))
            })?,
        };
        let database = self.postgres_database(app).await?;
        let file = self.backups_of(app).join(format!("{}.dump", backup.id));
        self.postgres.restore(&database, &file).await?;
        let _ = self.store.record_event(
            app,
            EventKind::PostgresRestore,
            &format!("backup {} restored", backup.id),
        );
        Ok(backup)
    }
}

impl Resources {
    /// Applies the `migrations/` of `app`'s running release to its
    /// database, with sqlx's bookkeeping (see berth-resources'
    /// `postgres::migrate`).
    pub async fn migrate(&self, app: &str) -> Result<berth_proto::MigrateResult, ResourcesError> {
        let migrations = self.release_migrations(app)?;
        let (url, _) = self
            .database_url(app)
            .map_err(ResourcesError::Invalid)?
            .ok_or_else(|| {
                ResourcesError::Invalid(format!(
                    "`{app}` has no database: berth postgres attach --app {app}, or [resources] postgres = true"
                ))
            })?;
        let done = berth_resources::postgres::migrate::apply(&url, &migrations)
            .await
            .map_err(ResourcesError::Invalid)?;
        let applied: Vec<String> = done
            .applied
            .iter()
            .map(|(version, description)| format!("{version} {description}"))
            .collect();
        if !applied.is_empty() {
            let _ = self.store.record_event(
                app,
                berth_store::EventKind::PostgresMigrated,
                &format!("migrations applied: {}", applied.join(", ")),
            );
        }
        Ok(berth_proto::MigrateResult {
            applied,
            already: done.already,
        })
    }

    /// The migrations in the slug of `app`'s running release.
    fn release_migrations(
        &self,
        app: &str,
    ) -> Result<Vec<berth_resources::postgres::migrate::Migration>, ResourcesError> {
        let release = self.store.active_release(app)?.ok_or_else(|| {
            ResourcesError::Invalid(format!("`{app}` has no running release: deploy it first"))
        })?;
        let dir = self.slugs_dir.join(&release.slug).join("migrations");
        if !dir.is_dir() {
            return Err(ResourcesError::Invalid(format!(
                "v{} of `{app}` has no migrations/ folder",
                release.version
            )));
        }
        berth_resources::postgres::migrate::read_migrations(&dir).map_err(ResourcesError::Invalid)
    }

    /// What a deploy of `slug` for `app` should say about migrations: how
    /// many in its `migrations/` the app's database has not applied.
    /// Nothing when it has no migrations or no database.
    pub async fn pending_migrations(
        &self,
        app: &str,
        slug_dir: &std::path::Path,
    ) -> Option<String> {
        let dir = slug_dir.join("migrations");
        if !dir.is_dir() {
            return None;
        }
        let migrations = berth_resources::postgres::migrate::read_migrations(&dir).ok()?;
        let (url, _) = self.database_url(app).ok()??;
        let pending = berth_resources::postgres::migrate::pending(&url, &migrations)
            .await
            .ok()?;
        (!pending.is_empty()).then(|| {
            format!(
                "{} migration(s) in migrations/ are not applied to the database yet ({}): run `berth postgres migrate --app {app}` (or let the app run them)",
                pending.len(),
                pending
                    .iter()
                    .map(|m| m.version.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}
