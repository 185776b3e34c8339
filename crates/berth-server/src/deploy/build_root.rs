//! The packages a build needs besides cargo: `[build] packages`, and those
//! `Cargo.lock` and `.cargo/config.toml` call for that this server lacks
//! (see `requirements`), installed into a root of the build's own (see
//! [`crate::services::package_roots`]).

use std::path::{Path, PathBuf};

use berth_proto::DeployProgress;
use berth_spec::AppSpec;

use super::Deployer;
use super::failure::{DeployFailure, Progress, say};
use super::requirements;

impl Deployer {
    /// Adds the packages the source needs to `spec` when berth can install
    /// them (as root, with apt; the release keeps the list, so its
    /// instances get the same root), warns about them otherwise, and makes
    /// the root. Returns the `/usr` the build sees, if not the host's.
    pub(super) async fn build_root(
        &self,
        spec: &mut AppSpec,
        source: &Path,
        progress: &Progress,
    ) -> Result<Option<PathBuf>, DeployFailure> {
        let installs = self.resources.isolated() && Path::new("/usr/bin/apt-get").exists();
        let declared = spec.build.packages.clone();
        if let Some(message) = requirements::unbuilt_front_end(source) {
            let _ = progress.send(DeployProgress::Warning { message });
        }
        for missing in requirements::missing(source) {
            if !installs {
                let _ = progress.send(DeployProgress::Warning {
                    message: missing.warning(),
                });
                continue;
            }
            let added: Vec<&str> = missing
                .packages
                .iter()
                .copied()
                .filter(|package| !spec.build.packages.iter().any(|had| had == package))
                .collect();
            if added.is_empty() {
                continue;
            }
            say(
                progress,
                format!(
                    "{}, which this server lacks: adding Debian's {} to the build's packages",
                    missing.why,
                    added.join(" and ")
                ),
            );
            spec.build
                .packages
                .extend(added.into_iter().map(str::to_string));
        }
        let prepared = self.prepare_root(&spec.build.packages, progress).await;
        match prepared {
            // Added by guess, they may not be needed after all (a crate
            // feature that builds the library itself): the build goes on
            // with what the spec asked for.
            Err(failure) if spec.build.packages != declared => {
                let _ = progress.send(DeployProgress::Warning {
                    message: format!(
                        "{}; building without the packages berth added",
                        failure.message
                    ),
                });
                spec.build.packages = declared;
                self.prepare_root(&spec.build.packages, progress).await
            }
            other => other,
        }
    }

    async fn prepare_root(
        &self,
        packages: &[String],
        progress: &Progress,
    ) -> Result<Option<PathBuf>, DeployFailure> {
        if packages.is_empty() {
            return Ok(None);
        }
        let packages = packages.to_vec();
        let roots = self.resources.package_roots().clone();
        let sandboxed = self.resources.isolated();
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || {
            if sandboxed {
                roots.prepare(&packages, &mut |line| say(&progress, line))
            } else {
                roots.check_installed(&packages).map(|()| None)
            }
        })
        .await
        .map_err(|err| {
            DeployFailure::before_release(format!("the package install stopped: {err}"))
        })?
        .map_err(DeployFailure::before_release)
    }
}
