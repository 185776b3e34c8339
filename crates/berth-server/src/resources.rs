//! What the server gives apps besides their own code: secrets from the
//! vault, a PostgreSQL database, a Redis, volumes, and the env that tells
//! the app where they are.
//!
//! Values never leave this module in a form that is stored or listed:
//! secrets are sealed before the store sees them, generated passwords are
//! sealed too, and every value an app could print is handed to the log
//! store as a mask.
//!
//! Volumes are directories under `<data>/volumes/<app>/<name>`. When berth
//! runs as root each instance gets them bind-mounted at their `destination`
//! in a mount namespace of its own; otherwise `destination` cannot be
//! honoured and the app finds the directory in `BERTH_VOLUME_<NAME>`, which
//! is set in both cases (to the path the app sees).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_logs::LogStore;
use berth_proto::{BackupInfo, VolumeInfo};
use berth_resources::ResourceError;
use berth_resources::postgres::{PgDatabase, Postgres};
use berth_resources::redis::RedisFleet;
use berth_runtime::BindMount;
use berth_spec::AppSpec;
use berth_spec::EnvSource;
use berth_store::{ReleaseRow, ResourceRow, SealedSecret, Store};
use berth_vault::{Vault, Zeroizing};

/// The kinds of resource, as stored.
pub const POSTGRES: &str = "postgres";
/// See [`POSTGRES`].
pub const REDIS: &str = "redis";

