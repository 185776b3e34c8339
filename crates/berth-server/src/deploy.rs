//! Deploys: from an uploaded tarball (or an env change, or a rollback) to a
//! release that serves — or to a clear failure while the old one keeps serving.
//!
//! Every path ends in [`Deployer::roll_out`]: the release becomes the app's
//! target in the store, the reconciler is nudged, and the deploy waits until
//! every wanted instance of the release passes its health check. The first
//! instance that dies or never gets healthy fails the deploy; the store then
//! points the app back at the release that was serving.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use berth_build::{CargoBuilder, SlugStore, UnpackLimits};
use berth_logs::{LogQuery, LogStore};
use berth_proto::DeployProgress;
use berth_proto::validate_app_name;
use berth_spec::{AppSpec, BuilderKind};
use berth_store::{NewRelease, ReleaseRow, Store, StoreError};
use bytes::Bytes;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

use crate::launch::validate_env_key;
use crate::reconciler::ReconcilerHandle;
use crate::resources::{Resources, ResourcesError};

/// A change of configuration that makes a new release of the current build.
#[derive(Debug, Default, Clone)]
pub struct ConfigChange {
    /// Env vars to set.
    pub env_set: BTreeMap<String, String>,
    /// Env vars to remove.
    pub env_unset: Vec<String>,
    /// Secrets to set.
    pub secrets_set: BTreeMap<String, String>,
    /// Secrets to remove.
    pub secrets_unset: Vec<String>,
    /// Why, when it is not the changes themselves (`postgres attached`).
    pub cause: Option<String>,
}

impl ConfigChange {
    fn describe(&self) -> String {
        if let Some(cause) = &self.cause {
            return cause.clone();
        }
        let mut changes: Vec<String> = Vec::new();
        changes.extend(self.env_set.keys().map(|key| format!("set {key}")));
        changes.extend(self.env_unset.iter().map(|key| format!("unset {key}")));
        let mut secrets: Vec<String> = Vec::new();
        secrets.extend(self.secrets_set.keys().map(|key| format!("set {key}")));
        secrets.extend(self.secrets_unset.iter().map(|key| format!("unset {key}")));
        let mut parts = Vec::new();
        if !changes.is_empty() {
            parts.push(format!("env {}", changes.join(", ")));
        }
        if !secrets.is_empty() {
            parts.push(format!("secrets {}", secrets.join(", ")));
        }
        parts.join("; ")
    }
}

impl From<ResourcesError> for DeployFailure {
    fn from(err: ResourcesError) -> Self {
        DeployFailure::before_release(err.to_string())
    }
}

/// Where progress lines of a deploy go (the client's NDJSON stream).
pub type Progress = mpsc::UnboundedSender<DeployProgress>;

fn say(progress: &Progress, message: impl Into<String>) {
    let _ = progress.send(DeployProgress::Step {
        message: message.into(),
    });
}

/// Why a deploy failed; the message is for a person.
#[derive(Debug)]
pub struct DeployFailure {
    /// What went wrong.
    pub message: String,
    /// The release that was tried, if one was made.
    pub release: Option<u64>,
}

impl DeployFailure {
    fn before_release(message: impl Into<String>) -> Self {
        DeployFailure {
            message: message.into(),
            release: None,
        }
    }
}

impl From<StoreError> for DeployFailure {
    fn from(err: StoreError) -> Self {
        DeployFailure::before_release(err.to_string())
    }
}

