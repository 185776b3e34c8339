//! The spawner: a small process forked from the server before it starts
//! any thread, which starts sandboxed instances on the server's behalf.
//!
//! Why: an instance's start is three forks (the process the server waits
//! on, the init of its pid namespace, the app). Forked from the server —
//! many threads, megabytes of heap — each fork copies page tables and
//! write-protects every page of the server (a TLB shootdown on each of its
//! threads' CPUs), and every page the server then writes while the fork
//! lives is copied: about half a millisecond per fork here, and a cold start
//! waits on them. Forked from this process, single-threaded with a small
//! heap, they cost a few tens of microseconds, and nothing of the server is
//! pinned, so the instance's processes need not re-execute berth either.
//!
//! The server sends a request (the program, its arguments, env, working
//! directory and prepared sandbox) with the instance's stdio and network
//! namespace as descriptors over a Unix socket. The spawner forks with
//! `CLONE_PARENT`, so the instance's process is the server's child (the
//! server waits for it, through a pidfd), and replies with its pid. Whether
//! the exec succeeded comes back to the server, as with a plain spawn,
//! through a close-on-exec pipe that the server made and sent along.
//!
//! A start does not wait for those forks either: the spawner keeps a
//! *standby* ready, a process already in the namespaces every isolated
//! instance gets (mount, IPC, pid: its waiting process, the init, and pid 2
//! waiting to be told what to run). The server hands a start straight to
//! it, over a socket of its own; it joins the instance's network, mounts
//! its files, becomes its user and executes the app. The spawner makes the
//! next standby a little later ([`STANDBY_DELAY`]), so that the fork does
//! not compete with the app starting; a start that finds none is forked as
//! before.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

mod fdpass;
mod protocol;
mod serve;

pub use protocol::STANDBY_DELAY;
pub(crate) use protocol::{Reader, env_entry, resolve, resolve_in_root};

use crate::isolation::PreparedSandbox;
use fdpass::*;
use protocol::*;

/// The server's end of the spawner's socket, and the spawner's pid.
struct Spawner {
    channel: Mutex<Channel>,
    pid: libc::pid_t,
}

/// What the server holds of the spawner, behind one lock.
struct Channel {
    socket: OwnedFd,
    /// A standby the spawner made, not yet used.
    standby: Option<Standby>,
    /// A standby asked for that has not arrived yet: the cgroup it will
    /// be in, if any, and when it was asked for.
    asked: Option<(Option<String>, std::time::Instant)>,
    /// Standbys asked for so far (their cgroups are named after it).
    made: u64,
}

/// A process ready to become an instance (see the module's docs), taken
/// with [`take_standby`] and started with [`spawn`].
pub(crate) struct Standby {
    /// Its waiting process: the server's child, the instance's main process.
    pid: libc::pid_t,
    /// The server's end of its socket.
    socket: OwnedFd,
    /// The cgroup it is in (see [`use_cgroups`]), named `standby-…`.
    cgroup: Option<String>,
}

impl Standby {
    /// The cgroup it is in, which the instance keeps (see
    /// [`crate::cgroup::Cgroups::adopt`]).
    pub(crate) fn cgroup(&self) -> Option<&str> {
        self.cgroup.as_deref()
    }

    /// Makes it the instance `message` describes (with `fds`); returns its
    /// pid, or the error for a dead one (see [`is_dead_standby`]).
    fn start(mut self, message: &[u8], fds: &[RawFd]) -> io::Result<libc::pid_t> {
        let sent = send_with_fds(self.socket.as_raw_fd(), message, fds);
        if let Err(err) = sent {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, err));
        }
        // It is the instance now: nothing to let go of when dropped.
        self.cgroup = None;
        Ok(std::mem::replace(&mut self.pid, 0))
    }
}

