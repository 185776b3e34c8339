//! The instance's two waiting processes: the one the driver waits on in
//! the host's pid namespace, and the init (pid 1) of the instance's own;
//! and the standby made ahead of any instance.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;

use super::sys::*;

/// Whether this binary runs [`run_instance_init_if_asked`] first thing (a
/// test harness does not: its instances' waiting processes stay forks).
pub(super) static CAN_REEXEC: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// `argv[0]` of the instance's waiting process in the host's pid namespace.
pub(super) const WAIT_NAME: &CStr = c"berth-instance-wait";

/// `argv[0]` of the instance's init (pid 1 of its namespace).
pub(super) const INIT_NAME: &CStr = c"berth-instance-init";

/// The binary the two re-exec: this one (a fresh image holds none of the
/// server's memory, which a fork that never execs would pin copy-on-write),
/// by its path, found once: `/proc/self/exe` does not resolve for the
/// waiting process once the init has mounted its namespace's `/proc`.
pub(super) fn self_exe() -> Option<&'static CStr> {
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

/// In a fresh child of the spawner: makes it a standby, the namespaces
/// every isolated instance gets (mount, IPC, pid, with the init of
/// [`become_pid_one`]) made before any instance asks. Returns in pid 2,
/// which then waits to become an instance ([`PreparedSandbox::enter_from_standby`]).
pub(crate) fn enter_standby() -> io::Result<()> {
    set_umask(0o022);
    unshare_private(libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWPID)?;
    become_pid_one(false)
}

/// The signals a stop may send to the instance's process group (SIGTERM,
/// or the app's `kill_signal`); the two waiting processes above the app
/// ignore them (the app gets them itself).
pub(super) const STOP_SIGNALS: [i32; 8] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGABRT,
];

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
pub(super) fn become_pid_one(reexec: bool) -> io::Result<()> {
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
pub(super) unsafe fn exec_self(name: &CStr, pid: i32) {
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
pub(super) unsafe fn wait_for_init(init: i32) -> ! {
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
pub(super) unsafe fn reap_until_app_exits(app: i32) -> ! {
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
pub(super) unsafe fn exit_as(status: i32) -> ! {
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
