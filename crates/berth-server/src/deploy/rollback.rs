//! Rollback: an earlier release serves again, without a rebuild.

use berth_store::ReleaseStatus;
use std::sync::Arc;

use berth_store::NewRelease;

use super::Deployer;
use super::failure::{DeployFailure, Progress, say};

impl Deployer {
    /// Rolls back to `version` (or the release before the active one) without building.
    pub async fn rollback(
        self: Arc<Self>,
        app: String,
        version: Option<u64>,
        progress: Progress,
    ) -> Result<u64, DeployFailure> {
        let lock = self.lock_for(&app);
        let _guard = lock.lock().await;
        let releases = self.store.releases(&app)?;
        let active = releases
            .iter()
            .find(|release| release.status == ReleaseStatus::Active)
            .map(|release| release.version);
        let target = match version {
            Some(version) => releases
                .iter()
                .find(|release| release.version == version)
                .ok_or_else(|| {
                    DeployFailure::before_release(format!("app `{app}` has no release v{version}"))
                })?,
            None => releases
                .iter()
                .find(|release| {
                    release.status == ReleaseStatus::Superseded && Some(release.version) < active
                })
                .ok_or_else(|| {
                    DeployFailure::before_release(format!(
                        "app `{app}` has no earlier good release to roll back to"
                    ))
                })?,
        };
        if Some(target.version) == active {
            return Err(DeployFailure::before_release(format!(
                "v{} is already the active release",
                target.version
            )));
        }
        if !self.slugs.contains(&target.slug) {
            return Err(DeployFailure::before_release(format!(
                "the slug of v{} is no longer stored",
                target.version
            )));
        }
        say(
            &progress,
            format!("rolling back to v{} (no build)", target.version),
        );
        let spec = crate::stored_spec::spec_of(target)
            .map_err(|err| DeployFailure::before_release(err.to_string()))?;
        let release = self.store.begin_release(
            &app,
            NewRelease {
                cause: format!("rollback to v{}", target.version),
                slug: target.slug.clone(),
                spec_json: target.spec_json.clone(),
                processes: target.processes.clone(),
                env: target.env.clone(),
                secrets: target.secrets.clone(),
            },
        )?;
        // The release brings back older secret values: mask them too.
        self.resources.refresh_masks(&app);
        self.roll_out(&spec, release, &progress).await
    }
}