/// Why a resource operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ResourcesError {
    /// The app has no such resource.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be done as asked.
    #[error("{0}")]
    Invalid(String),
    /// The service failed.
    #[error(transparent)]
    Service(#[from] ResourceError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] berth_store::StoreError),
    /// A sealed value would not open.
    #[error(transparent)]
    Vault(#[from] berth_vault::VaultError),
}

/// The server's resources.
pub struct Resources {
    store: Arc<Store>,
    logs: Arc<LogStore>,
    vault: Vault,
    postgres: Postgres,
    redis: RedisFleet,
    volumes_dir: PathBuf,
    backups_dir: PathBuf,
    /// Whether instances get sandboxes (root, and not turned off).
    isolated: bool,
    /// How instances get networks of their own.
    networks: berth_runtime::net::Networks,
    /// Where instances reach berth's API (`http://127.0.0.1:PORT`).
    api_url: String,
    /// An app's URL through the router.
    url_for: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// Slugs given to an app's user already (slugs never change, so a
    /// start after the first need not walk one again).
    owned_slugs: std::sync::Mutex<std::collections::HashSet<(PathBuf, u32)>>,
}

impl Resources {
    /// Resources kept under `data_dir`; nothing starts until [`Resources::start`].
    pub fn new(
        data_dir: &Path,
        store: Arc<Store>,
        logs: Arc<LogStore>,
        isolated: bool,
        networks: berth_runtime::net::Networks,
        api_url: String,
        url_for: Arc<dyn Fn(&str) -> String + Send + Sync>,
    ) -> Result<Resources, berth_vault::VaultError> {
        let vault = Vault::open_or_create(&data_dir.join("secrets.key"))?;
        Ok(Resources {
            store,
            logs,
            vault,
            postgres: Postgres::new(data_dir.join("postgres")),
            redis: RedisFleet::new(data_dir.join("redis")),
            volumes_dir: data_dir.join("volumes"),
            backups_dir: data_dir.join("backups"),
            isolated,
            networks,
            api_url,
            url_for,
            owned_slugs: Default::default(),
        })
    }

    /// Whether `owner`'s current spec shares its database and Redis with `app`.
    pub fn shares_with(&self, owner: &str, app: &str) -> bool {
        let Ok(Some(version)) = self.store.app(owner).map(|row| row.target_release) else {
            return false;
        };
        let Ok(release) = self.store.release(owner, version) else {
            return false;
        };
        serde_json::from_str::<AppSpec>(&release.spec_json)
            .is_ok_and(|spec| spec.resources.shared_with.iter().any(|name| name == app))
    }

    /// Whether instances get sandboxes (and so may get network namespaces).
    pub fn isolated(&self) -> bool {
        self.isolated
    }

    /// How instances get networks of their own.
    pub fn networks(&self) -> &berth_runtime::net::Networks {
        &self.networks
    }

    /// The host loopback ports `app`'s processes use: berth's API, and its
    /// (or its owner's) PostgreSQL and Redis when they run.
    pub fn loopback_ports(&self, app: &str, spec: &AppSpec) -> Vec<u16> {
        let mut ports = Vec::new();
        if let Some(port) = self
            .api_url
            .rsplit_once(':')
            .and_then(|(_, port)| port.trim_end_matches('/').parse().ok())
        {
            ports.push(port);
        }
        let postgres_owner = spec.resources.postgres_from.as_deref().unwrap_or(app);
        if self
            .store
            .resource(postgres_owner, POSTGRES)
            .ok()
            .flatten()
            .is_some()
            && let Some(port) = self.postgres.known_port()
        {
            ports.push(port);
        }
        let redis_owner = spec.resources.redis_from.as_deref().unwrap_or(app);
        if let Some(port) = self
            .store
            .resource(redis_owner, REDIS)
            .ok()
            .flatten()
            .and_then(|row| row.port)
        {
            ports.push(port);
        }
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Where instances reach berth's API.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The bearer token `app`'s processes present to berth for `purpose`
    /// (the Shuttle runtime API, say).
    pub fn app_token(&self, app: &str, purpose: &str) -> String {
        self.vault.token(app, purpose)
    }

    /// The secrets of the app's current release, opened (for runtimes that
    /// fetch them, as Shuttle's does): a rollback brings back its own set.
    pub fn open_secrets(&self, app: &str) -> Result<BTreeMap<String, String>, ResourcesError> {
        let sealed = match self.store.app(app)?.target_release {
            Some(version) => self.store.release(app, version)?.secrets,
            None => self.store.secrets(app)?,
        };
        let mut opened = BTreeMap::new();
        for (name, secret) in sealed {
            let value = self.vault.open(app, &name, &secret.sealed)?;
            opened.insert(name, value.to_string());
        }
        Ok(opened)
    }

    /// Brings up what the store says apps have (PostgreSQL if any app has
    /// a database, each app's Redis) and loads every app's masks. A service
    /// that will not start is logged and recorded as an event of each app
    /// that needs it; the server starts anyway.
    pub async fn start(&self) {
        let rows = match self.store.all_resources() {
            Ok(rows) => rows,
            Err(err) => {
                tracing::error!(error = %err, "cannot read resources");
                Vec::new()
            }
        };
        let mut postgres_started = None;
        for row in &rows {
            let result = match row.kind.as_str() {
                POSTGRES => {
                    if postgres_started.is_none() {
                        postgres_started = Some(self.postgres.ensure_running().await.map(|_| ()));
                    }
                    match postgres_started.as_ref() {
                        Some(Err(err)) => Err(err.to_string()),
                        _ => Ok(()),
                    }
                }
                REDIS => self
                    .start_redis(row)
                    .await
                    .map(|_| ())
                    .map_err(|err| err.to_string()),
                _ => Ok(()),
            };
            if let Err(reason) = result {
                tracing::error!(app = %row.app, kind = %row.kind, %reason, "resource did not start");
                let _ = self.store.record_event(
                    &row.app,
                    &format!("{}.failed", row.kind),
                    &format!("{} did not start: {reason}", row.kind),
                );
            }
        }
        if let Ok(apps) = self.store.apps() {
            for app in apps {
                self.refresh_masks(&app.name);
            }
        }
    }

    /// Stops PostgreSQL and every Redis.
    pub async fn shutdown(&self) {
        self.redis.stop_all().await;
        self.postgres.stop().await;
    }

    fn open_password(&self, row: &ResourceRow) -> Result<Zeroizing<String>, ResourcesError> {
        Ok(self.vault.open(
            &row.app,
            &format!("{}:password", row.kind),
            &row.sealed_password,
        )?)
    }

    async fn start_redis(&self, row: &ResourceRow) -> Result<u16, ResourcesError> {
        let password = self.open_password(row)?;
        let port = self
            .redis
            .ensure_running(&row.app, &password, row.port)
            .await?;
        if row.port != Some(port) {
            self.store.set_resource_port(&row.app, REDIS, port)?;
        }
        Ok(port)
    }

    /// Every value `app`'s processes could print: its secrets (current and
    /// those of its target release) and the passwords of its resources.
    fn mask_values(&self, app: &str) -> Vec<Zeroizing<String>> {
        let mut values: Vec<Zeroizing<String>> = Vec::new();
        let mut sealed: Vec<(String, SealedSecret)> = self
            .store
            .secrets(app)
            .map(|secrets| secrets.into_iter().collect())
            .unwrap_or_default();
        if let Ok(app_row) = self.store.app(app)
            && let Some(version) = app_row.target_release
            && let Ok(release) = self.store.release(app, version)
        {
            sealed.extend(release.secrets);
        }
        for (name, secret) in sealed {
            if let Ok(value) = self.vault.open(app, &name, &secret.sealed) {
                values.push(value);
            }
        }
        for kind in [POSTGRES, REDIS] {
            if let Ok(Some(row)) = self.store.resource(app, kind)
                && let Ok(password) = self.open_password(&row)
            {
                values.push(password);
            }
        }
        values
    }

    /// Hands the log store every value of `app` to mask.
    pub fn refresh_masks(&self, app: &str) {
        self.mask_with(app, &BTreeMap::new());
    }

    /// Hands the log store every value of `app` to mask, and `extra` (values
    /// about to be set, before any release carries them).
    pub fn mask_with(&self, app: &str, extra: &BTreeMap<String, String>) {
        let values = self.mask_values(app);
        let all = values
            .iter()
            .map(|value| value.as_str())
            .chain(extra.values().map(String::as_str));
        self.logs.set_masks(app, all);
    }

    /// `current` with `set` sealed in and `unset` taken out.
    pub fn seal_secrets(
        &self,
        app: &str,
        mut current: BTreeMap<String, SealedSecret>,
        set: &BTreeMap<String, String>,
        unset: &[String],
    ) -> BTreeMap<String, SealedSecret> {
        for name in unset {
            current.remove(name);
        }
        for (name, value) in set {
            let digest = self.vault.digest(app, value);
            if current
                .get(name)
                .is_some_and(|existing| existing.digest == digest)
            {
                continue;
            }
            current.insert(
                name.clone(),
                SealedSecret {
                    sealed: self.vault.seal(app, name, value),
                    digest,
                },
            );
        }
        current
    }

    /// The env a process of `release` gets from berth's resources: its
    /// secrets, `DATABASE_URL`, `REDIS_URL`, and `BERTH_VOLUME_<NAME>`.
    pub fn env_for(
        &self,
        release: &ReleaseRow,
        spec: &AppSpec,
        process: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let app = &release.app;
        let mut env = Vec::new();
        for (name, secret) in &release.secrets {
            let value = self
                .vault
                .open(app, name, &secret.sealed)
                .map_err(|err| err.to_string())?;
            env.push((name.clone(), value.to_string()));
        }
        // A shared database or Redis is its owner's, while the owner shares it.
        for owner in [&spec.resources.postgres_from, &spec.resources.redis_from]
            .into_iter()
            .flatten()
        {
            if !self.shares_with(owner, app) {
                return Err(format!(
                    "app `{owner}` no longer shares its database or Redis with `{app}` (its resources.shared_with)"
                ));
            }
        }
        let postgres_owner = spec.resources.postgres_from.as_deref().unwrap_or(app);
        let redis_owner = spec.resources.redis_from.as_deref().unwrap_or(app);
        let mut database = None;
        if let Some(row) = self
            .store
            .resource(postgres_owner, POSTGRES)
            .map_err(|err| err.to_string())?
        {
            let password = self.open_password(&row).map_err(|err| err.to_string())?;
            let found = PgDatabase {
                name: row.name.clone(),
                password,
                port: self.postgres.known_port().unwrap_or(5432),
            };
            env.push(("DATABASE_URL".into(), found.url()));
            database = Some(found);
        }
        let mut redis = None;
        if let Some(row) = self
            .store
            .resource(redis_owner, REDIS)
            .map_err(|err| err.to_string())?
        {
            let password = self.open_password(&row).map_err(|err| err.to_string())?;
            if let Some(port) = row.port {
                env.push((
                    "REDIS_URL".into(),
                    berth_resources::redis::url(port, &password),
                ));
                redis = Some((port, password));
            }
        }
        for from in &spec.env_from {
            let value = match &from.source {
                // Kept as secrets, already in the env above.
                EnvSource::Generated | EnvSource::AskOnce => continue,
                EnvSource::Postgres { property } => {
                    let database = database.as_ref().ok_or_else(|| {
                        format!("{} needs a database and the app has none", from.key)
                    })?;
                    match property.as_str() {
                        "connectionString" | "connection_string" => database.url(),
                        "host" => "127.0.0.1".into(),
                        "port" => database.port.to_string(),
                        "database" | "user" => database.name.clone(),
                        "password" => database.password.to_string(),
                        other => {
                            return Err(format!(
                                "{}: unknown database property `{other}` (connectionString, host, port, database, user, password)",
                                from.key
                            ));
                        }
                    }
                }
                EnvSource::Redis { property } => {
                    let (port, password) = redis.as_ref().ok_or_else(|| {
                        format!("{} needs a Redis and the app has none", from.key)
                    })?;
                    match property.as_str() {
                        "connectionString" | "connection_string" => {
                            berth_resources::redis::url(*port, password)
                        }
                        "host" => "127.0.0.1".into(),
                        "port" => port.to_string(),
                        "hostport" => format!("127.0.0.1:{port}"),
                        other => {
                            return Err(format!(
                                "{}: unknown key-value property `{other}` (connectionString, host, port, hostport)",
                                from.key
                            ));
                        }
                    }
                }
                EnvSource::AppAddress { app, property } => {
                    let url = (self.url_for)(app);
                    let authority = url
                        .trim_start_matches("http://")
                        .trim_start_matches("https://")
                        .to_string();
                    let (host, port) = authority
                        .rsplit_once(':')
                        .map(|(host, port)| (host.to_string(), port.to_string()))
                        .unwrap_or((authority.clone(), "80".into()));
                    match property.as_str() {
                        "host" => host,
                        "port" => port,
                        "hostport" => authority,
                        other => {
                            return Err(format!(
                                "{}: unknown service property `{other}` (host, port, hostport)",
                                from.key
                            ));
                        }
                    }
                }
            };
            env.push((from.key.clone(), value));
        }
        let isolated = self.isolated;
        for mount in spec.mounts.iter().filter(|mount| mount.applies_to(process)) {
            let seen_at = if isolated {
                mount.destination.clone()
            } else {
                self.volume_dir(app, &mount.source).display().to_string()
            };
            env.push((
                format!("BERTH_VOLUME_{}", mount.source.to_ascii_uppercase()),
                seen_at,
            ));
        }
        Ok(env)
    }

    /// The bind mounts of a process of `app` (applied when berth runs as root).
    pub fn binds_for(&self, app: &str, spec: &AppSpec, process: &str) -> Vec<BindMount> {
        spec.mounts
            .iter()
            .filter(|mount| mount.applies_to(process))
            .map(|mount| BindMount {
                source: self.volume_dir(app, &mount.source),
                destination: PathBuf::from(&mount.destination),
            })
            .collect()
    }

    /// The sandbox of a process of `app` when berth runs as root: the app's
    /// own user (its slug and volumes become that user's, mode 0700, so no
    /// other app can read them), its `[[vm]]` size as cgroup limits, a
    /// private `/tmp`. `None` when not root.
    pub fn sandbox_for(
        &self,
        app: &str,
        spec: &AppSpec,
        process: &str,
        slug_dir: &Path,
    ) -> Result<Option<berth_runtime::Sandbox>, String> {
        if !self.isolated {
            return Ok(None);
        }
        let uid = self.store.app_uid(app).map_err(|err| err.to_string())?;
        let owned = (slug_dir.to_path_buf(), uid);
        let owned_slugs = || {
            self.owned_slugs
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        };
        if !owned_slugs().contains(&owned) {
            // Walked without the lock: other apps' starts need not wait.
            own_tree(slug_dir, uid).map_err(|err| {
                format!(
                    "cannot give the slug {} to the app's user: {err}",
                    slug_dir.display()
                )
            })?;
            owned_slugs().insert(owned);
        }
        // The app's volumes dir stays root's (0711), so the app cannot swap
        // a volume for a link to another app's; each volume is the app's.
        let volumes = self.volumes_dir.join(app);
        for mount in spec.mounts.iter().filter(|mount| mount.applies_to(process)) {
            let volume = volumes.join(&mount.source);
            std::fs::create_dir_all(&volume).map_err(|err| err.to_string())?;
            std::os::unix::fs::chown(&volumes, Some(0), Some(0)).map_err(|err| err.to_string())?;
            set_mode(&volumes, 0o711).map_err(|err| err.to_string())?;
            own_tree(&volume, uid).map_err(|err| {
                format!(
                    "cannot give the volume {} to the app's user: {err}",
                    volume.display()
                )
            })?;
        }
        let vm = spec.vm_for(process);
        Ok(Some(berth_runtime::Sandbox {
            uid,
            gid: uid,
            limits: Some(berth_runtime::cgroup::Limits {
                memory_bytes: u64::from(vm.memory_mb) * 1024 * 1024,
                cpus: vm.cpus,
            }),
            private_tmp: true,
            network: None,
        }))
    }

    /// Makes each volume `spec` mounts exist (so it is there, and listed,
    /// before the first instance starts).
    pub fn ensure_volumes(&self, app: &str, spec: &AppSpec) -> Result<Vec<String>, ResourcesError> {
        let mut made = Vec::new();
        for mount in &spec.mounts {
            let dir = self.volume_dir(app, &mount.source);
            if !dir.is_dir() {
                std::fs::create_dir_all(&dir).map_err(|err| {
                    ResourcesError::Invalid(format!(
                        "cannot create volume {}: {err}",
                        dir.display()
                    ))
                })?;
                made.push(mount.source.clone());
            }
        }
        Ok(made)
    }

    fn volume_dir(&self, app: &str, name: &str) -> PathBuf {
        self.volumes_dir.join(app).join(name)
    }

    /// Gives `app` a PostgreSQL database if it has none. Returns true when
    /// one was made now.
    pub async fn attach_postgres(&self, app: &str) -> Result<bool, ResourcesError> {
        self.store.app(app)?;
        if let Some(row) = self.store.resource(app, POSTGRES)? {
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
                kind: POSTGRES.into(),
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
        if let Some(row) = self.store.resource(app, REDIS)? {
            self.start_redis(&row).await?;
            return Ok(false);
        }
        let password = Vault::generate_password(32);
        let port = self.redis.ensure_running(app, &password, None).await?;
        self.store.put_resource(
            &ResourceRow {
                app: app.to_string(),
                kind: REDIS.into(),
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
    pub async fn postgres_database(&self, app: &str) -> Result<PgDatabase, ResourcesError> {
        let row = self.store.resource(app, POSTGRES)?.ok_or_else(|| {
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
        let row = self.store.resource(app, REDIS)?.ok_or_else(|| {
            ResourcesError::NotFound(format!(
                "app `{app}` has no Redis; `berth redis attach --app {app}` or [resources] redis = true gives it one"
            ))
        })?;
        let password = self.open_password(&row)?;
        let port = self.start_redis(&row).await?;
        Ok((berth_resources::redis::url(port, &password), port))
    }

    /// The running PostgreSQL server's process id (for tests and status).
    pub async fn postgres_pid(&self) -> Option<u32> {
        self.postgres.pid().await
    }

    /// The running Redis of `app`'s process id.
    pub async fn redis_pid(&self, app: &str) -> Option<u32> {
        self.redis.pid(app).await
    }

    /// The superuser's URL for `database` (benchmarks compare against it).
    pub async fn postgres_superuser_url(&self, database: &str) -> Result<String, ResourcesError> {
        self.postgres.create_superuser_database(database).await?;
        Ok(self.postgres.superuser_url(database).await?)
    }

    fn backups_of(&self, app: &str) -> PathBuf {
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
        let _ = self
            .store
            .record_event(app, "postgres.backup", &format!("backup {id} taken"));
        self.backup_info(&file)
            .ok_or_else(|| ResourcesError::Invalid(format!("backup {id} vanished")))
    }

    fn backup_info(&self, file: &Path) -> Option<BackupInfo> {
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
            "postgres.restore",
            &format!("backup {} restored", backup.id),
        );
        Ok(backup)
    }

    /// `app`'s volumes: each directory under its volumes dir, with where the
    /// active release mounts it.
    pub fn volumes(&self, app: &str) -> Result<Vec<VolumeInfo>, ResourcesError> {
        self.store.app(app)?;
        let mounted = self.mounted(app);
        let mut volumes: Vec<VolumeInfo> = std::fs::read_dir(self.volumes_dir.join(app))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| entry.path().is_dir())
            .filter_map(|entry| {
                let name = entry.file_name().to_str()?.to_string();
                Some(VolumeInfo {
                    destination: mounted.get(&name).cloned(),
                    path: entry.path().display().to_string(),
                    size_bytes: tree_size(&entry.path()),
                    name,
                })
            })
            .collect();
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    fn mounted(&self, app: &str) -> BTreeMap<String, String> {
        let Ok(Some(release)) = self.store.active_release(app) else {
            return BTreeMap::new();
        };
        let spec: AppSpec = serde_json::from_str(&release.spec_json).unwrap_or_default();
        spec.mounts
            .into_iter()
            .map(|mount| (mount.source, mount.destination))
            .collect()
    }

    /// Deletes a volume and its files. A volume the active release mounts
    /// is refused: deploy without the mount first.
    pub fn destroy_volume(&self, app: &str, name: &str) -> Result<(), ResourcesError> {
        self.store.app(app)?;
        if let Some(destination) = self.mounted(app).get(name) {
            return Err(ResourcesError::Invalid(format!(
                "volume `{name}` is mounted at {destination} by the active release; deploy without that mount first"
            )));
        }
        let dir = self.volume_dir(app, name);
        if !dir.is_dir() || name.contains('/') || name.starts_with('.') {
            return Err(ResourcesError::NotFound(format!(
                "app `{app}` has no volume `{name}`"
            )));
        }
        std::fs::remove_dir_all(&dir).map_err(|err| {
            ResourcesError::Invalid(format!("cannot remove {}: {err}", dir.display()))
        })?;
        let _ =
            self.store
                .record_event(app, "volume.destroyed", &format!("volume {name} destroyed"));
        Ok(())
    }

    /// Drops everything `app` has: its database and role, its Redis and
    /// data, its volumes. Backups stay in `<data>/backups/<app>`.
    pub async fn destroy_app(&self, app: &str) -> Result<(), ResourcesError> {
        if self.store.resource(app, POSTGRES)?.is_some() {
            self.postgres.drop_database(app).await?;
            self.store.delete_resource(app, POSTGRES)?;
        }
        if self.store.resource(app, REDIS)?.is_some() {
            self.redis.destroy(app).await?;
            self.store.delete_resource(app, REDIS)?;
        }
        let volumes = self.volumes_dir.join(app);
        if volumes.exists() {
            std::fs::remove_dir_all(&volumes).map_err(|err| {
                ResourcesError::Invalid(format!("cannot remove {}: {err}", volumes.display()))
            })?;
        }
        self.logs.set_masks(app, Vec::<String>::new());
        Ok(())
    }

    /// Whether `app` has data that destroying it would delete.
    pub fn has_data(&self, app: &str) -> bool {
        [POSTGRES, REDIS]
            .iter()
            .any(|kind| matches!(self.store.resource(app, kind), Ok(Some(_))))
            || self.volumes_dir.join(app).is_dir()
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Makes `root` and everything under it owned by `uid` (group `uid`), and
/// `root` mode 0700. Skipped when `root` and its direct children are
/// already `uid`'s, so an instance start costs a few `stat`s.
fn own_tree(root: &Path, uid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let owned = |path: &Path| std::fs::symlink_metadata(path).is_ok_and(|meta| meta.uid() == uid);
    let children_owned = std::fs::read_dir(root)?
        .flatten()
        .all(|entry| owned(&entry.path()));
    if owned(root) && children_owned {
        return Ok(());
    }
    fn walk(path: &Path, uid: u32) -> std::io::Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(uid))?;
        let meta = std::fs::symlink_metadata(path)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(path)? {
                walk(&entry?.path(), uid)?;
            }
        }
        Ok(())
    }
    walk(root, uid)?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
}

fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => tree_size(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map(|meta| meta.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}
