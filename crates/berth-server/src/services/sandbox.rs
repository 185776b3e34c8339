//! The sandbox policy of an app's processes: its user, its limits, its
//! volumes' bind mounts.

use std::path::{Path, PathBuf};

use berth_runtime::BindMount;
use berth_spec::AppSpec;

use super::Resources;
use super::volumes::{own_tree, set_mode};

impl Resources {
    /// The bind mounts of a process of `app` (applied when berth runs as root).
    pub fn binds_for(&self, app: &str, spec: &AppSpec, process: &str) -> Vec<BindMount> {
        spec.mounts
            .iter()
            .filter(|mount| mount.applies_to(process))
            .map(|mount| BindMount {
                source: self.volume_dir(app, &mount.source),
                destination: PathBuf::from(&mount.destination),
                writable: true,
            })
            .collect()
    }

    /// The mounts a sandboxed process of a release built with `[build]
    /// packages` needs besides its volumes: the build root's `/usr`, so
    /// the libraries the build linked are there (see [`super::package_roots`]).
    pub fn system_binds(&self, spec: &AppSpec) -> Result<Vec<BindMount>, String> {
        let usr = self.package_roots.existing(&spec.build.packages)?;
        Ok(usr
            .into_iter()
            .map(|usr| BindMount {
                source: usr,
                destination: PathBuf::from("/usr"),
                writable: false,
            })
            .collect())
    }

    /// The user id of `app`'s processes (and builds), allocated from the
    /// host-wide registry the first time.
    pub fn app_uid(&self, app: &str) -> Result<u32, String> {
        let owner = format!("{} {app}", self.data_dir.display());
        self.store
            .app_uid(app, || self.uids.allocate(&owner))
            .map_err(|err| {
                let cause = std::error::Error::source(&err)
                    .map(|source| format!(": {source}"))
                    .unwrap_or_default();
                format!("{err}{cause}")
            })
    }

    /// The sandbox of a process of `app` when berth runs as root: the app's
    /// own user (its slug and volumes become that user's, mode 0700, so no
    /// other app can read them), its `[[vm]]` size as cgroup limits, a
    /// private `/tmp`. `None` when not root.
    pub fn sandbox_for(
        &self,
        app: &str,
        spec: &AppSpec,
        process: &str,
        slug_dir: &Path,
    ) -> Result<Option<berth_runtime::Sandbox>, String> {
        if !self.isolated {
            return Ok(None);
        }
        let uid = self.app_uid(app)?;
        let owned = (slug_dir.to_path_buf(), uid);
        let owned_slugs = || {
            self.owned_slugs
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        };
        if !owned_slugs().contains(&owned) {
            // Walked without the lock: other apps' starts need not wait.
            own_tree(slug_dir, uid).map_err(|err| {
                format!(
                    "cannot give the slug {} to the app's user: {err}",
                    slug_dir.display()
                )
            })?;
            owned_slugs().insert(owned);
        }
        // The app's volumes dir stays root's (0711), so the app cannot swap
        // a volume for a link to another app's; each volume is the app's.
        let volumes = self.volumes_dir.join(app);
        for mount in spec.mounts.iter().filter(|mount| mount.applies_to(process)) {
            let volume = volumes.join(&mount.source);
            std::fs::create_dir_all(&volume).map_err(|err| err.to_string())?;
            if let Some(size_mib) = mount.size_mib {
                // Mounted again after a reboot; a rollback to a smaller
                // size keeps the volume as it is.
                super::sized_volumes::ensure_mounted(&volume, size_mib)?;
            }
            std::os::unix::fs::chown(&volumes, Some(0), Some(0)).map_err(|err| err.to_string())?;
            set_mode(&volumes, 0o711).map_err(|err| err.to_string())?;
            own_tree(&volume, uid).map_err(|err| {
                format!(
                    "cannot give the volume {} to the app's user: {err}",
                    volume.display()
                )
            })?;
        }
        let vm = spec.vm_for(process);
        Ok(Some(berth_runtime::Sandbox {
            uid,
            gid: uid,
            limits: Some(berth_runtime::cgroup::Limits {
                memory_bytes: u64::from(vm.memory_mb) * 1024 * 1024,
                cpus: vm.cpus,
                pids: vm.pids.map_or_else(
                    || berth_runtime::cgroup::Limits::default_pids(u64::from(vm.memory_mb)),
                    u64::from,
                ),
            }),
            private_tmp: true,
            network: None,
            root: None,
        }))
    }
}
