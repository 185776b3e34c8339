//! Volumes: directories under `<data>/volumes/<app>/<name>` (with a size,
//! a file system of their own mounted there, see [`super::sized_volumes`]),
//! owned by the app's user, and what an app leaves behind when destroyed.

use berth_store::EventKind;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_proto::VolumeInfo;
use berth_spec::AppSpec;

use super::{Resources, ResourcesError};
use berth_store::ResourceKind;

impl Resources {
    /// Makes each volume `spec` mounts exist (so it is there, and listed,
    /// before the first instance starts), with its size when it has one.
    /// Returns what the deploy says about them.
    pub fn ensure_volumes(&self, app: &str, spec: &AppSpec) -> Result<Vec<String>, ResourcesError> {
        let mut said = Vec::new();
        for mount in &spec.mounts {
            let dir = self.volume_dir(app, &mount.source);
            match mount.size_mib {
                Some(size_mib) if self.isolated => {
                    said.extend(
                        super::sized_volumes::prepare(&dir, size_mib)
                            .map_err(ResourcesError::Invalid)?,
                    );
                    continue;
                }
                Some(_) => said.push(format!(
                    "volume {}: sizes are enforced only as root; it is a directory on the data dir's disk",
                    mount.source
                )),
                None => {}
            }
            if !dir.is_dir() {
                std::fs::create_dir_all(&dir).map_err(|err| {
                    ResourcesError::Invalid(format!(
                        "cannot create volume {}: {err}",
                        dir.display()
                    ))
                })?;
                said.push(format!("made volume {}", mount.source));
            }
        }
        Ok(said)
    }

    pub(crate) fn volume_dir(&self, app: &str, name: &str) -> PathBuf {
        self.volumes_dir.join(app).join(name)
    }

    /// `app`'s volumes: each directory under its volumes dir, with where the
    /// active release mounts it.
    pub fn volumes(&self, app: &str) -> Result<Vec<VolumeInfo>, ResourcesError> {
        self.store.app(app)?;
        let mounted = self.mounted(app);
        let mut volumes: Vec<VolumeInfo> = std::fs::read_dir(self.volumes_dir.join(app))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| entry.path().is_dir())
            .filter_map(|entry| {
                let name = entry.file_name().to_str()?.to_string();
                // Volume names never start with a dot: berth's own files
                // beside them do (images, folders kept from before a size).
                if name.starts_with('.') {
                    return None;
                }
                let sized = super::sized_volumes::is_mount_point(&entry.path());
                Some(VolumeInfo {
                    destination: mounted.get(&name).cloned(),
                    path: entry.path().display().to_string(),
                    size_bytes: tree_size(&entry.path()),
                    limit_bytes: sized
                        .then(|| std::fs::metadata(super::sized_volumes::image_of(&entry.path())))
                        .and_then(Result::ok)
                        .map(|meta| meta.len()),
                    name,
                })
            })
            .collect();
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    pub(crate) fn mounted(&self, app: &str) -> BTreeMap<String, String> {
        let Ok(Some(release)) = self.store.active_release(app) else {
            return BTreeMap::new();
        };
        let Ok(spec) = crate::stored_spec::spec_of(&release) else {
            return BTreeMap::new();
        };
        spec.mounts
            .into_iter()
            .map(|mount| (mount.source, mount.destination))
            .collect()
    }

    /// Deletes a volume and its files. A volume the active release mounts
    /// is refused: deploy without the mount first.
    pub fn destroy_volume(&self, app: &str, name: &str) -> Result<(), ResourcesError> {
        self.store.app(app)?;
        if let Some(destination) = self.mounted(app).get(name) {
            return Err(ResourcesError::Invalid(format!(
                "volume `{name}` is mounted at {destination} by the active release; deploy without that mount first"
            )));
        }
        let dir = self.volume_dir(app, name);
        if !dir.is_dir() || name.contains('/') || name.starts_with('.') {
            return Err(ResourcesError::NotFound(format!(
                "app `{app}` has no volume `{name}`"
            )));
        }
        super::sized_volumes::unmount(&dir).map_err(ResourcesError::Invalid)?;
        std::fs::remove_dir_all(&dir).map_err(|err| {
            ResourcesError::Invalid(format!("cannot remove {}: {err}", dir.display()))
        })?;
        let image = super::sized_volumes::image_of(&dir);
        if image.exists() {
            std::fs::remove_file(&image).map_err(|err| {
                ResourcesError::Invalid(format!("cannot remove {}: {err}", image.display()))
            })?;
        }
        let _ = self.store.record_event(
            app,
            EventKind::VolumeDestroyed,
            &format!("volume {name} destroyed"),
        );
        Ok(())
    }

