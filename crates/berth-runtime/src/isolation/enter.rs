//! Entering a prepared sandbox in the child, before exec: namespaces,
//! `/tmp`, bind mounts, the app's user.

use std::io;

use super::PreparedSandbox;
use super::pid1::*;
use super::sys::*;

impl PreparedSandbox {
    /// In the child, before exec: a mount and IPC
    /// namespace of its own in which mounts do not propagate back to the
    /// host, a fresh `/tmp`, the bind mounts; then the app's own user (no
    /// supplementary groups). The parent-death signal is set after, by the
    /// caller: changing user clears it.
    pub(crate) fn enter(&self) -> io::Result<()> {
        // The server's umask is 077; the directories made below, and the
        // app's own files, get the usual 022.
        set_umask(0o022);
        if let Some(network) = self.network_fd {
            crate::net::netns::enter(network)?;
        }
        let isolated = self.user.is_some();
        if !self.binds.is_empty() || self.private_tmp || isolated {
            let mut flags = if isolated {
                libc::CLONE_NEWNS | libc::CLONE_NEWIPC
            } else {
                libc::CLONE_NEWNS
            };
            if self.pid_namespace {
                flags |= libc::CLONE_NEWPID;
            }
            unshare_private(flags)?;
            let mut trees = [-1i32; super::root::MAX_BINDS];
            if let Some(plan) = &self.root {
                // The bind sources while the host's root is still here.
                super::root::take_sources(&self.binds, &mut trees)?;
                super::root::enter_root(plan)?;
            }
            self.mount_files(&trees)?;
        }
        if self.pid_namespace {
            // Returns only in the process that goes on to exec the app.
            become_pid_one(self.reexec)?;
        }
        self.become_user()?;
        // SAFETY: chdir with a C string made before the fork.
        check(unsafe { libc::chdir(self.workdir.as_ptr()) })?;
        Ok(())
    }

    /// In a standby process that was made by [`enter_standby`]: what is
    /// left of [`PreparedSandbox::enter`], the parts that belong to this
    /// instance (its network, `/tmp`, bind mounts and user).
    pub(crate) fn enter_from_standby(&self) -> io::Result<()> {
        if let Some(network) = self.network_fd {
            crate::net::netns::enter(network)?;
        }
        self.mount_files(&[])?;
        self.become_user()
    }

    /// The fresh `/tmp`, a private `/dev` (for a sandboxed instance) and
    /// the bind mounts, in the mount namespace the caller has of its own.
    /// `trees`: the bind sources taken as detached trees, for an instance
    /// with a root of its own (their sources are gone by now).
    fn mount_files(&self, trees: &[i32]) -> io::Result<()> {
        if self.user.is_some() {
            private_dev()?;
            for dir in &self.hidden {
                // SAFETY: mount with C strings made before the fork.
                check(unsafe {
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        dir.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        c"size=4k,mode=755".as_ptr().cast(),
                    )
                })?;
            }
        }
        // SAFETY: open, dup3, mount and mkdir are system calls,
        // async-signal-safe; the strings were made before the fork and
        // live as long as `self`.
        unsafe {
            if let Some(reserved) = self.old_tmp_at {
                let fd = libc::open(
                    c"/tmp".as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                );
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::dup3(fd, reserved, libc::O_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(fd);
            }
            if self.private_tmp {
                check(libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/tmp".as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    c"mode=1777,size=64m".as_ptr().cast(),
                ))?;
                for dir in &self.tmp_dirs {
                    if libc::mkdir(dir.as_ptr(), 0o755) != 0
                        && *libc::__errno_location() != libc::EEXIST
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
            if self.root.is_some() {
                for (index, (_, destination, _)) in self.binds.iter().enumerate() {
                    let Some(&tree) = trees.get(index) else {
                        return Err(io::Error::from_raw_os_error(libc::EINVAL));
                    };
                    super::root::make_mount_points(&self.mount_points, index as u32)?;
                    super::root::move_into_place(tree, destination)?;
                }
                super::root::make_mount_points(&self.mount_points, super::root::WORKDIR)?;
            } else {
                for (source, destination, _) in &self.binds {
                    check(libc::mount(
                        source.as_ptr(),
                        destination.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ))?;
                }
            }
        }
        if self.user.is_some() {
            self.read_only_but_scratch()?;
        }
        Ok(())
    }

    /// Makes every mount the sandbox sees read-only — the slug, the host's
    /// file system, `/var/tmp` included — but for its own scratch space
    /// (`/tmp` and `/dev/shm`, each counted in its memory) and the bind
    /// mounts marked writable (volumes). An app cannot fill the host's
    /// disk, nor change its release. A kernel without `mount_setattr`
    /// (before 5.12) leaves the mounts as they were.
    fn read_only_but_scratch(&self) -> io::Result<()> {
        match set_read_only(c"/", true, true) {
            // An image's root is read-only whatever the kernel: the
            // overlay's upper layer would otherwise take the app's writes.
            Err(err) if err.raw_os_error() == Some(libc::ENOSYS) && self.root.is_some() => {
                return super::root::remount_root_read_only();
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOSYS) => return Ok(()),
            other => other?,
        }
        if self.private_tmp {
            set_read_only(c"/tmp", false, false)?;
        }
        set_read_only(c"/dev/shm", false, false)?;
        for (_, destination, writable) in &self.binds {
            if *writable {
                set_read_only(destination, false, false)?;
            }
        }
        Ok(())
    }

    /// The app's own user, with no supplementary groups, no capabilities
    /// (a non-root user keeps none across exec), and no way to gain any:
    /// `no_new_privs` makes the host's setuid binaries run as the app.
    fn become_user(&self) -> io::Result<()> {
        if let Some((uid, gid)) = self.user {
            // SAFETY: plain system calls with integer arguments.
            unsafe {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
                check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            }
            // Last: from here on the process cannot mount, so nothing above
            // may come after it.
            super::seccomp::install()?;
        }
        Ok(())
    }
}

/// Sets (or clears) the read-only flag of the mount at `path`, and of
/// every mount under it when `recursive`.
fn set_read_only(path: &std::ffi::CStr, read_only: bool, recursive: bool) -> io::Result<()> {
    let (set, clear) = if read_only {
        (libc::MOUNT_ATTR_RDONLY, 0)
    } else {
        (0, libc::MOUNT_ATTR_RDONLY)
    };
    let attributes = libc::mount_attr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr(2) with a C string and a filled-in struct that
    // outlive the call; async-signal-safe.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attributes as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        ) as i32
    })
}