/// Runs deploys, one at a time per app.
pub struct Deployer {
    pub(crate) store: Arc<Store>,
    pub(crate) logs: Arc<LogStore>,
    pub(crate) slugs: SlugStore,
    pub(crate) launcher: crate::launch::Launcher,
    pub(crate) resources: Arc<Resources>,
    pub(crate) builder: CargoBuilder,
    pub(crate) reconciler: ReconcilerHandle,
    pub(crate) tmp_dir: std::path::PathBuf,
    pub(crate) source_limits: UnpackLimits,
    pub(crate) url_for: Arc<dyn Fn(&str) -> String + Send + Sync>,
    pub(crate) driver: Arc<dyn berth_runtime::Driver>,
    locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl Deployer {
    /// A deployer over the server's parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<Store>,
        logs: Arc<LogStore>,
        slugs: SlugStore,
        resources: Arc<Resources>,
        builder: CargoBuilder,
        reconciler: ReconcilerHandle,
        tmp_dir: std::path::PathBuf,
        source_limits: UnpackLimits,
        url_for: Arc<dyn Fn(&str) -> String + Send + Sync>,
        driver: Arc<dyn berth_runtime::Driver>,
    ) -> Self {
        Deployer {
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
            driver,
            locks: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn lock_for(&self, app: &str) -> Arc<Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(app.to_string()).or_default().clone()
    }

    /// Builds `upload` (a zstd tarball) and rolls it out.
    pub async fn deploy_upload(
        self: Arc<Self>,
        app: String,
        upload: Bytes,
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
        say(
            &progress,
            format!("unpacking the source ({} KiB)", upload.len() / 1024),
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
            berth_build::unpack(&upload[..], &staging_path, limits)
        })
        .await
        .map_err(|err| DeployFailure::before_release(format!("unpacking stopped: {err}")))?
        .map_err(|err| DeployFailure::before_release(err.to_string()))?;

        let spec = read_spec(staging.path(), &app, &progress)?;
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
        if !matches!(spec.build.builder, BuilderKind::Cargo) {
            return Err(DeployFailure::before_release(
                "this spec asks for a Docker build (dockerfile or image); this berth builds with cargo only so far",
            ));
        }

        say(
            &progress,
            "building with cargo build --release (low priority)",
        );
        let started = Instant::now();
        let builder = self.builder.clone();
        let slugs = self.slugs.clone();
        let source = staging.path().to_path_buf();
        let bin = spec.build.bin.clone();
        let features = spec.build.features.clone();
        let build_progress = progress.clone();
        let app_for_build = app.clone();
        // A Blueprint's services share one build directory (an app name,
        // checked: it becomes a folder name).
        let build_dir = match &spec.build.build_dir {
            Some(shared) => {
                validate_app_name(shared).map_err(|err| {
                    DeployFailure::before_release(format!("build_dir `{shared}`: {err}"))
                })?;
                shared.clone()
            }
            None => app.clone(),
        };
        let built = tokio::task::spawn_blocking(move || {
            let mut output = |line: String| {
                let _ = build_progress.send(DeployProgress::Build { line });
            };
            let (built, _lock) = builder
                .build(&build_dir, &source, bin.as_deref(), &features, &mut output)
                .map_err(|err| err.to_string())?;
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
        say(
            &progress,
            format!(
                "built in {:.1}s; slug {slug}",
                started.elapsed().as_secs_f64()
            ),
        );

        let spec_json = serde_json::to_string(&spec).map_err(|err| {
            DeployFailure::before_release(format!("cannot store the spec: {err}"))
        })?;
        if let Some((file, values)) = imported {
            self.store_imported_secrets(&app, &file, &values, &progress)?;
        }
        self.ensure_spec_secrets(&app, &spec, &progress)?;
        self.prepare_resources(&app, &spec, &progress).await?;
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

    /// Runs the spec's post-deploy command once the release serves (after
    /// each roll-out: deploys, env changes and rollbacks alike, as Dokku
    /// runs `postdeploy` after each deploy).
    async fn post_deploy(
        &self,
        spec: &AppSpec,
        release: &ReleaseRow,
        progress: &Progress,
    ) -> Result<(), DeployFailure> {
        let Some(command) = &spec.deploy.post_deploy_command else {
            return Ok(());
        };
        say(
            progress,
            format!("running the post-deploy command: {command}"),
        );
        self.run_once(
            spec,
            release,
            "postdeploy",
            command,
            spec.deploy.release_command_timeout,
            progress,
        )
        .await
        .map_err(|(reason, _)| DeployFailure {
            message: format!("v{} is live, but {reason}", release.version),
            release: Some(release.version),
        })?;
        say(progress, "the post-deploy command succeeded");
        Ok(())
    }

    /// A Shuttle project's `Secrets.toml` (or `Secrets.dev.toml`): read,
    /// checked, masked, and removed from the upload (both files), so no
    /// plaintext reaches the build cache or the slug. Returns the file's
    /// name and values, for [`Deployer::store_imported_secrets`].
    fn take_secrets_file(
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
    fn store_imported_secrets(
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

    /// Gives the app what its spec asks for (a database, a Redis, volumes)
    /// before its release is made, so the release command can use them.
    async fn prepare_resources(
        &self,
        app: &str,
        spec: &AppSpec,
        progress: &Progress,
    ) -> Result<(), DeployFailure> {
        if spec.resources.postgres && self.resources.attach_postgres(app).await? {
            say(
                progress,
                format!(
                    "made PostgreSQL database {} (DATABASE_URL)",
                    berth_resources::postgres::database_name(app)
                ),
            );
        }
        if spec.resources.redis && self.resources.attach_redis(app).await? {
            say(progress, "made a Redis of its own (REDIS_URL)");
        }
        for volume in self.resources.ensure_volumes(app, spec)? {
            say(progress, format!("made volume {volume}"));
        }
        for (owner, what) in [
            (&spec.resources.postgres_from, "database"),
            (&spec.resources.redis_from, "Redis"),
        ] {
            if let Some(owner) = owner {
                self.check_shared(app, owner, what)?;
                say(progress, format!("uses the {what} of app {owner}"));
            }
        }
        Ok(())
    }

    /// An app may use another's database or Redis only when that app's
    /// current spec shares it with this one.
    fn check_shared(&self, app: &str, owner: &str, what: &str) -> Result<(), DeployFailure> {
        let refuse = |why: &str| {
            DeployFailure::before_release(format!(
                "app `{app}` uses the {what} of app `{owner}`, but {why}"
            ))
        };
        let owner_row = self
            .store
            .app(owner)
            .map_err(|_| refuse(&format!("`{owner}` does not exist yet: deploy it first")))?;
        let Some(version) = owner_row.target_release else {
            return Err(refuse(&format!(
                "`{owner}` has no release yet: deploy it first"
            )));
        };
        let release = self.store.release(owner, version)?;
        let owner_spec: AppSpec = serde_json::from_str(&release.spec_json).unwrap_or_default();
        if !owner_spec
            .resources
            .shared_with
            .iter()
            .any(|name| name == app)
        {
            return Err(refuse(&format!(
                "`{owner}` does not share it (its spec's resources.shared_with does not name `{app}`)"
            )));
        }
        let kind = if what == "database" {
            "postgres"
        } else {
            "redis"
        };
        if self.store.resource(owner, kind)?.is_none() {
            return Err(refuse(&format!("`{owner}` has no {what}")));
        }
        Ok(())
    }

    /// Secrets the spec makes (`generateValue`) are made once; secrets it
    /// asks the user for (`sync: false`) must have been set.
    fn ensure_spec_secrets(
        &self,
        app: &str,
        spec: &AppSpec,
        progress: &Progress,
    ) -> Result<(), DeployFailure> {
        let current = self.store.secrets(app)?;
        let mut generated = BTreeMap::new();
        let mut missing = Vec::new();
        for from in &spec.env_from {
            if current.contains_key(&from.key) {
                continue;
            }
            match from.source {
                berth_spec::EnvSource::Generated => {
                    let value = berth_vault::Vault::generate_password(32);
                    generated.insert(from.key.clone(), value.to_string());
                }
                berth_spec::EnvSource::AskOnce => missing.push(from.key.clone()),
                _ => {}
            }
        }
        if !missing.is_empty() {
            let assignments: Vec<String> = missing.iter().map(|key| format!("{key}=…")).collect();
            return Err(DeployFailure::before_release(format!(
                "{} must be set once (the spec marks {} `sync: false`): berth secrets set --app {app} {}",
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" },
                assignments.join(" ")
            )));
        }
        if !generated.is_empty() {
            self.resources.mask_with(app, &generated);
            let sealed = self.resources.seal_secrets(app, current, &generated, &[]);
            let names: Vec<&str> = generated.keys().map(String::as_str).collect();
            self.store
                .set_secrets(app, &sealed, &format!("generated {}", names.join(", ")))?;
            self.resources.refresh_masks(app);
            say(
                progress,
                format!(
                    "generated secret(s) {} (kept from now on)",
                    names.join(", ")
                ),
            );
        }
        Ok(())
    }

    /// Makes a release from the current one with its configuration changed
    /// (env, secrets, or resources attached), and rolls it out. Returns
    /// `None` when the app has no release yet: the change applies at its
    /// first deploy.
    pub async fn reconfigure(
        self: Arc<Self>,
        app: String,
        change: ConfigChange,
        progress: Progress,
    ) -> Result<Option<u64>, DeployFailure> {
        for key in change
            .env_set
            .keys()
            .chain(change.env_unset.iter())
            .chain(change.secrets_set.keys())
            .chain(change.secrets_unset.iter())
        {
            validate_env_key(key).map_err(DeployFailure::before_release)?;
        }
        let lock = self.lock_for(&app);
        let _guard = lock.lock().await;
        self.reconfigure_locked(app, change, progress).await
    }

    /// Gives the app a resource (`postgres` or `redis`) and, when one was
    /// made, a release that has it — under the app's deploy lock, so a
    /// deploy attaching the same resource cannot race it.
    pub async fn attach(
        self: Arc<Self>,
        app: String,
        kind: &'static str,
        progress: Progress,
    ) -> Result<Option<u64>, DeployFailure> {
        let lock = self.lock_for(&app);
        let _guard = lock.lock().await;
        say(&progress, format!("attaching {kind}"));
        let made = if kind == crate::resources::POSTGRES {
            self.resources.attach_postgres(&app).await?
        } else {
            self.resources.attach_redis(&app).await?
        };
        if !made {
            say(&progress, format!("app `{app}` already has {kind}"));
            return Ok(None);
        }
        let change = ConfigChange {
            cause: Some(format!("{kind} attached")),
            ..ConfigChange::default()
        };
        self.reconfigure_locked(app, change, progress).await
    }

    async fn reconfigure_locked(
        &self,
        app: String,
        change: ConfigChange,
        progress: Progress,
    ) -> Result<Option<u64>, DeployFailure> {
        let app_row = self.store.app(&app)?;
        let mut env = self.store.env(&app)?;
        for key in &change.env_unset {
            env.remove(key);
        }
        env.extend(change.env_set.clone());
        let secrets = self.resources.seal_secrets(
            &app,
            self.store.secrets(&app)?,
            &change.secrets_set,
            &change.secrets_unset,
        );
        // Mask the new values before anything can print them.
        self.resources.mask_with(&app, &change.secrets_set);
        let cause = change.describe();
        let Some(current) = app_row.target_release else {
            self.store.set_env(&app, &env, &cause)?;
            self.store.set_secrets(&app, &secrets, &cause)?;
            self.resources.refresh_masks(&app);
            say(
                &progress,
                "saved; the app has no release yet, so this applies at its first deploy",
            );
            return Ok(None);
        };
        let current = self.store.release(&app, current)?;
        let spec: AppSpec = serde_json::from_str(&current.spec_json).unwrap_or_default();
        let release = self
            .make_release(
                &spec,
                NewRelease {
                    cause,
                    slug: current.slug,
                    spec_json: current.spec_json,
                    processes: current.processes,
                    env,
                    secrets,
                },
                &app,
                &progress,
            )
            .await?;
        let outcome = self.roll_out(&spec, release, &progress).await.map(Some);
        self.resources.refresh_masks(&app);
        outcome
    }

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
            .find(|release| release.status == "active")
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
                .find(|release| release.status == "superseded" && Some(release.version) < active)
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
        let spec: AppSpec = serde_json::from_str(&target.spec_json).unwrap_or_default();
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

    /// Makes a release and, when the spec has a release command, runs it in a
    /// temporary instance of the new release before the release becomes the
    /// app's target. If the command fails, the release fails and nothing
    /// that serves is touched.
    async fn make_release(
        &self,
        spec: &AppSpec,
        new: NewRelease,
        app: &str,
        progress: &Progress,
    ) -> Result<ReleaseRow, DeployFailure> {
        let Some(command) = spec.deploy.release_command.clone() else {
            return Ok(self.store.begin_release(app, new)?);
        };
        let release = self.store.create_release(app, new)?;
        say(
            progress,
            format!(
                "running the release command of v{}: {command}",
                release.version
            ),
        );
        if let Err((reason, instance)) = self
            .run_once(
                spec,
                &release,
                "release",
                &command,
                spec.deploy.release_command_timeout,
                progress,
            )
            .await
        {
            return Err(self
                .fail(app, release.version, &reason, instance.as_deref())
                .await);
        }
        say(progress, "the release command succeeded");
        self.store.target_release(app, release.version)?;
        Ok(release)
    }

    /// Runs `command` once in a temporary instance of `release` (process
    /// `what`: the release command, a post-deploy command), its output going
    /// to the log store and to the client. Fails with the reason and, when
    /// it started, the instance's name.
    async fn run_once(
        &self,
        spec: &AppSpec,
        release: &ReleaseRow,
        what: &str,
        command: &str,
        timeout: std::time::Duration,
        progress: &Progress,
    ) -> Result<(), (String, Option<String>)> {
        let app = &release.app;
        let instance = format!("{what}-v{}", release.version);
        let mut instance_spec = self
            .launcher
            .instance_spec(release, spec, what, &instance, command, &[])
            .map_err(|reason| (reason, None))?;
        let _network = self
            .launcher
            .attach_network(release, spec, &mut instance_spec, false)
            .map_err(|reason| (reason, None))?;
        let source = berth_logs::LogSource {
            app: app.to_string(),
            process: what.into(),
            instance: instance.clone(),
            release: release.version,
        };
        let to_client = progress.clone();
        let also: Arc<dyn Fn(String) + Send + Sync> = Arc::new(move |line| {
            let _ = to_client.send(DeployProgress::ReleaseOutput { line });
        });
        let sink = crate::launch::log_sink(self.logs.clone(), source, Some(also));
        let running = self
            .driver
            .start(&instance_spec, sink)
            .map_err(|err| (format!("the {what} command could not start: {err}"), None))?;
        let outcome = tokio::select! {
            cause = running.exited() => cause,
            () = tokio::time::sleep(timeout) => {
                running.stop(spec.kill_timeout).await;
                return Err((
                    format!("the {what} command `{command}` did not finish within {}s and was stopped", timeout.as_secs()),
                    Some(instance),
                ));
            }
        };
        if !outcome.success() {
            return Err((
                format!("the {what} command `{command}` failed ({outcome})"),
                Some(instance),
            ));
        }
        Ok(())
    }

    /// Makes `release` (already the app's target) serve, or fails it.
    async fn roll_out(
        &self,
        spec: &AppSpec,
        release: ReleaseRow,
        progress: &Progress,
    ) -> Result<u64, DeployFailure> {
        let app = release.app.clone();
        let version = release.version;
        let counts = self.store.counts(&app)?;
        let plan: Vec<String> = release
            .processes
            .keys()
            .map(|process| format!("{process} ×{}", counts.get(process).copied().unwrap_or(0)))
            .collect();
        say(
            progress,
            format!("starting v{version}: {}", plan.join(", ")),
        );
        let mut failures = self.reconciler.start_failures();
        let mut snapshots = self.reconciler.watch_snapshot();
        self.reconciler.nudge();
        let deadline =
            Instant::now() + spec.deploy.wait_timeout + std::time::Duration::from_secs(2);
        loop {
            if self.release_is_up(spec, &release) {
                self.store.finish_release(&app, version)?;
                self.reconciler.nudge();
                let url = (self.url_for)(&app);
                say(
                    progress,
                    format!("v{version} is healthy; older instances drain and stop"),
                );
                self.post_deploy(spec, &release, progress).await?;
                let _ = progress.send(DeployProgress::Done {
                    release: version,
                    url,
                });
                return Ok(version);
            }
            tokio::select! {
                failure = failures.recv() => {
                    if let Ok(failure) = failure
                        && failure.app == app && failure.release == version {
                            return Err(self.fail(&app, version, &failure.reason, Some(&failure.instance)).await);
                        }
                }
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return Err(self.fail(&app, version, "the server is shutting down", None).await);
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    let reason = format!("its instances did not become healthy within {}s", spec.deploy.wait_timeout.as_secs());
                    return Err(self.fail(&app, version, &reason, None).await);
                }
            }
        }
    }

    /// Whether every wanted instance of `release` passes its health check.
    /// Counts are read each time: a scale during the deploy changes them.
    fn release_is_up(&self, spec: &AppSpec, release: &ReleaseRow) -> bool {
        let (app, version) = (release.app.as_str(), release.version);
        let Ok(counts) = self.store.counts(app) else {
            return false;
        };
        let snapshot = self.reconciler.snapshot();
        let Some(actual) = snapshot.apps.get(app) else {
            return false;
        };
        release.processes.keys().all(|process| {
            let mut want = counts.get(process).copied().unwrap_or(0) as usize;
            if spec.serves_http(process)
                && spec.http.internal_port.is_some()
                && !self.resources.isolated()
            {
                // A fixed port fits one instance (the reconciler runs one).
                want = want.min(1);
            }
            let running = actual
                .instances
                .iter()
                .filter(|instance| {
                    &instance.process == process
                        && instance.release == version
                        && instance.state == berth_proto::InstanceState::Running
                })
                .count();
            running >= want
        })
    }

    async fn fail(
        &self,
        app: &str,
        version: u64,
        reason: &str,
        instance: Option<&str>,
    ) -> DeployFailure {
        let previous = match self.store.fail_release(app, version, reason) {
            Ok(previous) => previous,
            Err(err) => {
                tracing::error!(error = %err, "cannot mark the release failed");
                None
            }
        };
        self.reconciler.nudge();
        let mut message = match previous {
            Some(previous) => format!("v{version} failed: {reason}. v{previous} keeps serving."),
            None => format!("v{version} failed: {reason}."),
        };
        if let Some(instance) = instance {
            // Give the output a moment to arrive, then show its last lines.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let _ = self.logs.flush().await;
            let query = LogQuery {
                app: app.to_string(),
                instance: Some(instance.to_string()),
                limit: 20,
                ..LogQuery::default()
            };
            if let Ok(lines) = self.logs.query(&query)
                && !lines.is_empty()
            {
                message.push_str(&format!("\nlast output of {instance}:"));
                for stored in lines {
                    message.push_str("\n  ");
                    message.push_str(&stored.line.message);
                }
            }
        }
        DeployFailure {
            message,
            release: Some(version),
        }
    }
}

/// Reads berth.toml or fly.toml (and a Procfile) from an unpacked tree;
/// none means defaults.
fn read_spec(dir: &Path, app: &str, progress: &Progress) -> Result<AppSpec, DeployFailure> {
    let tree = berth_spec::FolderTree::new(dir);
    let parsed = berth_spec::load_project_for(&tree, Some(app))
        .map_err(|err| DeployFailure::before_release(err.to_string()))?;
    if let Some(parsed) = parsed {
        for warning in parsed.warnings {
            let _ = progress.send(DeployProgress::Warning { message: warning });
        }
        let mut names: Vec<&str> = berth_spec::PROJECT_FILE_NAMES
            .iter()
            .chain(&[berth_spec::RENDER_YAML])
            .copied()
            .filter(|name| dir.join(name).is_file())
            .collect();
        if let Some(shuttle) = &parsed.spec.shuttle {
            say(
                progress,
                format!(
                    "a Shuttle project: bin `{}` of package `{}`, run with Shuttle's runtime API",
                    shuttle.bin, shuttle.package
                ),
            );
            names.extend(
                [berth_spec::SHUTTLE_TOML]
                    .into_iter()
                    .filter(|name| dir.join(name).is_file()),
            );
        }
        if !names.is_empty() {
            say(progress, format!("using {}", names.join(" and ")));
        }
        return Ok(parsed.spec);
    }
    if !dir.join("Cargo.toml").is_file() {
        return Err(DeployFailure::before_release(
            "the upload has no Cargo.toml, berth.toml or fly.toml; run berth in the app's folder",
        ));
    }
    say(
        progress,
        "no berth.toml or fly.toml: zero config (the package's binary serves as `web`)",
    );
    Ok(AppSpec::default())
}

/// Secrets read from a file: its name and the values.
type ImportedSecrets = (String, BTreeMap<String, String>);
