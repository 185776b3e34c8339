//! Roots made from images. Each layer is unpacked once, alone, into
//! `DIR/layers/CHAIN/tree`, named by its chain id — the digest of its own
//! digest and every layer's below it, as containerd names them, since a
//! layer's hard links may name files of the layers below: shared by every
//! image with the same layers up to it, whiteouts written as overlayfs's.
//! An image is `DIR/HEX/` (by manifest digest) with its `config.json`,
//! `layers.json` (its chain ids, bottom first), a `top/` holding the
//! folders the
//! sandbox mounts over, and `rootfs/`, where the layers and `top/` are
//! stacked as a read-only overlay — mounted when the image is prepared and
//! again when the server finds it unmounted (after a reboot). Each is made
//! beside under a temporary name and renamed into place whole. An image
//! made by an older berth (one `rootfs/` folder, no `layers.json`) is used
//! as it is.

use std::path::{Path, PathBuf};

use berth_registry::{Digest, Registry, RepoName};
use serde_json::Value;

use crate::config::pick_from_index;
use crate::unpack::{LayerStats, UnpackLimits, unpack_layer_alone};
use crate::{ImageConfig, ImageError, Platform, Result, io_error, overlay};

/// A root being made this long ago was left by a crash.
const HALF_MADE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// The folder of unpacked layers, beside the images.
const LAYERS: &str = "layers";

/// An image's list of its layers' digests, bottom first.
const LAYERS_FILE: &str = "layers.json";

/// Held while an image's layers are stacked or unstacked, so two starts
/// never mount twice and the collector never removes a root being
/// mounted.
static MOUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Shared while an image is prepared, exclusive while the collector runs:
/// a layer unpacked for an image whose `layers.json` is not written yet
/// is never taken as unused.
static GATE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// The most layers an image may have (docker's own limit is 127).
const MAX_LAYERS: usize = 128;