impl Drop for Standby {
    /// Lets it go unused: it exits when its socket closes, and is reaped;
    /// its cgroup goes with it.
    fn drop(&mut self) {
        let pid = self.pid;
        if pid <= 0 {
            return;
        }
        let dirs = self
            .cgroup
            .take()
            .zip(CGROUPS.get())
            .map(|(name, cgroups)| cgroups.dirs(&name))
            .unwrap_or_default();
        let _ = std::thread::Builder::new()
            .name("berth-reap".into())
            .spawn(move || {
                // SAFETY: waitpid(2) on our own child, which is exiting.
                unsafe {
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                for dir in dirs {
                    let _ = std::fs::remove_dir(dir);
                }
            });
    }
}

/// Where standbys are made, so that an instance's cgroup is ready (and its
/// process in it) before it starts: moving a process between cgroups waits
/// for an RCU grace period, and holds up every fork meanwhile.
static CGROUPS: OnceLock<crate::cgroup::Cgroups> = OnceLock::new();

/// Makes the spawner put each standby in a cgroup of its own under
/// `cgroups` (see [`crate::cgroup::Cgroups::adopt`]).
pub fn use_cgroups(cgroups: &crate::cgroup::Cgroups) {
    let _ = CGROUPS.set(cgroups.clone());
}

/// Set once the spawner is found dead: starts fork from the server again.
static GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

static SPAWNER: OnceLock<Spawner> = OnceLock::new();

/// Forks the spawner. Call it while the process has one thread (before any
/// async runtime starts); later starts of sandboxed instances go through
/// it. Without it they are forked from the caller.
pub fn start() -> io::Result<()> {
    if SPAWNER.get().is_some() {
        return Ok(());
    }
    let (server_end, spawner_end) = socket_pair()?;
    // SAFETY: fork(2) of a single-threaded process (the caller's contract):
    // the child may allocate and run ordinary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(server_end);
        serve::serve(spawner_end);
    }
    drop(spawner_end);
    let _ = SPAWNER.set(Spawner {
        channel: Mutex::new(Channel {
            socket: server_end,
            standby: None,
            asked: None,
            made: 0,
        }),
        pid,
    });
    Ok(())
}

/// Whether starts go through the spawner (it was started and is alive).
pub(crate) fn available() -> bool {
    SPAWNER.get().is_some() && !GONE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Notes that the spawner died (and reaps it: it is the server's child).
/// Its standby, if any, is let go: later starts fork from the server.
fn gone(spawner: &Spawner, channel: &mut Channel) -> io::Error {
    drop(channel.standby.take());
    if !GONE.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!("the spawner is gone; instances fork from the server from now on");
        // SAFETY: waitpid(2) on our own child, without blocking.
        unsafe {
            libc::waitpid(spawner.pid, std::ptr::null_mut(), libc::WNOHANG);
        }
    }
    io::Error::new(io::ErrorKind::BrokenPipe, "the spawner is gone")
}

/// What the server asks for.
pub(crate) struct Request<'a> {
    /// The program's path (resolved: the spawner searches no `PATH`).
    pub program: &'a Path,
    /// `argv`, its first element included.
    pub args: Vec<OsString>,
    /// `KEY=value` strings.
    pub env: Vec<OsString>,
    /// The working directory (entered after the sandbox's mounts).
    pub workdir: &'a Path,
    /// The sandbox to enter.
    pub sandbox: &'a PreparedSandbox,
    /// Stdin, stdout, stderr.
    pub stdio: [RawFd; 3],
}

/// Takes the standby the spawner keeps ready, if it has one in a cgroup
/// exactly when `with_cgroup` (and asks for the next). For a request whose
/// sandbox [fits](PreparedSandbox::fits_standby).
pub(crate) fn take_standby(with_cgroup: bool) -> Option<Standby> {
    let spawner = SPAWNER.get()?;
    let mut channel = spawner.channel.lock().ok()?;
    let channel = &mut *channel;
    take_notices(channel);
    if channel.standby.as_ref()?.cgroup.is_some() != with_cgroup {
        return None;
    }
    let standby = channel.standby.take();
    ask_for_standby(spawner, channel);
    standby
}

/// What [`spawn`] reports when the standby it was given is dead: the
/// caller may start the process again without one.
pub(crate) fn is_dead_standby(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::ConnectionAborted
}

/// Starts the process `request` describes, as `standby` if given, else
/// through the spawner; returns its pid once it is on its way (whether
/// its exec succeeds comes later: [`Spawned::exec`]).
pub(crate) fn spawn(request: &Request<'_>, standby: Option<Standby>) -> io::Result<Spawned> {
    let spawner = SPAWNER
        .get()
        .ok_or_else(|| io::Error::other("no spawner"))?;
    let mut message = Vec::with_capacity(4096);
    put(&mut message, request.program.as_os_str().as_bytes());
    put(&mut message, request.workdir.as_os_str().as_bytes());
    put_list(&mut message, request.args.iter().map(|arg| arg.as_bytes()));
    put_list(&mut message, request.env.iter().map(|var| var.as_bytes()));
    request.sandbox.encode(&mut message);
    if message.len() > MAX_REQUEST {
        return Err(io::Error::other(format!(
            "the command line and env take {} bytes, over the {MAX_REQUEST} a start may",
            message.len()
        )));
    }
    let (status_read, status_write) = pipe()?;
    let mut fds = vec![
        request.stdio[0],
        request.stdio[1],
        request.stdio[2],
        status_write.as_raw_fd(),
    ];
    if let Some(network) = request.sandbox.network_fd() {
        fds.push(network);
    }
    let pid = match standby {
        // Dead (killed by hand, say): the caller may start it without.
        Some(standby) => standby.start(&message, &fds)?,
        None => {
            let mut channel = spawner
                .channel
                .lock()
                .map_err(|_| io::Error::other("the spawner's lock is poisoned"))?;
            let channel = &mut *channel;
            take_notices(channel);
            let pid = start_in_spawner(spawner, channel, &message, &fds)?;
            ask_for_standby(spawner, channel);
            pid
        }
    };
    // Only the child's copy keeps the pipe open now: it closes at its exec.
    drop(status_write);
    Ok(Spawned {
        pid: pid as u32,
        exec: ExecOutcome(status_read),
    })
}

