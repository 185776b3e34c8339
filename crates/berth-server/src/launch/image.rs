//! The image a slug pins, when a release runs an image: what
//! [`Launcher`](super::Launcher) starts it with — its own root, its
//! working directory, its env and its command.

use std::path::Path;

use berth_image::ImageConfig;
use berth_runtime::{InstanceSpec, Sandbox};
use berth_spec::AppSpec;
use berth_store::ReleaseRow;
use serde::{Deserialize, Serialize};

use super::{Launcher, StartError, StartSide};

/// Where an image slug says which image it is.
pub(crate) const IMAGE_FILE: &str = ".berth/image.json";
/// Its name in the slug's `.berth/`.
pub(crate) const IMAGE_FILE_NAME: &str = "image.json";
/// The most of it read: a pin is a few KiB.
const MAX_IMAGE_FILE: u64 = 1024 * 1024;

/// What an image slug holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PinnedImage {
    /// The reference it was deployed as (`shop:v1`).
    pub(crate) reference: String,
    /// Its repository in berth's registry.
    pub(crate) repository: String,
    /// The manifest digest it runs (for an index, this machine's).
    pub(crate) manifest: String,
    /// Its config: entrypoint, cmd, env, working dir, ports.
    pub(crate) config: ImageConfig,
}

impl PinnedImage {
    /// The image a slug pins, if it is an image's; a pin that cannot be
    /// read is an error, never taken for "not an image".
    pub(crate) fn of_slug(slug_dir: &Path) -> Result<Option<PinnedImage>, String> {
        // Never through a link, and bounded: read as root at every start.
        let read = || -> std::io::Result<Vec<u8>> {
            use std::io::Read;
            use std::os::unix::fs::OpenOptionsExt;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(slug_dir.join(IMAGE_FILE))?;
            if !file.metadata()?.is_file() {
                return Err(std::io::Error::other("not a regular file"));
            }
            let mut bytes = Vec::new();
            file.take(MAX_IMAGE_FILE).read_to_end(&mut bytes)?;
            Ok(bytes)
        };
        let bytes = match read() {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(format!(
                    "cannot read {}: {err}",
                    slug_dir.join(IMAGE_FILE).display()
                ));
            }
        };
        let pinned: PinnedImage = serde_json::from_slice(&bytes)
            .map_err(|err| format!("{} is damaged: {err}", slug_dir.join(IMAGE_FILE).display()))?;
        berth_registry::Digest::parse(&pinned.manifest)
            .map_err(|err| format!("{}: {err}", slug_dir.join(IMAGE_FILE).display()))?;
        Ok(Some(pinned))
    }

    /// The command an instance runs: the entrypoint and cmd, as plain
    /// words when they are, else in exec form (`["a", "b c"]`), which the
    /// sandbox runs without a shell (an image may have none).
    pub(crate) fn command(&self) -> String {
        let argv = self.config.argv();
        let plain = argv.iter().all(|word| {
            !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/._-=:,@+%".contains(&b))
        });
        if plain && argv.first().is_some_and(|first| !first.contains('=')) {
            argv.join(" ")
        } else {
            serde_json::to_string(&argv).expect("words serialize")
        }
    }
}

impl Launcher {
    /// The spec of an instance of an image release: the image's root as
    /// its `/` (read-only; its `/tmp` and volumes writable), its working
    /// directory, and `command` (the image's own unless the spec names
    /// another) run inside it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn image_instance_spec(
        &self,
        release: &ReleaseRow,
        spec: &AppSpec,
        process: &str,
        instance: &str,
        command: &str,
        image: &PinnedImage,
        env: Vec<(String, String)>,
        sandbox: Option<Sandbox>,
    ) -> Result<InstanceSpec, StartError> {
        let Some(mut sandbox) = sandbox else {
            return Err(StartError::lasting(
                StartSide::Config,
                "an image runs in a root of its own, which needs berth running as root with isolation on",
            ));
        };
        // A workdir relative in the image is under `/`, as docker reads it.
        let workdir = std::path::Path::new("/").join(&image.config.working_dir);
        let stop_signal = spec
            .kill_signal
            .unwrap_or(berth_spec::StopSignal::Sigterm)
            .number();
        let volumes = self.resources.binds_for(&release.app, spec, process);
        let (binds, container) = match self.resources.docker() {
            // The engine makes its root and /etc/hosts. Its resolv.conf is
            // berth's relay's when there is one (see `attach_network`),
            // else the host's, as in berth's own sandbox: the engine's
            // would name servers the instance's egress may not reach.
            Some(docker) => {
                let mut binds = Vec::new();
                if self.resources.networks().resolv_conf().is_none()
                    && Path::new("/etc/resolv.conf").is_file()
                {
                    binds.push(berth_runtime::BindMount {
                        source: "/etc/resolv.conf".into(),
                        destination: "/etc/resolv.conf".into(),
                        writable: false,
                    });
                }
                binds.extend(volumes);
                let container = docker.image(&image.repository, &image.manifest);
                (binds, Some(container))
            }
            None => {
                sandbox.root = Some(self.image_root(release, image)?);
                (image_binds(volumes), None)
            }
        };
        Ok(InstanceSpec {
            id: instance.to_string(),
            app: release.app.clone(),
            command: command.to_string(),
            bin_dir: workdir.clone(),
            workdir,
            env,
            binds,
            sandbox: Some(sandbox),
            stop_signal,
            terminal: None,
            container,
        })
    }

    /// The image's layers stacked on a root of its own (again after a
    /// reboot), for berth's sandbox.
    fn image_root(
        &self,
        release: &ReleaseRow,
        image: &PinnedImage,
    ) -> Result<std::path::PathBuf, StartError> {
        let store = berth_image::ImageStore::new(
            &self.resources.images_dir(),
            berth_image::UnpackLimits::default(),
        );
        berth_registry::Digest::parse(&image.manifest)
            .map_err(|err| err.to_string())
            .and_then(|digest| store.mounted_root(&digest).map_err(|err| err.to_string()))
            .map_err(|err| {
                StartError::lasting(
                    StartSide::Berth,
                    format!(
                        "the root of image {} ({}) of v{}: {err}; deploy the image again",
                        image.reference, image.manifest, release.version
                    ),
                )
            })
    }
}

/// An image instance's binds: the host's resolver and hosts files first
/// (an image may have none; the network's own, when it has them, are
/// mounted over these), then the app's volumes.
fn image_binds(volumes: Vec<berth_runtime::BindMount>) -> Vec<berth_runtime::BindMount> {
    let mut binds: Vec<berth_runtime::BindMount> = ["/etc/resolv.conf", "/etc/hosts"]
        .into_iter()
        .filter(|file| Path::new(file).is_file())
        .map(|file| berth_runtime::BindMount {
            source: file.into(),
            destination: file.into(),
            writable: false,
        })
        .collect();
    binds.extend(volumes);
    binds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_quote_only_what_needs_it() {
        let pinned = |argv: &[&str]| PinnedImage {
            reference: String::new(),
            repository: String::new(),
            manifest: String::new(),
            config: ImageConfig {
                entrypoint: argv.iter().map(|word| word.to_string()).collect(),
                ..ImageConfig::default()
            },
        };
        assert_eq!(
            pinned(&["/hello", "--port=8080"]).command(),
            "/hello --port=8080"
        );
        assert_eq!(
            pinned(&["/bin/sh", "-c", "echo it's"]).command(),
            r#"["/bin/sh","-c","echo it's"]"#
        );
    }
}
