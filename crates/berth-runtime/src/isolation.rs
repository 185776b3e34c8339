//! The one module allowed `unsafe`: system calls made around a child
//! process (parent-death signal, signalling a process group, private
//! mount and IPC namespaces with bind mounts and `/tmp`, becoming the app's
//! own user).
//!
//! Each block below calls a libc function with plain integer arguments or
//! with C strings made before the fork; none touches memory the child
//! shares with other threads.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;

use crate::BindMount;

/// Makes the calling (child, pre-exec) process receive SIGKILL when the thread
/// that spawned it dies, so instances never outlive a crashed server.
pub(crate) fn die_with_parent() -> io::Result<()> {
    die_with_parent_by(libc::SIGKILL)
}

/// Makes the calling (child, pre-exec) process receive `signal` when the
/// thread that spawned it dies.
pub(crate) fn die_with_parent_by(signal: i32) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers and is async-signal-safe,
    // which is what a pre_exec hook requires.
    let result = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0) };
    check(result)
}

fn check(result: i32) -> io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the effective user is root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Everything a child does between fork and exec to enter its sandbox,
/// prepared in the parent: a pre-exec hook must not allocate.
pub(crate) struct PreparedSandbox {
    /// Directories to make in the fresh `/tmp` (parents first).
    tmp_dirs: Vec<CString>,
    /// (source, destination) bind mounts, in order. Sources under a
    /// covered `/tmp` are reached through `old_tmp`.
    binds: Vec<(CString, CString)>,
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
}

/// Whether this binary runs [`run_instance_init_if_asked`] first thing (a
/// test harness does not: its instances' waiting processes stay forks).
static CAN_REEXEC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `argv[0]` of the instance's waiting process in the host's pid namespace.
const WAIT_NAME: &CStr = c"berth-instance-wait";
/// `argv[0]` of the instance's init (pid 1 of its namespace).
const INIT_NAME: &CStr = c"berth-instance-init";
/// The binary the two re-exec: this one (a fresh image holds none of the
/// server's memory, which a fork that never execs would pin copy-on-write),
/// by its path, found once: `/proc/self/exe` does not resolve for the
/// waiting process once the init has mounted its namespace's `/proc`.
fn self_exe() -> Option<&'static CStr> {
    static PATH: std::sync::OnceLock<Option<CString>> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        std::env::current_exe()
            .ok()
            .and_then(|path| CString::new(path.as_os_str().as_bytes()).ok())
    })
    .as_deref()
}

