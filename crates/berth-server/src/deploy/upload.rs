//! A deploy from an uploaded source tree: unpack, read the spec, build,
//! then release.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use berth_proto::DeployProgress;
use berth_proto::validate_app_name;
use berth_spec::{AppSpec, BuilderKind};
use berth_store::NewRelease;
use bytes::Bytes;
use tokio::time::Instant;

use super::Deployer;
use super::dockerfile::DockerfileBuild;
use super::failure::{DeployFailure, Progress, say};
use super::read_spec::{read_spec, within_limits};
use crate::launch::validate_env_key;

/// Secrets read from a file: its name and the values.
type ImportedSecrets = (String, BTreeMap<String, String>);

impl Deployer {
    /// Writes an upload to a file in the server's temp dir as it arrives,
    /// never more than `max_bytes` of it (`Err(None)` past that), so an
    /// upload is never held whole in memory.
    pub async fn receive_upload(
        &self,
        mut body: impl futures_util::Stream<Item = Result<Bytes, axum::Error>> + Unpin,
        max_bytes: u64,
    ) -> Result<tempfile::NamedTempFile, Option<String>> {
        use futures_util::StreamExt;
        use std::io::Write;
        std::fs::create_dir_all(&self.tmp_dir)
            .map_err(|err| Some(format!("cannot create {}: {err}", self.tmp_dir.display())))?;
        let mut file = tempfile::Builder::new()
            .prefix("upload-")
            .suffix(".tar.zst")
            .tempfile_in(&self.tmp_dir)
            .map_err(|err| Some(format!("cannot store the upload: {err}")))?;
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|err| Some(format!("the upload stopped: {err}")))?;
            received += chunk.len() as u64;
            if received > max_bytes {
                return Err(None);
            }
            file.write_all(&chunk)
                .map_err(|err| Some(format!("cannot store the upload: {err}")))?;
        }
        Ok(file)
    }

    /// Builds `upload` (a file holding a zstd tarball) and rolls it out;
    /// its duration goes to the timings, a failure to the webhooks.
    pub async fn deploy_upload(
        self: Arc<Self>,
        app: String,
        upload: tempfile::NamedTempFile,
        image: Option<String>,
        progress: Progress,
    ) -> Result<u64, DeployFailure> {
        let started = Instant::now();
        let deployed = self
            .clone()
            .build_and_roll_out(app.clone(), upload, image, progress)
            .await;
        let outcome = if deployed.is_ok() {
            "succeeded"
        } else {
            "failed"
        };
        self.timings.deploy(&app, outcome, started.elapsed());
        if let Err(failure) = &deployed {
            self.tell_webhooks(&app, failure);
        }
        deployed
    }

    /// Queues a failed deploy for the webhooks that ask for `deploy.failed`.
    fn tell_webhooks(&self, app: &str, failure: &DeployFailure) {
        let body = serde_json::json!({
            "message": format!("a deploy of {app} failed: {}", failure.message),
            "data": { "release": failure.release },
        })
        .to_string();
        if let Err(err) = self.store.enqueue_notification("deploy.failed", app, &body) {
            tracing::warn!(app, error = %err, "cannot queue a deploy failure for the webhooks");
        }
    }

    async fn build_and_roll_out(
        self: Arc<Self>,
        app: String,
        upload: tempfile::NamedTempFile,
        image: Option<String>,
        progress: Progress,
    ) -> Result<u64, DeployFailure> {
        let lock = self.lock_for(&app);
        let _guard = match lock.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                say(
                    &progress,
                    "another deploy of this app is running; waiting for it",
                );
                lock.lock().await
            }
        };
        self.store.app(&app)?;
        let size = upload.as_file().metadata().map_or(0, |meta| meta.len());
        say(
            &progress,
            format!("unpacking the source ({} KiB)", size / 1024),
        );
        std::fs::create_dir_all(&self.tmp_dir).map_err(|err| {
            DeployFailure::before_release(format!(
                "cannot create {}: {err}",
                self.tmp_dir.display()
            ))
        })?;
        let staging = tempfile::Builder::new()
            .prefix("upload-")
            .tempdir_in(&self.tmp_dir)
            .map_err(|err| {
                DeployFailure::before_release(format!("cannot create a staging directory: {err}"))
            })?;
        let staging_path = staging.path().to_path_buf();
        let limits = self.source_limits;
        tokio::task::spawn_blocking(move || {
            let file = upload
                .reopen()
                .map_err(berth_build::SourceError::Malformed)?;
            berth_build::unpack(std::io::BufReader::new(file), &staging_path, limits)
        })
        .await
        .map_err(|err| DeployFailure::before_release(format!("unpacking stopped: {err}")))?
        .map_err(|err| DeployFailure::before_release(err.to_string()))?;

        let mut spec = read_spec(staging.path(), &app, &progress, image.is_some())?;
        within_limits(&spec)?;
        if let Some(budget) = &spec.budget {
            berth_cost::find_plan(&self.prices, &budget.price_as).map_err(|err| {
                DeployFailure::before_release(format!("[budget] price_as: {err}"))
            })?;
        }
        // Read (and removed from the upload) now; stored once the build
        // succeeded, so a failed deploy changes nothing.
        let imported = self.take_secrets_file(&app, staging.path(), &spec)?;
        if let Some(named) = &spec.app
            && named != &app
        {
            let _ = progress.send(DeployProgress::Warning {
                message: format!("the spec names app `{named}`; deploying to `{app}` as asked"),
            });
        }
        // `--image`, or the spec's own image (fly's `[build] image`).
        let image = image.or_else(|| match &spec.build.builder {
            BuilderKind::Image { image } => Some(image.clone()),
            _ => None,
        });
        // A cargo-chef Dockerfile is a cargo build on a base image; any
        // other is built with buildah.
        let dockerfile = match (&image, &spec.build.builder) {
            (None, BuilderKind::Dockerfile { path }) => {
                let path = path.clone();
                Some((
                    self.read_dockerfile(staging.path(), &path, &mut spec, &progress)?,
                    path,
                ))
            }
            _ => None,
        };

        self.check_domains(&app, &spec)?;
        self.check_tcp_ports(&app, &spec)?;
        let image = match (image, dockerfile) {
            (Some(image), _) => Some(image),
            (None, None) => None,
            (None, Some((DockerfileBuild::Other { text }, path))) => Some(
                self.buildah_image(
                    &app,
                    staging.path(),
                    &path,
                    &text,
                    &spec.build.hosts,
                    &progress,
                )
                .await?,
            ),
            (None, Some((DockerfileBuild::Chef(plan), _))) => {
                let (binary, slug) = self
                    .build_from_source(&app, &mut spec, staging.path(), &progress)
                    .await?;
                Some(
                    self.chef_image(&app, &plan, &binary, &slug, &progress)
                        .await?,
                )
            }
        };
        let (default_binary, slug) = match image {
            Some(image) => {
                let (slug, pinned) = self.image_slug(&app, &image, &progress).await?;
                if pinned.config.argv().is_empty()
                    && spec.process_commands("").values().any(String::is_empty)
                {
                    return Err(DeployFailure::before_release(format!(
                        "{image} has neither ENTRYPOINT nor CMD: name the command in berth.toml's [processes]"
                    )));
                }
                // An image that listens on a port it exposes is reached there.
                if spec.http.internal_port.is_none()
                    && let Some(port) = pinned.config.exposed_ports.first()
                {
                    say(
                        &progress,
                        format!("the image exposes port {port}: routing HTTP to it"),
                    );
                    spec.http.internal_port = Some(*port);
                }
                (pinned.command(), slug)
            }
            None => {
                self.build_from_source(&app, &mut spec, staging.path(), &progress)
                    .await?
            }
        };

        let spec_json = serde_json::to_string(&spec).map_err(|err| {
            DeployFailure::before_release(format!("cannot store the spec: {err}"))
        })?;
        if let Some((file, values)) = imported {
            self.store_imported_secrets(&app, &file, &values, &progress)?;
        }
        self.ensure_spec_secrets(&app, &spec, &progress)?;
        self.prepare_resources(&app, &spec, &progress).await?;
        if let Some(notice) = self
            .resources
            .pending_migrations(&app, &self.slugs.path(&slug))
            .await
        {
            let _ = progress.send(DeployProgress::Warning { message: notice });
        }
        self.store
            .set_spec_domains(&app, &spec.http.domains)
            .map_err(|err| DeployFailure::before_release(err.to_string()))?;
        let release = self
            .make_release(
                &spec,
                NewRelease {
                    cause: "deploy".into(),
                    slug,
                    processes: spec.process_commands(&default_binary),
                    env: self.store.env(&app)?,
                    secrets: self.store.secrets(&app)?,
                    spec_json,
                },
                &app,
                &progress,
            )
            .await?;
        self.roll_out(&spec, release, &progress).await
    }

    /// Builds the source in `source` as `spec` says and stores its slug:
    /// the default binary's name and the slug's digest.
    async fn build_from_source(
        &self,
        app: &str,
        spec: &mut AppSpec,
        source_dir: &Path,
        progress: &Progress,
    ) -> Result<(String, String), DeployFailure> {
        let system_usr = self.build_root(spec, source_dir, progress).await?;
        if spec.build.command_only {
            let package_bins: Vec<std::path::PathBuf> = system_usr
                .iter()
                .flat_map(|usr| [usr.join("bin"), usr.join("sbin"), usr.join("local/bin")])
                .collect();
            let missing = super::host_programs::missing_programs(spec, &package_bins);
            if !missing.is_empty() {
                return Err(DeployFailure::before_release(format!(
                    "its commands run with this server's toolchain, which lacks {}: install it on the server and deploy again",
                    missing.join(", ")
                )));
            }
            say(progress, "building with its build command only (no cargo)");
        } else {
            say(
                progress,
                "building with cargo build --release (low priority)",
            );
        }
        let started = Instant::now();
        let builder = self.builder.clone();
        let slugs = self.slugs.clone();
        let source = source_dir.to_path_buf();
        // A virtual workspace builds the members the app runs, chosen now
        // from the manifests rather than after a build of everything.
        let workspace = match spec.build.command_only {
            true => None,
            false => berth_spec::workspace_members(&berth_spec::FolderTree::new(source_dir))
                .map_err(|err| DeployFailure::before_release(err.to_string()))?,
        };
        let command_only = spec.build.command_only;
        let site_dir = spec.site.as_ref().map(|site| site.dir.clone());
        let (packages, bin) = match workspace {
            Some(members) => {
                let chosen = berth_spec::choose_packages(&members, spec)
                    .map_err(DeployFailure::before_release)?;
                say(
                    progress,
                    format!("a Cargo workspace: building {}", chosen.packages.join(", ")),
                );
                (chosen.packages, chosen.bin.or(spec.build.bin.clone()))
            }
            None => (Vec::new(), spec.build.bin.clone()),
        };
        let features = spec.build.features.clone();
        let build_command = spec.build.command.clone();
        let build_hosts = spec.build.hosts.clone();
        let build_progress = progress.clone();
        let app_for_build = app.to_string();
        // A Blueprint's services share one build directory (an app name,
        // checked: it becomes a folder name).
        let build_dir = match &spec.build.build_dir {
            Some(shared) => {
                validate_app_name(shared).map_err(|err| {
                    DeployFailure::before_release(format!("build_dir `{shared}`: {err}"))
                })?;
                shared.clone()
            }
            None => app.to_string(),
        };
        let surroundings = self
            .build_surroundings(app, spec, &source, progress)
            .await?;
        let built = tokio::task::spawn_blocking(move || {
            let mut output = |line: String| {
                let _ = build_progress.send(DeployProgress::Build { line });
            };
            let request = berth_build::BuildRequest {
                app: &app_for_build,
                build_dir: &build_dir,
                uploaded: &source,
                bin: bin.as_deref(),
                features: &features,
                packages,
                command: build_command,
                command_only,
                env: surroundings.env,
                loopback_ports: surroundings.loopback_ports,
                hosts: build_hosts,
                system_usr,
            };
            let (built, _lock) = builder
                .build(&request, &mut output)
                .map_err(|err| err.to_string())?;
            if let Some(dir) = &site_dir
                && !berth_runtime::open_beneath(&built.source_dir, std::path::Path::new(dir))
                    .and_then(|folder| folder.metadata())
                    .is_ok_and(|meta| meta.is_dir())
            {
                return Err(format!(
                    "the site's folder `{dir}` is not there after the build: staticPublishPath must name the folder the build command writes (or the repository has)"
                ));
            }
            let digest = slugs
                .store(&app_for_build, &built.source_dir, &built.binaries)
                .map_err(|err| {
                    let source = std::error::Error::source(&err)
                        .map(|source| format!(": {source}"))
                        .unwrap_or_default();
                    format!("{err}{source}")
                })?;
            Ok::<_, String>((built.default_binary, digest))
        })
        .await
        .map_err(|err| DeployFailure::before_release(format!("the build stopped: {err}")))?
        .map_err(DeployFailure::before_release)?;
        let (default_binary, slug) = built;
        crate::app_usage::record_build(&self.store, app, started.elapsed());
        self.timings.build(app, started.elapsed());
        say(
            progress,
            format!(
                "built in {:.1}s; slug {slug}",
                started.elapsed().as_secs_f64()
            ),
        );
        Ok((default_binary, slug))
    }

    /// Refuses, before the build, a spec naming a domain another app has.
    fn check_domains(&self, app: &str, spec: &AppSpec) -> Result<(), DeployFailure> {
        let taken = self
            .store
            .domains(None)
            .map_err(|err| DeployFailure::before_release(err.to_string()))?;
        match taken
            .iter()
            .find(|row| row.app != app && spec.http.domains.contains(&row.name))
        {
            Some(row) => Err(DeployFailure::before_release(format!(
                "[http_service] domains: `{}` belongs to app `{}`; remove it there first (berth domains remove {} --app {})",
                row.name, row.app, row.name, row.app
            ))),
            None => match spec
                .http
                .domains
                .iter()
                .find_map(|domain| self.domain_names_another_app(app, domain))
            {
                Some(why) => Err(DeployFailure::before_release(format!(
                    "[http_service] domains: {why}"
                ))),
                None => Ok(()),
            },
        }
    }

    /// A TCP service's public port another app's live release holds is
    /// refused before the build (as a domain is): the port stays its.
    fn check_tcp_ports(&self, app: &str, spec: &AppSpec) -> Result<(), DeployFailure> {
        let wanted: Vec<u16> = spec
            .tcp_services
            .iter()
            .flat_map(|service| service.ports.iter().map(|port| port.port))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let apps = self
            .store
            .apps()
            .map_err(|err| DeployFailure::before_release(err.to_string()))?;
        for other in apps.iter().filter(|other| other.name != app) {
            let Ok(Some(release)) = self.store.active_release(&other.name) else {
                continue;
            };
            let Ok(theirs) = crate::stored_spec::spec_of(&release) else {
                continue;
            };
            let taken = theirs
                .tcp_services
                .iter()
                .flat_map(|service| service.ports.iter().map(|port| port.port))
                .find(|port| wanted.contains(port));
            if let Some(port) = taken {
                return Err(DeployFailure::before_release(format!(
                    "[[services]] port {port} is the TCP service port of app `{}`; choose another, or remove it from that app first",
                    other.name
                )));
            }
        }
        Ok(())
    }

    /// A Shuttle project's `Secrets.toml` (or `Secrets.dev.toml`): read,
    /// checked, masked, and removed from the upload (both files), so no
    /// plaintext reaches the build cache or the slug. Returns the file's
    /// name and values, for [`Deployer::store_imported_secrets`].
    pub(super) fn take_secrets_file(
        &self,
        app: &str,
        dir: &Path,
        spec: &AppSpec,
    ) -> Result<Option<ImportedSecrets>, DeployFailure> {
        let Some(shuttle) = &spec.shuttle else {
            return Ok(None);
        };
        let mut imported = None;
        if let Some(file) = &shuttle.secrets_file {
            let text = std::fs::read_to_string(dir.join(file)).map_err(|err| {
                DeployFailure::before_release(format!("cannot read {file}: {err}"))
            })?;
            let values = berth_spec::parse_secrets_file(file, &text)
                .map_err(|err| DeployFailure::before_release(err.to_string()))?;
            for key in values.keys() {
                validate_env_key(key)
                    .map_err(|err| DeployFailure::before_release(format!("{file}: {err}")))?;
            }
            self.resources.mask_with(app, &values);
            imported = Some((file.clone(), values));
        }
        for file in berth_spec::SHUTTLE_SECRETS_FILES {
            let path = dir.join(file);
            if path.is_file() {
                std::fs::remove_file(&path).map_err(|err| {
                    DeployFailure::before_release(format!("cannot remove {file}: {err}"))
                })?;
            }
        }
        Ok(imported)
    }

    /// Seals imported secrets into the app's secrets (the release made next carries them).
    pub(super) fn store_imported_secrets(
        &self,
        app: &str,
        file: &str,
        values: &BTreeMap<String, String>,
        progress: &Progress,
    ) -> Result<(), DeployFailure> {
        let current = self.store.secrets(app)?;
        let sealed = self
            .resources
            .seal_secrets(app, current.clone(), values, &[]);
        if sealed != current {
            self.store
                .set_secrets(app, &sealed, &format!("imported from {file}"))?;
            self.resources.refresh_masks(app);
        }
        say(
            progress,
            format!(
                "{} secret(s) from {file} stored sealed; the file is not kept",
                values.len()
            ),
        );
        Ok(())
    }
}
