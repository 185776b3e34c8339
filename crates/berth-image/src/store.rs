//! Roots made from images, content-addressed by manifest digest:
//! `DIR/HEX/rootfs` and `DIR/HEX/config.json`, made beside under a
//! temporary name and renamed into place whole.

use std::path::{Path, PathBuf};

use berth_registry::{Digest, Registry, RepoName};
use serde_json::Value;

use crate::config::pick_from_index;
use crate::unpack::{LayerStats, UnpackLimits, unpack_layer};
use crate::{ImageConfig, ImageError, Platform, Result, io_error};

/// A root being made this long ago was left by a crash.
const HALF_MADE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Directories every root has, for the sandbox to mount over.
const MOUNT_POINTS: [&str; 5] = ["proc", "dev", "tmp", "sys", "etc"];

/// Where unpacked images live.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
    limits: UnpackLimits,
}

/// An image ready to run.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// The manifest it was made from (for an index, the one picked).
    pub manifest: Digest,
    /// Its root file system.
    pub root: PathBuf,
    /// What it runs with.
    pub config: ImageConfig,
}

impl ImageStore {
    /// A store under `dir`.
    pub fn new(dir: &Path, limits: UnpackLimits) -> ImageStore {
        ImageStore {
            dir: dir.to_path_buf(),
            limits,
        }
    }

    /// The manifest `reference` names in `repo`, for `platform` when it
    /// names an index: its digest and bytes.
    pub fn resolve(
        registry: &Registry,
        repo: &RepoName,
        reference: &str,
        platform: &Platform,
    ) -> Result<(Digest, Vec<u8>)> {
        let found = registry.manifest(repo, reference)?;
        if found.media_type.contains("index") || found.media_type.contains("manifest.list") {
            let picked = pick_from_index(&found.bytes, platform)?;
            let child = registry.manifest(repo, &picked)?;
            return Ok((child.digest, child.bytes));
        }
        Ok((found.digest, found.bytes))
    }

    /// The root of image `reference` of `repo` for `platform`, unpacked on
    /// first use.
    pub fn prepare(
        &self,
        registry: &Registry,
        repo: &RepoName,
        reference: &str,
        platform: &Platform,
    ) -> Result<PreparedImage> {
        let (manifest, bytes) = Self::resolve(registry, repo, reference, platform)?;
        let home = self.dir.join(manifest.hex());
        let config_file = home.join("config.json");
        if let Ok(stored) = std::fs::read(&config_file)
            && let Ok(config) = serde_json::from_slice::<ImageConfig>(&stored)
        {
            // In use again: the collector leaves a root used this recently.
            if let Ok(dir) = std::fs::File::open(&home) {
                let _ = dir.set_modified(std::time::SystemTime::now());
            }
            return Ok(PreparedImage {
                manifest,
                root: home.join("rootfs"),
                config,
            });
        }
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|err| ImageError::Invalid(format!("manifest is not JSON: {err}")))?;
        let digest_of = |descriptor: &Value| -> Result<Digest> {
            let text = descriptor
                .get("digest")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ImageError::Invalid("manifest has a descriptor without a digest".into())
                })?;
            Ok(Digest::parse(text)?)
        };
        let config_digest = digest_of(
            body.get("config")
                .ok_or_else(|| ImageError::Invalid("manifest has no config".into()))?,
        )?;
        let (config_path, _) = registry.blob(repo, &config_digest)?;
        let config_bytes = std::fs::read(&config_path)
            .map_err(io_error(format!("cannot read {}", config_path.display())))?;
        let config = ImageConfig::parse(&config_bytes)?;
        config.check_platform(platform)?;
        let layers: Vec<Digest> = body
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| ImageError::Invalid("manifest has no layers".into()))?
            .iter()
            .map(digest_of)
            .collect::<Result<_>>()?;
        std::fs::create_dir_all(&self.dir)
            .map_err(io_error(format!("cannot make {}", self.dir.display())))?;
        let making = self.dir.join(format!(
            ".making-{}-{:08x}",
            manifest.hex(),
            rand::random::<u32>()
        ));
        let made = self.unpack_into(registry, repo, &layers, &config, &making);
        let outcome = made.and_then(|()| match std::fs::rename(&making, &home) {
            Ok(()) => Ok(()),
            // Made meanwhile by another deploy of the same image.
            Err(_) if config_file.exists() => Ok(()),
            Err(err) => Err(io_error(format!(
                "cannot move {} into place",
                home.display()
            ))(err)),
        });
        if making.exists() {
            let _ = std::fs::remove_dir_all(&making);
        }
        outcome?;
        Ok(PreparedImage {
            manifest,
            root: home.join("rootfs"),
            config,
        })
    }

    fn unpack_into(
        &self,
        registry: &Registry,
        repo: &RepoName,
        layers: &[Digest],
        config: &ImageConfig,
        making: &Path,
    ) -> Result<()> {
        let root = making.join("rootfs");
        std::fs::create_dir_all(&root)
            .map_err(io_error(format!("cannot make {}", root.display())))?;
        // The instance's `/`: open to its user whatever the server's umask.
        set_mode(&root, 0o755)?;
        let mut stats = LayerStats::default();
        for layer in layers {
            let (path, _) = registry.blob(repo, layer)?;
            let file = std::fs::File::open(&path)
                .map_err(io_error(format!("cannot read {}", path.display())))?;
            unpack_layer(file, &root, self.limits, &mut stats)?;
        }
        for dir in MOUNT_POINTS {
            // Real folders, whatever a layer put there: the sandbox mounts
            // over them.
            let path = root.join(dir);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => continue,
                Ok(_) => {
                    std::fs::remove_file(&path)
                        .map_err(io_error(format!("cannot remove {}", path.display())))?;
                }
                Err(_) => {}
            }
            std::fs::create_dir(&path)
                .map_err(io_error(format!("cannot make {}", path.display())))?;
            set_mode(&path, 0o755)?;
        }
        std::fs::write(
            making.join("config.json"),
            serde_json::to_vec(config).expect("a config serializes"),
        )
        .map_err(io_error("cannot write the image's config"))
    }

    /// Removes the roots of images not in `keep` (manifest digests) that
    /// were not made or used within `grace` (a deploy between making a
    /// root and its release keeps it), and what a crash left half-made.
    pub fn remove_unused(
        &self,
        keep: &std::collections::HashSet<Digest>,
        now: std::time::SystemTime,
        grace: std::time::Duration,
    ) -> Result<usize> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(err) => return Err(io_error(format!("cannot read {}", self.dir.display()))(err)),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let age = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .map(|at| now.duration_since(at).unwrap_or_default())
                .unwrap_or_default();
            let kept =
                Digest::parse(&format!("sha256:{name}")).is_ok_and(|digest| keep.contains(&digest));
            let half_made = name.starts_with(".making-");
            let stale = if half_made {
                age >= HALF_MADE_AFTER
            } else {
                !kept && age >= grace
            };
            if stale {
                std::fs::remove_dir_all(entry.path()).map_err(io_error(format!(
                    "cannot remove {}",
                    entry.path().display()
                )))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_error(
        format!("cannot set the mode of {}", path.display()),
    ))
}