/// A process [`spawn`] started: it may still be on its way to its exec.
pub(crate) struct Spawned {
    /// Its pid (the server's child).
    pub pid: u32,
    /// Whether its exec succeeds, to learn later.
    pub exec: ExecOutcome,
}

/// The read end of a started process's exec status pipe: it closes at the
/// exec, or first carries the errno of what failed before it. Not waited
/// for at the start: the server goes on while the process sets its sandbox
/// up and executes (a cold start's two cores are better spent so).
pub(crate) struct ExecOutcome(OwnedFd);

impl ExecOutcome {
    /// What kept the process from executing its program, once known
    /// (`None`: it executed it).
    pub(crate) async fn failure(self) -> Option<io::Error> {
        use tokio::io::AsyncReadExt;
        let mut pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(self.0) {
            Ok(pipe) => pipe,
            Err(err) => return Some(err),
        };
        let mut errno = [0u8; 4];
        let mut filled = 0;
        while filled < 4 {
            match pipe.read(&mut errno[filled..]).await {
                Ok(0) => break,
                Ok(read) => filled += read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Some(err),
            }
        }
        (filled == 4).then(|| io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
    }
}

/// Has the spawner fork the process `message` describes; returns its pid.
fn start_in_spawner(
    spawner: &Spawner,
    channel: &mut Channel,
    message: &[u8],
    fds: &[RawFd],
) -> io::Result<libc::pid_t> {
    let mut tagged = Vec::with_capacity(message.len() + 4);
    tagged.extend(tag::START.to_ne_bytes());
    tagged.extend(message);
    if let Err(err) = send_with_fds(channel.socket.as_raw_fd(), &tagged, fds) {
        return Err(broken(spawner, channel, err));
    }
    loop {
        let mut reply = [0u8; 12];
        let (got, mut received) = match receive_with_fds(channel.socket.as_raw_fd(), &mut reply) {
            Ok(received) => received,
            Err(err) => return Err(broken(spawner, channel, err)),
        };
        let word = |at: usize| i32::from_ne_bytes(reply[at..at + 4].try_into().expect("4 bytes"));
        match (got, word(0) as u32) {
            (12, tag::STARTED) => {
                let (pid, errno) = (word(4), word(8));
                if pid <= 0 {
                    return Err(io::Error::from_raw_os_error(errno));
                }
                return Ok(pid);
            }
            (8, tag::STANDBY) => keep_standby(channel, word(4), received.pop()),
            (0, _) => return Err(gone(spawner, channel)),
            _ => return Err(io::Error::other("the spawner answered out of turn")),
        }
    }
}

/// The error for a failed exchange with the spawner: it is gone when the
/// socket says so.
fn broken(spawner: &Spawner, channel: &mut Channel, err: io::Error) -> io::Error {
    if matches!(
        err.raw_os_error(),
        Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN)
    ) {
        gone(spawner, channel)
    } else {
        err
    }
}

/// Asks the spawner for a standby unless one is ready or on its way; in a
/// cgroup of its own when [`use_cgroups`] gave where.
fn ask_for_standby(spawner: &Spawner, channel: &mut Channel) {
    // `BERTH_STANDBY=off`: every start forks (to measure what it saves).
    static OFF: OnceLock<bool> = OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var("BERTH_STANDBY").is_ok_and(|value| value == "off"));
    // One asked for long ago never came (its notice was lost): ask again.
    if channel
        .asked
        .as_ref()
        .is_some_and(|(_, at)| at.elapsed() > STANDBY_DELAY * 20)
    {
        forget_asked(channel);
    }
    if off || channel.standby.is_some() || channel.asked.is_some() {
        return;
    }
    channel.made += 1;
    let cgroup = CGROUPS.get().map(|cgroups| {
        (
            // Ends with the server's pid, as instances' cgroups do.
            format!("standby-{}-{}", channel.made, std::process::id()),
            cgroups,
        )
    });
    let mut ask = tag::STANDBY.to_ne_bytes().to_vec();
    let dirs = cgroup
        .as_ref()
        .map(|(name, cgroups)| cgroups.dirs(name))
        .unwrap_or_default();
    put_list(&mut ask, dirs.iter().map(|dir| dir.as_os_str().as_bytes()));
    // SAFETY: send(2) of a buffer that lives across the call, without blocking.
    let sent = unsafe {
        libc::send(
            channel.socket.as_raw_fd(),
            ask.as_ptr().cast(),
            ask.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if sent == ask.len() as isize {
        channel.asked = Some((cgroup.map(|(name, _)| name), std::time::Instant::now()));
    } else if matches!(
        io::Error::last_os_error().raw_os_error(),
        Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN)
    ) {
        // The start at hand went well; the next forks from the server.
        let _ = gone(spawner, channel);
    }
}