/// Runs the instance's waiting process or init when this binary was started
/// as one (by `PreparedSandbox::enter`); returns otherwise. Call it first
/// thing in `main`.
pub fn run_instance_init_if_asked() {
    // This binary knows the two roles: instances may re-exec it into them.
    CAN_REEXEC.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut args = std::env::args_os();
    let Some(name) = args.next() else { return };
    let pid: i32 = match args.next().and_then(|pid| pid.to_str()?.parse().ok()) {
        Some(pid) => pid,
        None => return,
    };
    if name.as_bytes() == WAIT_NAME.to_bytes() {
        // SAFETY: see wait_for_init.
        unsafe { wait_for_init(pid) }
    } else if name.as_bytes() == INIT_NAME.to_bytes() {
        // SAFETY: see reap_until_app_exits.
        unsafe { reap_until_app_exits(pid) }
    }
}

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
        let tmp = Path::new("/tmp");
        let mut old_tmp = None;
        let mut old_tmp_fd = -1;
        if private_tmp
            && (workdir.starts_with(tmp) || binds.iter().any(|bind| bind.source.starts_with(tmp)))
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
        if old_tmp_fd >= 0 && workdir.starts_with(tmp) {
            need_in_tmp(workdir);
            pairs.push((c_path(&reachable(workdir))?, c_path(workdir)?));
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
            ));
        }
        Ok(PreparedSandbox {
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
        })
    }

    /// The network namespace's descriptor, when it joins one.
    pub(crate) fn network_fd(&self) -> Option<i32> {
        self.network_fd
    }

    /// Writes what [`PreparedSandbox::decode`] reads (in the spawner).
    pub(crate) fn encode(&self, message: &mut Vec<u8>) {
        let put = |message: &mut Vec<u8>, bytes: &[u8]| {
            message.extend((bytes.len() as u32).to_ne_bytes());
            message.extend(bytes);
        };
        message.extend((self.tmp_dirs.len() as u32).to_ne_bytes());
        for dir in &self.tmp_dirs {
            put(message, dir.as_bytes());
        }
        message.extend((self.binds.len() as u32).to_ne_bytes());
        for (source, destination) in &self.binds {
            put(message, source.as_bytes());
            put(message, destination.as_bytes());
        }
        let (has_user, uid, gid) = match self.user {
            Some((uid, gid)) => (1, uid, gid),
            None => (0, 0, 0),
        };
        for value in [
            u32::from(self.private_tmp),
            has_user,
            uid,
            gid,
            self.old_tmp_at.map_or(u32::MAX, |fd| fd as u32),
            u32::from(self.pid_namespace),
        ] {
            message.extend(value.to_ne_bytes());
        }
    }

    /// Reads a sandbox [`PreparedSandbox::encode`] wrote; `network_fd` is
    /// the namespace's descriptor received with it. Its processes need not
    /// re-execute berth: the spawner they fork from is small.
    pub(crate) fn decode(
        reader: &mut crate::spawner::Reader<'_>,
        network_fd: Option<i32>,
    ) -> io::Result<PreparedSandbox> {
        let tmp_dirs = reader.c_strings()?;
        let binds = (0..reader.u32()?)
            .map(|_| Ok((reader.c_string()?, reader.c_string()?)))
            .collect::<io::Result<_>>()?;
        let private_tmp = reader.u32()? == 1;
        let has_user = reader.u32()? == 1;
        let (uid, gid) = (reader.u32()?, reader.u32()?);
        let old_tmp_at = reader.u32()?;
        let pid_namespace = reader.u32()? == 1;
        Ok(PreparedSandbox {
            tmp_dirs,
            binds,
            private_tmp,
            user: has_user.then_some((uid, gid)),
            old_tmp_at: (old_tmp_at != u32::MAX).then_some(old_tmp_at as i32),
            _old_tmp_reserve: None,
            network_fd,
            _network: None,
            pid_namespace,
            reexec: false,
        })
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
        self.user.is_some() && self.pid_namespace
    }

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
            self.mount_files()?;
        }
        if self.pid_namespace {
            // Returns only in the process that goes on to exec the app.
            become_pid_one(self.reexec)?;
        }
        self.become_user()
    }

    /// In a standby process that was made by [`enter_standby`]: what is
    /// left of [`PreparedSandbox::enter`], the parts that belong to this
    /// instance (its network, `/tmp`, bind mounts and user).
    pub(crate) fn enter_from_standby(&self) -> io::Result<()> {
        if let Some(network) = self.network_fd {
            crate::net::netns::enter(network)?;
        }
        self.mount_files()?;
        self.become_user()
    }

    /// The fresh `/tmp` and the bind mounts, in the mount namespace the
    /// caller has of its own.
    fn mount_files(&self) -> io::Result<()> {
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
            for (source, destination) in &self.binds {
                check(libc::mount(
                    source.as_ptr(),
                    destination.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
            }
        }
        Ok(())
    }

    fn become_user(&self) -> io::Result<()> {
        if let Some((uid, gid)) = self.user {
            // SAFETY: plain system calls with integer arguments.
            unsafe {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
            }
        }
        Ok(())
    }
}

/// New namespaces (`flags` for unshare(2)) of which the mount namespace
/// does not propagate mounts back to the host.
fn unshare_private(flags: i32) -> io::Result<()> {
    // SAFETY: unshare and mount with constant strings; async-signal-safe.
    unsafe {
        check(libc::unshare(flags))?;
        check(libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))
    }
}

/// In a fresh child of the spawner: makes it a standby, the namespaces
/// every isolated instance gets (mount, IPC, pid, with the init of
/// [`become_pid_one`]) made before any instance asks. Returns in pid 2,
/// which then waits to become an instance ([`PreparedSandbox::enter_from_standby`]).
pub(crate) fn enter_standby() -> io::Result<()> {
    set_umask(0o022);
    unshare_private(libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWPID)?;
    become_pid_one(false)
}