/// The chain ids of `layers` (bottom first): each the digest of the one
/// below's and its own, the first its own digest's.
fn chain_ids(layers: &[Digest]) -> Vec<Digest> {
    let mut chain: Vec<Digest> = Vec::with_capacity(layers.len());
    for layer in layers {
        let id = match chain.last() {
            None => layer.clone(),
            Some(below) => Digest::of(format!("{below} {layer}").as_bytes()),
        };
        chain.push(id);
    }
    chain
}

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
        // Held to the end, the fast path included: the collector never
        // removes a root or layer this deploy is about to run.
        let _preparing = GATE.read().unwrap_or_else(|poisoned| poisoned.into_inner());
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
                root: self.mounted_root(&manifest)?,
                manifest,
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
        let config_bytes = crate::config::read_config(registry, repo, &config_digest)?;
        let config = ImageConfig::parse(&config_bytes)?;
        config.check_platform(platform)?;
        let layers: Vec<Digest> = body
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| ImageError::Invalid("manifest has no layers".into()))?
            .iter()
            .map(digest_of)
            .collect::<Result<_>>()?;
        if layers.len() > MAX_LAYERS {
            return Err(ImageError::TooLarge(format!(
                "{} layers; at most {MAX_LAYERS}",
                layers.len()
            )));
        }
        let chain = chain_ids(&layers);
        std::fs::create_dir_all(self.layers_dir())
            .map_err(io_error(format!("cannot make {}", self.dir.display())))?;
        // Layers a failed deploy unpacked stay for the collector: another
        // deploy may be using them already.
        let mut stats = LayerStats::default();
        for (index, layer) in layers.iter().enumerate() {
            self.unpack_once(registry, repo, layer, &chain[..=index], &mut stats)?;
        }
        let making = self.dir.join(format!(
            ".making-{}-{:08x}",
            manifest.hex(),
            rand::random::<u32>()
        ));
        let made = make_home(&making, &chain, &config);
        // Made meanwhile by another deploy of the same image: that one.
        let outcome = made.and_then(|()| move_into_place(&making, &home, || config_file.exists()));
        if making.exists() {
            let _ = std::fs::remove_dir_all(&making);
        }
        outcome?;
        Ok(PreparedImage {
            root: self.mounted_root(&manifest)?,
            manifest,
            config,
        })
    }

    fn layers_dir(&self) -> PathBuf {
        self.dir.join(LAYERS)
    }

    fn layer_tree(&self, layer: &Digest) -> PathBuf {
        self.layers_dir().join(layer.hex()).join("tree")
    }

    /// Unpacks `layer` into the folder of its chain id (the last of
    /// `chain`, the chain ids up to it) unless it is there already (then
    /// marks it used now); whether it was unpacked now.
    fn unpack_once(
        &self,
        registry: &Registry,
        repo: &RepoName,
        layer: &Digest,
        chain: &[Digest],
        stats: &mut LayerStats,
    ) -> Result<bool> {
        let (id, below) = chain.split_last().expect("a layer's chain holds it");
        let home = self.layers_dir().join(id.hex());
        if home.join("tree").is_dir() {
            if let Ok(dir) = std::fs::File::open(&home) {
                let _ = dir.set_modified(std::time::SystemTime::now());
            }
            return Ok(false);
        }
        let making = self.layers_dir().join(format!(
            ".making-{}-{:08x}",
            id.hex(),
            rand::random::<u32>()
        ));
        let tree = making.join("tree");
        let lowers: Vec<PathBuf> = below
            .iter()
            .rev()
            .map(|digest| self.layer_tree(digest))
            .collect();
        let made = (|| {
            std::fs::create_dir_all(&tree)
                .map_err(io_error(format!("cannot make {}", tree.display())))?;
            set_mode(&tree, 0o755)?;
            let (path, _) = registry.blob(repo, layer)?;
            let file = std::fs::File::open(&path)
                .map_err(io_error(format!("cannot read {}", path.display())))?;
            unpack_layer_alone(file, &tree, &lowers, self.limits, stats)?;
            // Unpacked meanwhile by another deploy with this layer: that one.
            move_into_place(&making, &home, || home.join("tree").is_dir())
        })();
        if making.exists() {
            let _ = std::fs::remove_dir_all(&making);
        }
        made
    }

    /// The root of the image with manifest `manifest`, its layers stacked
    /// on it if they are not (an image made by an older berth is one
    /// folder already).
    pub fn mounted_root(&self, manifest: &Digest) -> Result<PathBuf> {
        let home = self.dir.join(manifest.hex());
        let root = home.join("rootfs");
        let Ok(listed) = std::fs::read(home.join(LAYERS_FILE)) else {
            return match root.is_dir() {
                true => Ok(root),
                false => Err(ImageError::Invalid(format!(
                    "the root of {manifest} is not in the data dir"
                ))),
            };
        };
        let layers: Vec<Digest> = serde_json::from_slice::<Vec<String>>(&listed)
            .map_err(|err| ImageError::Invalid(format!("{LAYERS_FILE} is damaged: {err}")))?
            .iter()
            .map(|digest| Digest::parse(digest))
            .collect::<std::result::Result<_, _>>()?;
        let _one_at_a_time = MOUNTING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if overlay::is_mounted(&root) {
            return Ok(root);
        }
        let mut lowers = vec![home.join("top")];
        for layer in layers.iter().rev() {
            let tree = self.layer_tree(layer);
            if !tree.is_dir() {
                return Err(ImageError::Invalid(format!(
                    "layer {layer} of {manifest} is not in the data dir"
                )));
            }
            lowers.push(tree);
        }
        overlay::mount_layers(&root, &lowers).map_err(io_error(format!(
            "cannot stack the layers of {manifest} on {}",
            root.display()
        )))?;
        Ok(root)
    }

    /// Unmounts every image's stacked root (when no instance runs: the
    /// server stopping); the next start mounts what it needs again.
    pub fn unmount_all(&self) {
        let _unmounting = MOUNTING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let root = entry.path().join("rootfs");
            if overlay::is_mounted(&root) {
                let _ = overlay::unmount(&root);
            }
        }
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
        let _collecting = GATE
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(err) => return Err(io_error(format!("cannot read {}", self.dir.display()))(err)),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let age = age_of(&entry, now);
            let kept =
                Digest::parse(&format!("sha256:{name}")).is_ok_and(|digest| keep.contains(&digest));
            if name == LAYERS {
                continue;
            }
            let half_made = name.starts_with(".making-");
            let stale = if half_made {
                age >= HALF_MADE_AFTER
            } else {
                !kept && age >= grace
            };
            if stale {
                // Its layers' overlay first: nothing is removed through it
                // (and no start mounts it again meanwhile).
                let _unmounting = MOUNTING
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let root = entry.path().join("rootfs");
                overlay::unmount(&root)
                    .map_err(io_error(format!("cannot unmount {}", root.display())))?;
                std::fs::remove_dir_all(entry.path()).map_err(io_error(format!(
                    "cannot remove {}",
                    entry.path().display()
                )))?;
                removed += 1;
            }
        }
        removed += self.remove_unused_layers(now, grace)?;
        Ok(removed)
    }

    /// Removes the layers no image left in the store has, not used within
    /// `grace`, and what a crash left half-unpacked.
    fn remove_unused_layers(
        &self,
        now: std::time::SystemTime,
        grace: std::time::Duration,
    ) -> Result<usize> {
        let mut wanted = std::collections::HashSet::new();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if let Ok(listed) = std::fs::read(entry.path().join(LAYERS_FILE)) {
                let layers: Vec<String> = serde_json::from_slice(&listed).map_err(|err| {
                    ImageError::Invalid(format!(
                        "{} is damaged: {err}",
                        entry.path().join(LAYERS_FILE).display()
                    ))
                })?;
                wanted.extend(layers);
            }
        }
        let mut removed = 0;
        for entry in std::fs::read_dir(self.layers_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let age = age_of(&entry, now);
            let stale = if name.starts_with(".making-") {
                age >= HALF_MADE_AFTER
            } else {
                !wanted.contains(&format!("sha256:{name}")) && age >= grace
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

/// How long before `now` `entry` was last made or used (its mtime); none
/// when that cannot be read.
fn age_of(entry: &std::fs::DirEntry, now: std::time::SystemTime) -> std::time::Duration {
    entry
        .metadata()
        .and_then(|meta| meta.modified())
        .map(|at| now.duration_since(at).unwrap_or_default())
        .unwrap_or_default()
}

/// Renames `making` to `home`; whether it was moved (`false` when `home`
/// was made meanwhile, as `made_meanwhile` tells).
fn move_into_place(making: &Path, home: &Path, made_meanwhile: impl Fn() -> bool) -> Result<bool> {
    match std::fs::rename(making, home) {
        Ok(()) => Ok(true),
        Err(_) if made_meanwhile() => Ok(false),
        Err(err) => Err(io_error(format!(
            "cannot move {} into place",
            home.display()
        ))(err)),
    }
}

/// Writes an image's folder at `home`: its config, its layers' chain ids
/// (bottom first), the `top/` layer with the folders the sandbox mounts over, and
/// the empty `rootfs/` the layers are stacked on.
fn make_home(home: &Path, layers: &[Digest], config: &ImageConfig) -> Result<()> {
    let top = home.join("top");
    for dir in [home.join("rootfs"), top.clone()] {
        std::fs::create_dir_all(&dir)
            .map_err(io_error(format!("cannot make {}", dir.display())))?;
        // The instance's `/`: open to its user whatever the server's umask.
        set_mode(&dir, 0o755)?;
    }
    for dir in MOUNT_POINTS {
        // Real folders, whatever a layer put there: the sandbox mounts
        // over them.
        let path = top.join(dir);
        std::fs::create_dir(&path).map_err(io_error(format!("cannot make {}", path.display())))?;
        set_mode(&path, if dir == "tmp" { 0o1777 } else { 0o755 })?;
    }
    let listed: Vec<&str> = layers.iter().map(Digest::as_str).collect();
    std::fs::write(
        home.join(LAYERS_FILE),
        serde_json::to_vec(&listed).expect("digests serialize"),
    )
    .map_err(io_error("cannot write the image's layers"))?;
    std::fs::write(
        home.join("config.json"),
        serde_json::to_vec(config).expect("a config serializes"),
    )
    .map_err(io_error("cannot write the image's config"))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_error(
        format!("cannot set the mode of {}", path.display()),
    ))
}
