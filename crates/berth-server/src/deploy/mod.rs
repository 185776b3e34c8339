//! Deploys: from an uploaded tarball (or an env change, or a rollback) to a
//! release that serves — or to a clear failure while the old one keeps serving.
//!
//! Every path ends in `Deployer::roll_out`: the release becomes the app's
//! target in the store, the reconciler is nudged, and the deploy waits until
//! every wanted instance of the release passes its health check. The first
//! instance that dies or never gets healthy fails the deploy; the store then
//! points the app back at the release that was serving.

use std::collections::HashMap;
use std::sync::Arc;

use berth_build::{Builder, SlugStore, UnpackLimits};
use berth_logs::LogStore;
use berth_store::Store;
use tokio::sync::Mutex;

mod build_env;
mod build_root;
mod buildah;
mod config;
mod dockerfile;
mod failure;
mod host_programs;
mod image;
mod prepare;
mod read_spec;
mod requirements;
mod rollback;
mod rollout;
pub(crate) mod sandboxed_build;
pub(crate) mod timings;
mod toolchain;
mod upload;

pub use buildah::DockerfileBuilds;
pub use config::ConfigChange;
pub use failure::DeployFailure;

use crate::reconciler::ReconcilerHandle;
use crate::services::Resources;

/// How old an unneeded slug must be before it is deleted: one stored a
/// moment ago may belong to a release about to be made.
const SLUG_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// Runs deploys, one at a time per app.
pub struct Deployer {
    pub(crate) store: Arc<Store>,
    pub(crate) logs: Arc<LogStore>,
    pub(crate) slugs: SlugStore,
    pub(crate) launcher: crate::launch::Launcher,
    pub(crate) resources: Arc<Resources>,
    pub(crate) builder: Arc<dyn Builder>,
    pub(crate) reconciler: ReconcilerHandle,
    pub(crate) tmp_dir: std::path::PathBuf,
    pub(crate) source_limits: UnpackLimits,
    pub(crate) url_for: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// Releases per app whose slugs are kept (see `ServerConfig`).
    pub(crate) keep_releases: u32,
    locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// The price tables a `[budget] price_as` must name.
    pub(crate) prices: Arc<Vec<berth_cost::PriceTable>>,
    /// How long deploys and builds took.
    pub(crate) timings: timings::Timings,
    /// The registry images are deployed from.
    pub(crate) registry: Arc<berth_registry::Registry>,
    /// Other registries images are pulled from.
    pub(crate) registry_logins: Arc<crate::remote_registry::RegistryLogins>,
    /// How Dockerfiles of other shapes than cargo-chef's are built.
    pub(crate) dockerfile_builds: Option<DockerfileBuilds>,
    /// Apps are served at `APP.<domain_suffix>`.
    pub(crate) domain_suffix: String,
}

impl Deployer {
    /// A deployer over the server's parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<Store>,
        logs: Arc<LogStore>,
        slugs: SlugStore,
        resources: Arc<Resources>,
        builder: Arc<dyn Builder>,
        reconciler: ReconcilerHandle,
        tmp_dir: std::path::PathBuf,
        source_limits: UnpackLimits,
        url_for: Arc<dyn Fn(&str) -> String + Send + Sync>,
        keep_releases: u32,
        registry: Arc<berth_registry::Registry>,
    ) -> Self {
        Deployer {
            registry,
            registry_logins: Arc::new(crate::remote_registry::RegistryLogins::new(
                resources.clone(),
            )),
            store,
            logs,
            launcher: crate::launch::Launcher::new(slugs.clone(), resources.clone()),
            resources,
            slugs,
            builder,
            reconciler,
            tmp_dir,
            source_limits,
            url_for,
            keep_releases,
            locks: std::sync::Mutex::new(HashMap::new()),
            prices: Arc::new(berth_cost::PriceTable::load(None).unwrap_or_default()),
            timings: timings::Timings::default(),
            dockerfile_builds: None,
            domain_suffix: "localhost".into(),
        }
    }

    /// Builds Dockerfiles berth does not build natively with buildah, as
    /// `builds` says.
    pub fn with_dockerfile_builds(mut self, builds: DockerfileBuilds) -> Self {
        self.dockerfile_builds = Some(builds);
        self
    }

    /// The price tables budgets are priced with (`--prices`).
    pub fn with_prices(mut self, prices: Arc<Vec<berth_cost::PriceTable>>) -> Self {
        self.prices = prices;
        self
    }

    /// Apps served at `APP.<suffix>` (`--domain`).
    pub fn with_domain_suffix(mut self, suffix: &str) -> Self {
        self.domain_suffix = suffix.to_string();
        self
    }

    /// Why `domain` cannot be a custom domain of `app`: it is the name
    /// another app is served at (`OTHER.<suffix>`). Custom domains route
    /// before app names, so it would take that app's traffic and
    /// certificate.
    pub(crate) fn domain_names_another_app(&self, app: &str, domain: &str) -> Option<String> {
        let (first, rest) = domain.split_once('.')?;
        let other = first.to_ascii_lowercase();
        (rest.eq_ignore_ascii_case(&self.domain_suffix)
            && other != app
            && self.store.app(&other).is_ok())
        .then(|| {
            format!(
                "`{domain}` is where app `{other}` is served; it cannot be another app's domain"
            )
        })
    }

    /// Why `app` cannot be made: a custom domain of another app is the name
    /// it would be served at.
    pub(crate) fn app_name_held_by_a_domain(&self, app: &str) -> Option<String> {
        let name = format!("{app}.{}", self.domain_suffix);
        let rows = self.store.domains(None).ok()?;
        let row = rows.iter().find(|row| row.name == name && row.app != app)?;
        Some(format!(
            "`{name}`, where app `{app}` would be served, is a domain of app `{}`; remove it there first",
            row.app
        ))
    }

    /// Deletes slugs no release needs any more (failed deploys, destroyed
    /// apps, releases past the rollback depth), off the runtime's threads.
    pub fn collect_slugs(&self) {
        let store = self.store.clone();
        let slugs = self.slugs.clone();
        let depth = self.keep_releases;
        tokio::task::spawn_blocking(move || match store.slugs_in_use(depth) {
            Ok(keep) => {
                let freed = slugs.collect(&keep, SLUG_GRACE);
                if freed > 0 {
                    tracing::info!(
                        freed_mib = freed / (1024 * 1024),
                        "deleted slugs no release needs"
                    );
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot tell which slugs are in use"),
        });
    }

    fn lock_for(&self, app: &str) -> Arc<Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(app.to_string()).or_default().clone()
    }
}

#[cfg(test)]
mod tests;