/// The signals a stop sends to the instance's process group; the two
/// waiting processes above the app ignore them (the app gets them itself).
const STOP_SIGNALS: [i32; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// In the child, after `unshare(CLONE_NEWPID)`: the caller's next child is
/// pid 1 of the new namespace. Makes three processes of one:
///
/// - this one stays in the host's namespace as the instance's main process
///   (the driver waits on it): it waits for pid 1 and exits as the app did;
/// - pid 1 mounts a `/proc` of the namespace, reaps orphans, and reports
///   the app's wait status to it through a pipe;
/// - pid 2 returns from here and goes on to exec the app, with the usual
///   signal dispositions, so SIGTERM stops it as it would anywhere.
///
/// The two waiting processes close every descriptor but stdio and their
/// pipe end (among them is the pipe that tells the spawning server the exec
/// happened, which must close for the spawn to return), then re-execute this
/// binary as `berth-instance-wait` / `berth-instance-init` with an empty
/// environment, so they hold none of the server's memory; if that exec
/// fails they go on in place. Everything here is async-signal-safe: fork,
/// waitpid, mount, read, write, signal, close_range, execve, _exit.
fn become_pid_one(reexec: bool) -> io::Result<()> {
    // SAFETY: system calls with integers and a stack array; no allocation.
    unsafe {
        // The host-side process never returns to the caller, which would
        // set this after the user change: set it now.
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
        let mut status_pipe = [0i32; 2];
        check(libc::pipe2(status_pipe.as_mut_ptr(), libc::O_CLOEXEC))?;
        for signal in STOP_SIGNALS {
            libc::signal(signal, libc::SIG_IGN);
        }
        let init = libc::fork();
        if init < 0 {
            return Err(io::Error::last_os_error());
        }
        if init > 0 {
            // The host-side process: wait for pid 1, then exit as the app did.
            libc::prctl(libc::PR_SET_NAME, c"berth-wait".as_ptr(), 0, 0, 0);
            keep_only(status_pipe[0]);
            if reexec {
                exec_self(WAIT_NAME, init);
            }
            wait_for_init(init);
        }
        // Pid 1 of the new namespace.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"berth-init".as_ptr(), 0, 0, 0);
        check(libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ))?;
        let app = libc::fork();
        if app < 0 {
            return Err(io::Error::last_os_error());
        }
        if app > 0 {
            keep_only(status_pipe[1]);
            if reexec {
                exec_self(INIT_NAME, app);
            }
            reap_until_app_exits(app);
        }
        // The app, pid 2.
        libc::close(status_pipe[0]);
        libc::close(status_pipe[1]);
        for signal in STOP_SIGNALS {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
    Ok(())
}

/// Re-executes this binary as `name` with `pid` as its argument and an
/// empty environment; returns only if the exec failed (the caller then
/// carries on in this process).
///
/// # Safety
/// Only between fork and exec: formats into a stack buffer, no allocation.
unsafe fn exec_self(name: &CStr, pid: i32) {
    // Not now: the app is starting, and a cold start waits for it; two execs
    // of this binary beside it would slow it down. A child that exits
    // meanwhile waits as a zombie for the re-executed process to reap it.
    let pause = libc::timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    // SAFETY: nanosleep with a valid timespec.
    unsafe {
        libc::nanosleep(&pause, std::ptr::null_mut());
    }
    let mut digits = [0u8; 16];
    let mut at = digits.len() - 1; // the last byte stays NUL
    let mut rest = pid.max(0) as u32;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let argv = [
        name.as_ptr(),
        digits[at..].as_ptr().cast::<libc::c_char>(),
        std::ptr::null(),
    ];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: NUL-terminated strings and arrays that live on this stack.
    unsafe {
        if let Some(path) = self_exe() {
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        }
    }
}

/// The waiting process: waits for the init `init`, then exits as the app
/// did (its wait status comes through descriptor 3).
///
/// # Safety
/// Only in the instance's waiting process (it exits).
unsafe fn wait_for_init(init: i32) -> ! {
    // SAFETY: waitpid/read on this process's own child and descriptor.
    unsafe {
        let mut init_status = 0;
        while libc::waitpid(init, &mut init_status, 0) < 0
            && *libc::__errno_location() == libc::EINTR
        {}
        let mut app_status = 0i32;
        let read = libc::read(3, (&raw mut app_status).cast(), 4);
        exit_as(if read == 4 { app_status } else { init_status })
    }
}

/// Pid 1: reaps every child until the app `app` exits, then reports its
/// wait status through descriptor 3 and exits (which ends the namespace).
///
/// # Safety
/// Only in the instance's init (it exits).
unsafe fn reap_until_app_exits(app: i32) -> ! {
    // SAFETY: waitpid/write on this process's own children and descriptor.
    unsafe {
        loop {
            let mut status = 0;
            let reaped = libc::waitpid(-1, &mut status, 0);
            if reaped == app {
                libc::write(3, (&raw const status).cast(), 4);
                libc::_exit(0);
            }
            if reaped < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(1);
            }
        }
    }
}

/// Keeps stdio and `fd` (as descriptor 3); closes every other descriptor.
///
/// # Safety
/// Only between fork and exec (or in a process that never execs).
pub(crate) unsafe fn keep_only(fd: i32) {
    // SAFETY: dup2/close_range/getrlimit/close on descriptors of this
    // process only.
    unsafe {
        if fd != 3 {
            libc::dup2(fd, 3); // the copy is not close-on-exec
        } else {
            libc::fcntl(3, libc::F_SETFD, 0);
        }
        if libc::close_range(4, u32::MAX, 0) != 0 {
            // Kernels before 5.9 (or a seccomp filter) refuse close_range:
            // close one by one up to the descriptor limit, else the
            // server's spawn would wait on its exec pipe forever.
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            let highest = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur.min(1 << 20) as i32
            } else {
                65536
            };
            for descriptor in 4..highest {
                libc::close(descriptor);
            }
        }
    }
}

