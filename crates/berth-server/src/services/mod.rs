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

use berth_store::ResourceKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_logs::LogStore;
use berth_resources::ResourceError;
use berth_resources::postgres::Postgres;
use berth_resources::redis::RedisFleet;
use berth_spec::AppSpec;
use berth_store::{ResourceRow, Store};
use berth_vault::{Vault, Zeroizing};

mod databases;
mod env;
pub mod package_roots;
mod sandbox;
mod secrets;
mod sized_volumes;
mod volumes;

pub(crate) use volumes::own_whole_tree;

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
    /// Release slugs (a release's `migrations/` is read from its slug).
    slugs_dir: PathBuf,
    /// The data dir, naming this server in the host's uid registry.
    data_dir: PathBuf,
    /// Where apps' user ids come from.
    uids: berth_runtime::users::UidRegistry,
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
    /// Roots with `[build] packages` installed.
    package_roots: package_roots::PackageRoots,
    /// Private names in instances' namespaces, once the route table exists.
    internal_names: std::sync::OnceLock<crate::internal_names::InternalNames>,
    /// The Docker engine image instances run in (`--runtime docker`).
    docker: std::sync::OnceLock<crate::docker_images::DockerImages>,
}

/// The vault owner of the server's own secrets: `@` is in no app name.
const SERVER_SECRETS: &str = "@server";

impl Resources {
    /// Where images are unpacked into roots of their own (`DATA/images`).
    pub fn images_dir(&self) -> PathBuf {
        self.data_dir.join("images")
    }

    /// `value` sealed as the server's own secret `name` (an owner no app
    /// name can be, so no app's key opens it).
    pub(crate) fn seal_server_secret(&self, name: &str, value: &str) -> String {
        self.vault.seal(SERVER_SECRETS, name, value)
    }

    /// What [`Resources::seal_server_secret`] sealed as `name`.
    pub(crate) fn open_server_secret(
        &self,
        name: &str,
        sealed: &str,
    ) -> Result<Zeroizing<String>, berth_vault::VaultError> {
        self.vault.open(SERVER_SECRETS, name, sealed)
    }

    /// Where the server keeps its own files (`DATA`).
    pub(crate) fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

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
            slugs_dir: data_dir.join("slugs"),
            data_dir: data_dir.to_path_buf(),
            uids: berth_runtime::users::UidRegistry::host(),
            isolated,
            networks,
            api_url,
            url_for,
            owned_slugs: Default::default(),
            internal_names: std::sync::OnceLock::new(),
            docker: std::sync::OnceLock::new(),
            package_roots: package_roots::PackageRoots::new(data_dir),
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
        crate::stored_spec::spec_of(&release)
            .is_ok_and(|spec| spec.resources.shared_with.iter().any(|name| name == app))
    }

    /// `app`'s public URL, through the router.
    pub fn url_of(&self, app: &str) -> String {
        (self.url_for)(app)
    }

    /// Whether instances get sandboxes (and so may get network namespaces).
    pub fn isolated(&self) -> bool {
        self.isolated
    }

    /// Gives instances that start from now on their private names
    /// (`APP.internal`); set once, when the route table exists.
    pub fn serve_internal_names(&self, names: crate::internal_names::InternalNames) {
        let _ = self.internal_names.set(names);
    }

    /// Runs image instances in the Docker engine from now on
    /// (`--runtime docker`); set once, at start.
    pub fn use_docker(&self, docker: crate::docker_images::DockerImages) {
        let _ = self.docker.set(docker);
    }

    /// The Docker engine image instances run in, with `--runtime docker`.
    pub fn docker(&self) -> Option<&crate::docker_images::DockerImages> {
        self.docker.get()
    }

    /// Private names, when instances have them (see [`Self::serve_internal_names`]).
    pub fn internal_names(&self) -> Option<&crate::internal_names::InternalNames> {
        self.internal_names.get()
    }

    /// Roots with `[build] packages` installed.
    pub fn package_roots(&self) -> &package_roots::PackageRoots {
        &self.package_roots
    }

    /// How instances get networks of their own.
    pub fn networks(&self) -> &berth_runtime::net::Networks {
        &self.networks
    }

    /// The host loopback ports `app`'s processes use: berth's API (a Shuttle project's runtime API), and its
    /// (or its owner's) PostgreSQL and Redis when they run.
    pub fn loopback_ports(&self, app: &str, spec: &AppSpec) -> Vec<u16> {
        let mut ports = Vec::new();
        // Only a Shuttle project talks to berth (its runtime API, with a
        // token of its own); no other app's instance can reach the API.
        if spec.shuttle.is_some()
            && let Some(port) = self
                .api_url
                .rsplit_once(':')
                .and_then(|(_, port)| port.trim_end_matches('/').parse().ok())
        {
            ports.push(port);
        }
        let postgres_owner = spec.resources.postgres_from.as_deref().unwrap_or(app);
        if self
            .store
            .resource(postgres_owner, &ResourceKind::Postgres)
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
            .resource(redis_owner, &ResourceKind::Redis)
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
            let result = match &row.kind {
                ResourceKind::Postgres => {
                    if postgres_started.is_none() {
                        postgres_started = Some(self.postgres.ensure_running().await.map(|_| ()));
                    }
                    match postgres_started.as_ref() {
                        Some(Err(err)) => Err(err.to_string()),
                        // A role an older berth made gets its cap too.
                        _ => self
                            .postgres
                            .limit_connections(&row.app)
                            .await
                            .map_err(|err| err.to_string()),
                    }
                }
                ResourceKind::Redis => self
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
                    row.kind.failed(),
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
            self.store
                .set_resource_port(&row.app, &ResourceKind::Redis, port)?;
        }
        Ok(port)
    }
}