/// The character devices an app may use: name, major, minor.
const DEVICES: [(&std::ffi::CStr, u32, u32); 6] = [
    (c"/dev/null", 1, 3),
    (c"/dev/zero", 1, 5),
    (c"/dev/full", 1, 7),
    (c"/dev/random", 1, 8),
    (c"/dev/urandom", 1, 9),
    (c"/dev/tty", 5, 0),
];

/// The links every `/dev` has.
const LINKS: [(&std::ffi::CStr, &std::ffi::CStr); 5] = [
    (c"/proc/self/fd", c"/dev/fd"),
    (c"/proc/self/fd/0", c"/dev/stdin"),
    (c"/proc/self/fd/1", c"/dev/stdout"),
    (c"/proc/self/fd/2", c"/dev/stderr"),
    (c"pts/ptmx", c"/dev/ptmx"),
];

/// Covers the host's `/dev` with one of the instance's own: the usual
/// devices and links, its own pseudo-terminals, and a `/dev/shm` of its
/// own (a small tmpfs whose pages count against the instance's memory and
/// go away with it). Nothing of the host's devices, and nothing another
/// app left in shared memory, is visible.
fn private_dev() -> io::Result<()> {
    // SAFETY: mount, mknod, chmod, mkdir and symlink with constant C
    // strings; async-signal-safe system calls, no allocation.
    unsafe {
        check(libc::mount(
            c"tmpfs".as_ptr(),
            c"/dev".as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            c"mode=755,size=64k".as_ptr().cast(),
        ))?;
        for (path, major, minor) in DEVICES {
            check(libc::mknod(
                path.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(major, minor),
            ))?;
            // mknod honours the umask (022): everyone may use these.
            check(libc::chmod(path.as_ptr(), 0o666))?;
        }
        check(libc::mkdir(c"/dev/shm".as_ptr(), 0o755))?;
        check(libc::mount(
            c"tmpfs".as_ptr(),
            c"/dev/shm".as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            c"mode=1777,size=64m".as_ptr().cast(),
        ))?;
        check(libc::mkdir(c"/dev/pts".as_ptr(), 0o755))?;
        // Pseudo-terminals of its own; a kernel without them leaves the
        // directory empty (ptmx then points nowhere).
        let _ = libc::mount(
            c"devpts".as_ptr(),
            c"/dev/pts".as_ptr(),
            c"devpts".as_ptr(),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            c"newinstance,ptmxmode=0666,mode=620".as_ptr().cast(),
        );
        for (target, link) in LINKS {
            check(libc::symlink(target.as_ptr(), link.as_ptr()))?;
        }
    }
    Ok(())
}
