//! What every process of a release is started with, whether it is a
//! long-running instance, a job task or a release command: its env (the
//! contract of ARCHITECTURE.md), its volumes, and where its output goes.

use std::sync::Arc;

use berth_build::{SLUG_BIN_DIR, SlugStore};
use berth_logs::{LogSource, LogStore};
use berth_proto::LogStream;
use berth_runtime::{InstanceSpec, OutputSink, OutputStream};
use berth_spec::AppSpec;
use berth_store::ReleaseRow;

use crate::services::Resources;

mod image;
pub(crate) mod shuttle;
mod start_error;

pub(crate) use image::{IMAGE_FILE_NAME, PinnedImage};
pub use start_error::{StartError, StartSide};

/// Names other platforms give an app's public URL, set to berth's unless
/// the app sets them itself (Render's, and a common one).
const URL_NAMES: [&str; 2] = ["RENDER_EXTERNAL_URL", "APP_URL"];

/// Turns "run this command of this release" into an [`InstanceSpec`]: the
/// slug, the env, the volumes. Shared by instances, job tasks and release
/// commands, so all three see the same contract.
#[derive(Clone)]
pub struct Launcher {
    slugs: SlugStore,
    resources: Arc<Resources>,
}

impl Launcher {
    /// A launcher over the slug store and the server's resources.
    pub fn new(slugs: SlugStore, resources: Arc<Resources>) -> Launcher {
        Launcher { slugs, resources }
    }

    /// The server's resources.
    pub fn resources(&self) -> &Arc<Resources> {
        &self.resources
    }

    /// The folder of `release`'s slug.
    pub fn slug_dir(&self, release: &ReleaseRow) -> std::path::PathBuf {
        self.slugs.path(&release.slug)
    }

    /// The spec of process `process` (instance `instance`) of `release`
    /// running `command`. Its env is the spec's `[env]`, the app's env vars,
    /// its secrets and resource URLs, `extra` (job env, task variables,
    /// `PORT`), then berth's own variables, which win.
    pub fn instance_spec(
        &self,
        release: &ReleaseRow,
        spec: &AppSpec,
        process: &str,
        instance: &str,
        command: &str,
        extra: &[(String, String)],
    ) -> Result<InstanceSpec, StartError> {
        let slug_dir = self.slugs.path(&release.slug);
        if !slug_dir.is_dir() {
            return Err(StartError::lasting(
                StartSide::Berth,
                format!(
                    "the slug {} of v{} is missing from the data dir",
                    release.slug, release.version
                ),
            ));
        }
        let image = PinnedImage::of_slug(&slug_dir)
            .map_err(|message| StartError::lasting(StartSide::Berth, message))?;
        let mut env: Vec<(String, String)> = Vec::new();
        // An image's own env first: everything after may override it.
        if let Some(image) = &image {
            env.extend(image.config.env.iter().cloned());
        }
        // The app's public URL, under the names apps already read; the
        // app's own values for those names win (they come later).
        let url = self.resources.url_of(&release.app);
        for name in URL_NAMES {
            env.push((name.to_string(), url.clone()));
        }
        env.extend(
            spec.env
                .iter()
                .map(|(key, value)| (key.clone(), value.clone())),
        );
        env.extend(
            release
                .env
                .iter()
                .map(|(key, value)| (key.clone(), value.clone())),
        );
        env.extend(
            self.resources
                .env_for(release, spec, process)
                .map_err(|message| StartError::lasting(StartSide::Config, message))?,
        );
        env.extend(extra.iter().cloned());
        if spec.shuttle.is_some() {
            let port = extra
                .iter()
                .find(|(key, _)| key == "PORT")
                .map(|(_, value)| value.as_str());
            env.extend(shuttle::runtime_env(&self.resources, &release.app, port));
        }
        env.push(("BERTH_APP".into(), release.app.clone()));
        env.push(("BERTH_URL".into(), url));
        env.push(("BERTH_RELEASE".into(), release.version.to_string()));
        env.push(("BERTH_PROCESS".into(), process.to_string()));
        env.push(("BERTH_INSTANCE".into(), instance.to_string()));
        let mut sandbox = self
            .resources
            .sandbox_for(&release.app, spec, process, &slug_dir)
            .map_err(|message| StartError::lasting(StartSide::Sandbox, message))?;
        if let Some(image) = &image {
            return self.image_instance_spec(
                release,
                spec,
                process,
                instance,
                command,
                image,
                env,
                sandbox.take(),
            );
        }
        let mut binds = Vec::new();
        if sandbox.is_some() {
            binds = self
                .resources
                .system_binds(spec)
                .map_err(|message| StartError::lasting(StartSide::Sandbox, message))?;
        }
        binds.extend(self.resources.binds_for(&release.app, spec, process));
        Ok(InstanceSpec {
            id: instance.to_string(),
            app: release.app.clone(),
            command: command.to_string(),
            bin_dir: slug_dir.join(SLUG_BIN_DIR),
            workdir: slug_dir,
            env,
            binds,
            sandbox,
            stop_signal: spec
                .kill_signal
                .unwrap_or(berth_spec::StopSignal::Sigterm)
                .number(),
            terminal: None,
            container: None,
        })
    }
}