    /// Drops everything `app` has: its database and role, its Redis and
    /// data, its volumes. Backups stay, moved to
    /// `<data>/backups/.destroyed/<app>-<unix time>`: a later app of the
    /// same name starts without them (and cannot restore them).
    pub async fn destroy_app(&self, app: &str) -> Result<(), ResourcesError> {
        if self.store.resource(app, &ResourceKind::Postgres)?.is_some() {
            self.postgres.drop_database(app).await?;
            self.store.delete_resource(app, &ResourceKind::Postgres)?;
        }
        if self.store.resource(app, &ResourceKind::Redis)?.is_some() {
            self.redis.destroy(app).await?;
            self.store.delete_resource(app, &ResourceKind::Redis)?;
        }
        let volumes = self.volumes_dir.join(app);
        if volumes.exists() {
            for entry in std::fs::read_dir(&volumes).into_iter().flatten().flatten() {
                super::sized_volumes::unmount(&entry.path()).map_err(ResourcesError::Invalid)?;
            }
            std::fs::remove_dir_all(&volumes).map_err(|err| {
                ResourcesError::Invalid(format!("cannot remove {}: {err}", volumes.display()))
            })?;
        }
        self.logs.set_masks(app, Vec::<String>::new());
        // Its user id is never handed out again, and what it left in the
        // host's shared scratch directory goes.
        if let Ok(Some(uid)) = self.store.uid_of(app) {
            let removed = berth_runtime::users::remove_files_of(uid, &[Path::new("/var/tmp")]);
            if removed > 0 {
                tracing::info!(%app, removed, "removed what the app left in /var/tmp");
            }
        }
        // Last: a destroy that failed above leaves the app with its backups.
        let backups = self.backups_of(app);
        if backups.exists() {
            let kept = self.backups_of(".destroyed");
            let since_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let name = format!(
                "{app}-{}-{:09}",
                since_epoch.as_secs(),
                since_epoch.subsec_nanos()
            );
            std::fs::create_dir_all(&kept)
                .and_then(|()| std::fs::rename(&backups, kept.join(name)))
                .map_err(|err| {
                    ResourcesError::Invalid(format!("cannot put away {}: {err}", backups.display()))
                })?;
        }
        Ok(())
    }
}

pub(super) fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Makes `root` and everything under it owned by `uid` (group `uid`), and
/// `root` mode 0700. Skipped when `root` and its direct children are
/// already `uid`'s, so an instance start costs a few `stat`s.
pub(super) fn own_tree(root: &Path, uid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let owned = |path: &Path| std::fs::symlink_metadata(path).is_ok_and(|meta| meta.uid() == uid);
    let children_owned = std::fs::read_dir(root)?
        .flatten()
        .all(|entry| owned(&entry.path()));
    if owned(root) && children_owned {
        return Ok(());
    }
    own_whole_tree(root, uid)
}

/// Makes `root` and everything under it owned by `uid` (group `uid`) —
/// links themselves, never what they point at — and `root` mode 0700,
/// walking all of it.
pub(crate) fn own_whole_tree(root: &Path, uid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    fn walk(path: &Path, uid: u32) -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(path)?;
        if meta.uid() != uid || meta.gid() != uid {
            std::os::unix::fs::lchown(path, Some(uid), Some(uid))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(path)? {
                walk(&entry?.path(), uid)?;
            }
        }
        Ok(())
    }
    walk(root, uid)?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
}

pub(super) fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => tree_size(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map(|meta| meta.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}
