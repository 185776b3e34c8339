//! The one module allowed `unsafe`: system calls made around a child
//! process (parent-death signal, signalling a process group, private
//! mount and IPC namespaces with bind mounts and `/tmp`, becoming the app's
//! own user).
//!
//! Each block below calls a libc function with plain integer arguments or
//! with C strings made before the fork; none touches memory the child
//! shares with other threads.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;

mod encoding;
mod enter;
mod pid1;
mod root;
mod seccomp;
mod signals;
mod sys;

pub use pid1::run_instance_init_if_asked;
pub(crate) use pid1::{enter_standby, keep_only};
pub use signals::with_exact_sleeps;
pub(crate) use signals::{kill_orphans, signal_group, signal_process};
pub(crate) use sys::{die_with_parent, die_with_parent_by, free_disk_bytes, is_root, set_umask};

use crate::BindMount;
use pid1::*;

/// Everything a child does between fork and exec to enter its sandbox,
/// prepared in the parent: a pre-exec hook must not allocate.
pub(crate) struct PreparedSandbox {
    /// Directories to make in the fresh `/tmp` (parents first).
    tmp_dirs: Vec<CString>,
    /// (source, destination, writable) bind mounts, in order. Sources
    /// under a covered `/tmp` are reached through `old_tmp`.
    binds: Vec<(CString, CString, bool)>,
    private_tmp: bool,
    user: Option<(u32, u32)>,
    /// A descriptor number reserved in the parent; the child puts its own
    /// handle on the host's `/tmp` there, so paths under it stay reachable
    /// once a fresh `/tmp` covers it. (A handle opened in the parent would
    /// belong to the parent's mount namespace, which a bind mount refuses.)
    old_tmp_at: Option<i32>,
    /// What holds that number in the parent.
    _old_tmp_reserve: Option<std::os::fd::OwnedFd>,
    /// The network namespace to join: a descriptor, kept open by the handle
    /// (in the server) or received with the request (in the spawner).
    network_fd: Option<i32>,
    _network: Option<std::sync::Arc<crate::net::netns::NetNs>>,
    /// A pid namespace of its own, with a small init as its pid 1.
    pid_namespace: bool,
    /// Whether the init and waiting process re-exec this binary.
    reexec: bool,
    /// Where the process starts, entered last: it may lie under a bind
    /// mount, and the user's right to enter it is what counts.
    workdir: CString,
    /// Host folders covered with an empty tmpfs (see [`HIDDEN`]).
    hidden: Vec<CString>,
    /// A root of its own (see [`root`]), and the folders and files to
    /// make inside it for the mounts and the working directory.
    root: Option<root::RootPlan>,
    mount_points: Vec<root::MountPoint>,
}

/// Host folders a sandboxed app has no business reading, hidden under an
/// empty, read-only tmpfs — people's homes, logs, mail and spools, backups,
/// mounted media, the boot files — unless its working directory or a
/// mount of its own lies inside one.
const HIDDEN: [&str; 10] = [
    "/home",
    "/root",
    "/var/log",
    "/var/mail",
    "/var/spool",
    "/var/backups",
    "/mnt",
    "/media",
    "/srv",
    "/boot",
];

fn c_path(path: &std::path::Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other(format!("{} holds a NUL byte", path.display())))
}