impl Launcher {
    /// Gives the sandboxed process `instance` of `release` its network: a
    /// namespace of its own (see [`berth_runtime::net`]) with the app's
    /// private names (see [`crate::internal_names`]), whose handle and
    /// bridges the caller keeps for as long as the process runs. `None`
    /// when it shares the host's network. `fixed_port`: the port it
    /// listens on itself, when the spec fixes one.
    pub fn attach_network(
        &self,
        release: &ReleaseRow,
        spec: &AppSpec,
        instance: &mut InstanceSpec,
        fixed_port: Option<u16>,
    ) -> Result<Option<berth_runtime::net::InstanceNetwork>, StartError> {
        let Some(sandbox) = instance.sandbox.as_mut() else {
            return Ok(None);
        };
        let ports = self.resources.loopback_ports(&release.app, spec);
        let networks = self.resources.networks();
        // Addresses and ports of the pool may be free again a little later.
        let prepared = match (&instance.container, self.resources.docker()) {
            // A container's network is the engine's namespace, linked and
            // bridged as one of berth's own.
            (Some(_), Some(docker)) => docker
                .runtime
                .make_sandbox(&release.app, &instance.id)
                .and_then(|namespace| {
                    networks
                        .adopt(namespace, &ports, &spec.egress.allow)
                        .inspect_err(|_| docker.runtime.discard_sandbox(&release.app, &instance.id))
                })
                .map(Some),
            _ => networks.prepare(&ports, fixed_port.is_some(), &spec.egress.allow),
        }
        .map_err(|message| StartError {
            side: StartSide::Sandbox,
            transient: true,
            message,
        })?;
        let Some(mut network) = prepared else {
            return Ok(None);
        };
        if let Some(names) = self.resources.internal_names() {
            let groups: Vec<String> = release.processes.keys().cloned().collect();
            let hosts = names
                .attach(&release.app, spec, &groups, fixed_port, &mut network)
                .map_err(|message| {
                    if let (Some(_), Some(docker)) = (&instance.container, self.resources.docker())
                    {
                        docker.runtime.discard_sandbox(&release.app, &instance.id);
                    }
                    StartError {
                        side: StartSide::Sandbox,
                        transient: true,
                        message,
                    }
                })?;
            instance.binds.push(berth_runtime::BindMount {
                source: hosts,
                destination: "/etc/hosts".into(),
                writable: false,
            });
        }
        sandbox.network = Some(network.netns.clone());
        instance.env.extend(network.env.iter().cloned());
        if let Some(resolv_conf) = self.resources.networks().resolv_conf() {
            instance.binds.push(berth_runtime::BindMount {
                source: resolv_conf.to_path_buf(),
                destination: "/etc/resolv.conf".into(),
                writable: false,
            });
        }
        Ok(Some(network))
    }
}

impl Launcher {
    /// Whether `release`'s instances run in a Docker container
    /// (`--runtime docker` and an image release).
    pub fn runs_in_container(&self, release: &ReleaseRow) -> bool {
        self.resources.docker().is_some()
            && matches!(
                PinnedImage::of_slug(&self.slugs.path(&release.slug)),
                Ok(Some(_))
            )
    }

    /// Readies `terminal` for a one-off of `release`, before anything is
    /// typed: a container has a terminal of its own, which berth relays
    /// to, so this one is made raw and passes bytes unchanged.
    pub fn ready_terminal(
        &self,
        release: &ReleaseRow,
        terminal: Option<&berth_runtime::InstanceTerminal>,
    ) -> Result<(), String> {
        match terminal {
            Some(terminal) if self.runs_in_container(release) => terminal
                .set_raw()
                .map_err(|err| format!("cannot set up the terminal: {err}")),
            _ => Ok(()),
        }
    }
}

/// Runs `spec` on `terminal`, if given (a container's command too: the
/// Docker runtime relays its own terminal to this one).
pub fn give_terminal(
    spec: &mut InstanceSpec,
    terminal: Option<Arc<berth_runtime::InstanceTerminal>>,
) -> Result<(), String> {
    spec.terminal = terminal;
    Ok(())
}

/// A sink that stores each line in the log store under `source`, and also
/// hands it to `also` (a deploy's progress stream, say).
pub fn log_sink(
    logs: Arc<LogStore>,
    source: LogSource,
    also: Option<Arc<dyn Fn(String) + Send + Sync>>,
) -> OutputSink {
    Arc::new(move |stream, line| {
        let stream = match stream {
            OutputStream::Stdout => LogStream::Stdout,
            OutputStream::Stderr => LogStream::Stderr,
        };
        if let Some(also) = &also {
            also(logs.mask(&source.app, &line).into_owned());
        }
        logs.append(&source, stream, &line);
    })
}

/// What an instance's sink adds: the first time `instance` of `app`
/// reports a write refused as "Read-only file system", an event says where
/// an app may write, once per instance.
pub fn read_only_watch(
    store: Arc<berth_store::Store>,
    app: String,
    instance: String,
) -> Arc<dyn Fn(String) + Send + Sync> {
    let warned = std::sync::atomic::AtomicBool::new(false);
    Arc::new(move |line: String| {
        if line.contains("Read-only file system")
            && !warned.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            let _ = store.record_event(
                &app,
                berth_store::EventKind::InstanceReadOnly,
                &format!(
                    "{instance} tried to write where nothing is kept: its folder (the release's slug) and the host's files are read-only; keep data on a volume ([[mounts]]), or in /tmp, which is lost when the instance stops"
                ),
            );
        }
    })
}

/// Env var names: letters, digits and `_`, not starting with a digit; berth's own names are reserved.
pub fn validate_env_key(key: &str) -> Result<(), String> {
    berth_spec::check_env_key(key)?;
    if key == "PORT" || key.starts_with("BERTH_") {
        return Err(format!("`{key}` is set by berth and cannot be changed"));
    }
    Ok(())
}