/// Exits the way a process with wait status `status` did: with its code,
/// or killed by its signal.
///
/// # Safety
/// Only in a process that is done (never returns).
unsafe fn exit_as(status: i32) -> ! {
    // SAFETY: signal, kill and _exit on this process.
    unsafe {
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            libc::signal(signal, libc::SIG_DFL);
            libc::kill(libc::getpid(), signal);
            libc::_exit(128 + signal);
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }
}

/// Sets this process's umask (files it creates from now on get at most
/// `0o777 & !mask`).
pub(crate) fn set_umask(mask: u32) {
    // SAFETY: umask(2) takes an integer and cannot fail.
    unsafe {
        libc::umask(mask as libc::mode_t);
    }
}

/// Sends `signal` to one process.
pub(crate) fn signal_process(pid: u32, signal: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) on one pid; no memory is shared.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Sends `signal` to the process group led by `pid`.
pub(crate) fn signal_group(pid: u32, signal: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is shared.
    unsafe {
        libc::kill(-pid, signal);
    }
}

/// Kills every process, and its process group, whose environment names one
/// of `instance_ids` in `BERTH_INSTANCE`: the instances a crashed server left
/// behind, including children they started (which the parent-death signal
/// does not reach). Returns how many processes matched.
pub(crate) fn kill_orphans(instance_ids: &std::collections::HashSet<String>) -> usize {
    if instance_ids.is_empty() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let ours = environ.split(|byte| *byte == 0).any(|variable| {
            variable
                .strip_prefix(b"BERTH_INSTANCE=")
                .and_then(|id| std::str::from_utf8(id).ok())
                .is_some_and(|id| instance_ids.contains(id))
        });
        if !ours {
            continue;
        }
        killed += 1;
        if let Some(group) = process_group(pid) {
            signal_group(group, libc::SIGKILL);
        }
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: kill(2) on one pid; no memory is shared.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    killed
}

/// The process group of `pid`, from /proc/PID/stat.
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Runs `job` with this thread's timer slack at one nanosecond, then puts
/// the old slack back: its short sleeps end when asked, not up to 50 µs
/// later (the default slack), as a health check watching a starting
/// instance's port every 100 µs wants.
pub fn with_exact_sleeps<T>(job: impl FnOnce() -> T) -> T {
    // SAFETY: prctl(2) on the calling thread's timer slack, integers only.
    let old = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
    let result = job();
    if old > 0 {
        // SAFETY: as above.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, old as libc::c_ulong, 0, 0, 0) };
    }
    result
}
