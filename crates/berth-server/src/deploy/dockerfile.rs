//! Dockerfile deploys: a cargo-chef Dockerfile (the guide's shape, and
//! `berth export dockerfile`'s) is built natively — cargo with berth's
//! persistent target dir, then the binary put on the runtime stage's base
//! image from berth's registry with that stage's settings — and deployed
//! as an image. Other Dockerfiles are built with buildah (`super::buildah`).

use std::io::Read;
use std::path::Path;

use berth_build::SLUG_BIN_DIR;
use berth_image::{ImageSettings, ImageStore, LayerWriter, Platform, UnpackLimits, publish};
use berth_registry::RepoName;
use berth_spec::{AppSpec, ChefPlan};

use super::Deployer;
use super::failure::{DeployFailure, Progress, say};
use super::image::parse_reference;
use berth_proto::DeployProgress;

/// How a Dockerfile is built.
pub(super) enum DockerfileBuild {
    /// The cargo-chef shape: natively.
    Chef(Box<ChefPlan>),
    /// Any other: with buildah.
    Other {
        /// The Dockerfile.
        text: String,
    },
}

/// The largest Dockerfile read.
const MAX_DOCKERFILE: u64 = 1024 * 1024;

impl Deployer {
    /// Reads the Dockerfile at `path` of the upload: a cargo-chef one is
    /// a plan the build then makes the binary of; any other is built with
    /// buildah.
    pub(super) fn read_dockerfile(
        &self,
        source: &Path,
        path: &str,
        spec: &mut AppSpec,
        progress: &Progress,
    ) -> Result<DockerfileBuild, DeployFailure> {
        let mut text = String::new();
        berth_runtime::open_beneath(source, Path::new(path))
            .and_then(|file| file.take(MAX_DOCKERFILE).read_to_string(&mut text))
            .map_err(|err| DeployFailure::before_release(format!("cannot read {path}: {err}")))?;
        let plan = match berth_spec::chef_plan(&text) {
            Ok(plan) => plan,
            Err(why) => {
                say(
                    progress,
                    format!("{path} is not the cargo-chef shape berth builds natively ({why})"),
                );
                return Ok(DockerfileBuild::Other { text });
            }
        };
        say(
            progress,
            format!(
                "{path}: a cargo-chef build, run natively (cargo, then its binary on {})",
                plan.base
            ),
        );
        for skipped in &plan.not_run {
            let _ = progress.send(DeployProgress::Warning {
                message: format!(
                    "{path}: `{skipped}` in the runtime stage is not run; what it adds must be in the base image"
                ),
            });
        }
        if spec.build.bin.is_none() {
            spec.build.bin = plan.bin.clone();
        }
        if spec.build.features.is_empty() {
            spec.build.features = plan.features.clone();
        }
        Ok(DockerfileBuild::Chef(Box::new(plan)))
    }

    /// Puts `binary` of slug `slug` on the plan's base image as the
    /// runtime stage says, stores it as `APP:build-…` in the registry, and
    /// returns its reference.
    pub(super) async fn chef_image(
        &self,
        app: &str,
        plan: &ChefPlan,
        binary: &str,
        slug: &str,
        progress: &Progress,
    ) -> Result<String, DeployFailure> {
        let (base_repo, base_tag) =
            parse_reference(&plan.base).map_err(DeployFailure::before_release)?;
        if self.registry.manifest(&base_repo, &base_tag).is_err() {
            return Err(DeployFailure::before_release(format!(
                "the runtime stage's base image {} is not in berth's registry: push it there first (skopeo copy docker://{} docker://SERVER/{base_repo}:{base_tag})",
                plan.base, plan.base
            )));
        }
        say(progress, format!("putting {binary} on {}", plan.base));
        let registry = self.registry.clone();
        let images = ImageStore::new(&self.resources.images_dir(), UnpackLimits::default());
        let built = self.slugs.path(slug).join(SLUG_BIN_DIR).join(binary);
        let (app, plan, binary) = (app.to_string(), plan.clone(), binary.to_string());
        let tag = format!("build-{}", &slug[..slug.len().min(12)]);
        tokio::task::spawn_blocking(move || {
            let fail = |err: &dyn std::fmt::Display| err.to_string();
            // The base's root tells whether the destination is a folder.
            let base = images
                .prepare(&registry, &base_repo, &base_tag, &Platform::host())
                .map_err(|err| fail(&err))?;
            let inside = plan.destination.trim_end_matches('/');
            // A folder when written as one, or when the base has one there
            // (looked up inside the base's root, as the instance will).
            let is_dir = plan.destination_is_dir || berth_image::is_dir_in_root(&base.root, inside);
            let name = if plan.copied_name.is_empty() {
                binary.as_str()
            } else {
                plan.copied_name.as_str()
            };
            let destination = if is_dir {
                format!("{inside}/{name}")
            } else {
                inside.to_string()
            };
            let mut writer = LayerWriter::new(registry.root()).map_err(|err| fail(&err))?;
            writer
                .add_file(&built, &destination, 0o755)
                .map_err(|err| fail(&err))?;
            let layer = writer.finish().map_err(|err| fail(&err))?;
            let settings = ImageSettings {
                entrypoint: plan.entrypoint.clone(),
                cmd: plan.cmd.clone(),
                env: plan.env.clone(),
                working_dir: plan.working_dir.clone(),
                exposed_ports: plan.exposed_ports.clone(),
            };
            let repo = RepoName::parse(&app).map_err(|err| fail(&err))?;
            let digest = publish(
                &registry,
                &repo,
                &tag,
                Some((&base_repo, &base_tag)),
                vec![layer],
                &settings,
            )
            .map_err(|err| fail(&err))?;
            // The release pins it by digest; a tag per build would keep
            // every build's binary from the collector for good.
            let _ = registry.delete_manifest(&repo, &tag);
            Ok::<_, String>(format!("{app}@{digest}"))
        })
        .await
        .map_err(|err| DeployFailure::before_release(format!("making the image stopped: {err}")))?
        .map_err(DeployFailure::before_release)
    }
}