/// Gives up on the standby asked for (it could not be made), and on the
/// cgroup made for it.
fn forget_asked(channel: &mut Channel) {
    let cgroup = channel.asked.take().and_then(|(cgroup, _)| cgroup);
    if let (Some(name), Some(cgroups)) = (cgroup, CGROUPS.get()) {
        for dir in cgroups.dirs(&name) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Takes the standbys the spawner sent since the last start.
fn take_notices(channel: &mut Channel) {
    loop {
        let mut notice = [0u8; 8];
        let Ok((8, mut received)) =
            receive_with_fds_flags(channel.socket.as_raw_fd(), &mut notice, libc::MSG_DONTWAIT)
        else {
            return;
        };
        let word = |at: usize| i32::from_ne_bytes(notice[at..at + 4].try_into().expect("4 bytes"));
        if word(0) as u32 == tag::STANDBY {
            keep_standby(channel, word(4), received.pop());
        }
    }
}

/// Keeps the standby the spawner announced (a pid and its socket; none when
/// it could not make one).
fn keep_standby(channel: &mut Channel, pid: libc::pid_t, socket: Option<OwnedFd>) {
    let Some(socket) = socket.filter(|_| pid > 0) else {
        forget_asked(channel);
        return;
    };
    let cgroup = channel.asked.take().and_then(|(cgroup, _)| cgroup);
    let standby = Standby {
        pid,
        socket,
        cgroup,
    };
    // An older one (never: one is asked for at a time) is let go.
    drop(channel.standby.replace(standby));
}

/// Waits for the server's child `pid` (started through the spawner) to exit,
/// through a pidfd, and reaps it.
pub(crate) async fn wait_for_exit(pid: u32) -> io::Result<std::process::ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    // SAFETY: pidfd_open(2) of our own child; the descriptor is owned below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    let pidfd = if pidfd >= 0 {
        // SAFETY: a fresh descriptor nobody else owns, which the AsyncFd
        // owns (and so keeps open) for its whole life.
        Some(unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                OwnedFd::from_raw_fd(pidfd as RawFd),
                tokio::io::Interest::READABLE,
            )
        }?)
    } else {
        None
    };
    loop {
        // Exited, but not reaped yet: the zombie keeps its pid, and so its
        // process group's id, from being reused while what it left behind
        // in the group is killed. (Killed after the reap, a new process —
        // another app's instance — could have that id.)
        // SAFETY: waitid(2) on our own child, without blocking or reaping;
        // `info` is a zeroed siginfo_t the call fills in.
        let exited = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let waited = libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            waited == 0 && info.si_pid() == pid as libc::pid_t
        };
        if exited {
            crate::isolation::signal_group(pid, libc::SIGKILL);
            let mut status = 0;
            // SAFETY: waitpid(2) on our own child, which has exited.
            let reaped = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
            if reaped == pid as libc::pid_t {
                return Ok(std::process::ExitStatus::from_raw(status));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
            continue;
        }
        match &pidfd {
            Some(pidfd) => pidfd.readable().await?.clear_ready(),
            // Kernels before 5.3: poll.
            None => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

/// Turns bytes back into an `OsString` (for tests).
#[cfg(test)]
fn os(bytes: &[u8]) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    OsString::from_vec(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_lists_read_back_as_written() {
        let mut message = Vec::new();
        put(&mut message, b"/bin/app");
        put_list(&mut message, [&b"app"[..], b"--port", b"8080"].into_iter());
        let mut reader = Reader::new(&message);
        assert_eq!(reader.c_string().unwrap().as_bytes(), b"/bin/app");
        let args: Vec<OsString> = reader
            .c_strings()
            .unwrap()
            .iter()
            .map(|arg| os(arg.as_bytes()))
            .collect();
        assert_eq!(args, ["app", "--port", "8080"]);
        assert!(reader.u32().is_err(), "nothing is left");
    }

    #[test]
    fn programs_resolve_through_the_path_or_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let app = bin.join("app");
        std::fs::write(&app, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("/nonexistent:{}:/usr/bin", bin.display());
        assert_eq!(resolve("app", &path, dir.path()), app);
        assert_eq!(
            resolve("./bin/app", &path, dir.path()),
            dir.path().join("./bin/app")
        );
        assert_eq!(resolve("/bin/sh", &path, dir.path()), Path::new("/bin/sh"));
        assert_eq!(resolve("missing", &path, dir.path()), Path::new("missing"));
    }
}