impl PreparedSandbox {
    /// Prepares `binds` (creating each source and destination if missing),
    /// a private `/tmp` that still shows `workdir` (and bind sources) when
    /// they live under the host's `/tmp`, and the user to become.
    pub(crate) fn prepare(
        workdir: &std::path::Path,
        binds: &[BindMount],
        sandbox: Option<&crate::Sandbox>,
    ) -> io::Result<PreparedSandbox> {
        use std::os::fd::{FromRawFd, OwnedFd};
        use std::path::{Path, PathBuf};
        let private_tmp = sandbox.is_some_and(|sandbox| sandbox.private_tmp);
        if let Some(root) = sandbox.and_then(|sandbox| sandbox.root.as_deref()) {
            return Self::prepare_in_root(root, workdir, binds, sandbox);
        }
        let tmp = Path::new("/tmp");
        // A host folder under /tmp to show at the same path; not when the
        // working directory is inside a bind mount (a build's folder).
        let workdir_from_host = workdir.starts_with(tmp)
            && !binds
                .iter()
                .any(|bind| workdir.starts_with(&bind.destination));
        let mut old_tmp = None;
        let mut old_tmp_fd = -1;
        if private_tmp
            && (workdir_from_host || binds.iter().any(|bind| bind.source.starts_with(tmp)))
        {
            // SAFETY: open(2) with a valid C string; the result is owned below.
            let fd = unsafe {
                libc::open(
                    c"/tmp".as_ptr(),
                    libc::O_PATH | libc::O_CLOEXEC | libc::O_DIRECTORY,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is a fresh descriptor nobody else owns.
            old_tmp = Some(unsafe { OwnedFd::from_raw_fd(fd) });
            old_tmp_fd = fd;
        }
        // A path under the covered /tmp, as the child can still reach it.
        let reachable = |path: &Path| -> PathBuf {
            match path.strip_prefix(tmp) {
                Ok(rest) if old_tmp_fd >= 0 => {
                    PathBuf::from(format!("/proc/self/fd/{old_tmp_fd}")).join(rest)
                }
                _ => path.to_path_buf(),
            }
        };
        let mut tmp_dirs: Vec<PathBuf> = Vec::new();
        let mut need_in_tmp = |path: &Path| {
            if private_tmp && path.starts_with(tmp) {
                for ancestor in path.ancestors().collect::<Vec<_>>().into_iter().rev() {
                    if ancestor.starts_with(tmp)
                        && ancestor != tmp
                        && !tmp_dirs.iter().any(|dir| dir == ancestor)
                    {
                        tmp_dirs.push(ancestor.to_path_buf());
                    }
                }
            }
        };
        let mut pairs = Vec::with_capacity(binds.len() + 1);
        if old_tmp_fd >= 0 && workdir_from_host {
            need_in_tmp(workdir);
            pairs.push((c_path(&reachable(workdir))?, c_path(workdir)?, false));
        }
        for bind in binds {
            // A file is mounted over a file that must exist; a directory
            // (a volume) is made on both sides if missing.
            if !bind.source.is_file() {
                std::fs::create_dir_all(&bind.source)?;
                std::fs::create_dir_all(&bind.destination)?;
            }
            need_in_tmp(&bind.destination);
            pairs.push((
                c_path(&reachable(&bind.source))?,
                c_path(&bind.destination)?,
                bind.writable,
            ));
        }
        let mut hidden = Vec::new();
        if sandbox.is_some() {
            seccomp::prepare();
            let needed = |dir: &Path| {
                workdir.starts_with(dir)
                    || binds.iter().any(|bind| {
                        bind.source.starts_with(dir) || bind.destination.starts_with(dir)
                    })
            };
            for dir in HIDDEN.iter().map(Path::new) {
                if dir.is_dir() && !needed(dir) {
                    hidden.push(c_path(dir)?);
                }
            }
        }
        Ok(PreparedSandbox {
            hidden,
            tmp_dirs: tmp_dirs
                .iter()
                .map(|dir| c_path(dir))
                .collect::<io::Result<_>>()?,
            binds: pairs,
            private_tmp,
            user: sandbox.map(|sandbox| (sandbox.uid, sandbox.gid)),
            old_tmp_at: (old_tmp_fd >= 0).then_some(old_tmp_fd),
            _old_tmp_reserve: old_tmp,
            network_fd: sandbox
                .and_then(|sandbox| sandbox.network.as_ref())
                .map(|network| network.raw_fd()),
            _network: sandbox.and_then(|sandbox| sandbox.network.clone()),
            pid_namespace: sandbox.is_some(),
            // Found now: the child must not allocate.
            reexec: CAN_REEXEC.load(std::sync::atomic::Ordering::Relaxed) && self_exe().is_some(),
            workdir: c_path(workdir)?,
            root: None,
            mount_points: Vec::new(),
        })
    }

    /// [`PreparedSandbox::prepare`] for a sandbox with a root of its own:
    /// bind sources are reached through the host's root while it is still
    /// there; destinations and `workdir` are made inside the new root.
    fn prepare_in_root(
        root: &std::path::Path,
        workdir: &std::path::Path,
        binds: &[BindMount],
        sandbox: Option<&crate::Sandbox>,
    ) -> io::Result<PreparedSandbox> {
        seccomp::prepare();
        if binds.len() > root::MAX_BINDS {
            return Err(io::Error::other(
                "too many bind mounts for an image instance",
            ));
        }
        let mut mount_points = Vec::new();
        let mut pairs = Vec::with_capacity(binds.len());
        for (index, bind) in binds.iter().enumerate() {
            // Sources are the host's, resolved on the host now (never
            // through the image); destinations are made in the new root.
            let source = std::fs::canonicalize(&bind.source)?;
            root::mount_point(
                &bind.destination,
                source.is_file(),
                index as u32,
                &mut mount_points,
            )?;
            pairs.push((c_path(&source)?, c_path(&bind.destination)?, bind.writable));
        }
        root::mount_point(workdir, false, root::WORKDIR, &mut mount_points)?;
        Ok(PreparedSandbox {
            hidden: Vec::new(),
            tmp_dirs: Vec::new(),
            binds: pairs,
            private_tmp: sandbox.is_some_and(|sandbox| sandbox.private_tmp),
            user: sandbox.map(|sandbox| (sandbox.uid, sandbox.gid)),
            old_tmp_at: None,
            _old_tmp_reserve: None,
            network_fd: sandbox
                .and_then(|sandbox| sandbox.network.as_ref())
                .map(|network| network.raw_fd()),
            _network: sandbox.and_then(|sandbox| sandbox.network.clone()),
            pid_namespace: sandbox.is_some(),
            // This binary is not inside the image's root.
            reexec: false,
            workdir: c_path(workdir)?,
            root: Some(root::RootPlan::new(root)?),
            mount_points,
        })
    }

    /// The network namespace's descriptor, when it joins one.
    pub(crate) fn network_fd(&self) -> Option<i32> {
        self.network_fd
    }

    /// Moves `fd` above the descriptor number this sandbox reserves, if it
    /// sits on it (in the spawner's child, whose descriptors are not the
    /// server's); returns where it is now.
    pub(crate) fn clear_of_reserved(&mut self, fd: i32) -> io::Result<i32> {
        match self.old_tmp_at {
            Some(reserved) if reserved == fd => {
                // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor of ours.
                let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, reserved + 1) };
                if moved < 0 {
                    return Err(io::Error::last_os_error());
                }
                if self.network_fd == Some(fd) {
                    self.network_fd = Some(moved);
                }
                Ok(moved)
            }
            _ => Ok(fd),
        }
    }

    /// Whether a standby process (see [`crate::spawner`]) can become this
    /// sandbox's process: its namespaces (mount, IPC, pid) are the ones a
    /// standby made ahead; what is left is per instance (network, files, user).
    pub(crate) fn fits_standby(&self) -> bool {
        self.user.is_some() && self.pid_namespace && self.root.is_none()
    }

    /// What of the sandbox concerns its own root (for tests): the plan,
    /// the mount points, the binds.
    #[cfg(test)]
    pub(crate) fn root_view(&self) -> impl std::fmt::Debug + '_ {
        (&self.root, &self.mount_points, &self.binds, &self.workdir)
    }

    /// Whether the app runs as pid 2 of a pid namespace of its own (a
    /// fork of its init), not as the process forked to start it.
    pub(crate) fn uses_pid_namespace(&self) -> bool {
        self.pid_namespace
    }
}
