//! The spawner's side: its loop, the standbys it makes, and the
//! instances it forks.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use super::fdpass::*;
use super::protocol::*;
use crate::isolation::PreparedSandbox;

/// The spawner's loop: one request at a time until the server's end
/// closes; a standby, when asked for, once [`STANDBY_DELAY`] has passed
/// without a request.
pub(super) fn serve(socket: OwnedFd) -> ! {
    // SAFETY: prctl and close_range on this process only.
    unsafe {
        // Gone with the server.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"berth-spawner".as_ptr(), 0, 0, 0);
        // Keep stdio (the server's log) and the socket only.
        let keep = socket.as_raw_fd();
        if keep > 3 {
            libc::close_range(3, (keep - 1) as u32, 0);
        }
        libc::close_range((keep + 1) as u32, u32::MAX, 0);
    }
    let mut buffer = vec![0u8; MAX_REQUEST];
    let mut standby_at: Option<std::time::Instant> = None;
    // The cgroup directories the next standby makes and joins.
    let mut standby_cgroup: Vec<PathBuf> = Vec::new();
    loop {
        if let Some(at) = standby_at {
            let left = at.saturating_duration_since(std::time::Instant::now());
            if !readable_within(socket.as_raw_fd(), left) {
                standby_at = None;
                let cgroup = std::mem::take(&mut standby_cgroup);
                if make_standby(socket.as_raw_fd(), &mut buffer, &cgroup).is_err() {
                    // Starts fork as before; the server may ask again.
                    let mut notice = [0u8; 8];
                    notice[..4].copy_from_slice(&tag::STANDBY.to_ne_bytes());
                    let _ = send_with_fds(socket.as_raw_fd(), &notice, &[]);
                }
                continue;
            }
        }
        let (got, fds) = match receive_with_fds(socket.as_raw_fd(), &mut buffer) {
            Ok((0, _)) | Err(_) => std::process::exit(0),
            Ok(received) => received,
        };
        let mut reader = Reader::new(&buffer[..got]);
        match reader.u32() {
            Ok(tag::STANDBY) => {
                use std::os::unix::ffi::OsStrExt;
                standby_at = Some(std::time::Instant::now() + STANDBY_DELAY);
                standby_cgroup = reader
                    .c_strings()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|dir| PathBuf::from(std::ffi::OsStr::from_bytes(dir.as_bytes())))
                    .collect();
                continue;
            }
            Ok(tag::START) => {}
            _ => continue,
        }
        let pid = match start_one(reader, fds) {
            Ok(pid) => (pid, 0),
            Err(err) => (-1, err.raw_os_error().unwrap_or(libc::EINVAL)),
        };
        if let Some(at) = &mut standby_at {
            // A start just now: the standby's fork waits for it to settle.
            *at = std::time::Instant::now() + STANDBY_DELAY;
        }
        let mut reply = [0u8; 12];
        reply[..4].copy_from_slice(&tag::STARTED.to_ne_bytes());
        reply[4..8].copy_from_slice(&pid.0.to_ne_bytes());
        reply[8..].copy_from_slice(&pid.1.to_ne_bytes());
        // SAFETY: send(2) of a stack buffer.
        unsafe {
            libc::send(
                socket.as_raw_fd(),
                reply.as_ptr().cast(),
                reply.len(),
                libc::MSG_NOSIGNAL,
            );
        }
    }
}

/// Whether `socket` has something to read before `within` passes.
pub(super) fn readable_within(socket: RawFd, within: std::time::Duration) -> bool {
    let mut poll = libc::pollfd {
        fd: socket,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = within.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: poll(2) on one pollfd on the stack.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready >= 0 {
            return ready > 0;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return true;
        }
    }
}

/// Forks a standby (the server's child, like every instance) in a new
/// cgroup made of `cgroup`'s directories (if any), and sends the server its
/// pid and its socket. `buffer` is where the standby will read its request
/// (its own copy, after the fork).
pub(super) fn make_standby(socket: RawFd, buffer: &mut [u8], cgroup: &[PathBuf]) -> io::Result<()> {
    // Opened here, before the server can rename the cgroup it adopts: the
    // child joins through these whatever the directory is called by then.
    let mut joins = Vec::with_capacity(cgroup.len());
    for dir in cgroup {
        std::fs::create_dir(dir)?;
        joins.push(OwnedFd::from(
            std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))?,
        ));
    }
    let (server_end, standby_end) = socket_pair()?;
    let pid = fork_for_server()?;
    if pid == 0 {
        drop(server_end);
        stand_by(standby_end, buffer, &joins);
    }
    drop(standby_end);
    let mut notice = [0u8; 8];
    notice[..4].copy_from_slice(&tag::STANDBY.to_ne_bytes());
    notice[4..].copy_from_slice(&pid.to_ne_bytes());
    send_with_fds(socket, &notice, &[server_end.as_raw_fd()])
}

/// clone(2) as a fork whose child's parent is ours (the server): 0 in the
/// child, its pid in the spawner.
pub(super) fn fork_for_server() -> io::Result<i32> {
    // SAFETY: clone(2) without a new stack is a fork; this process is
    // single-threaded, so the child may go on with ordinary code until it
    // execs or exits.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid as i32)
    }
}

/// The standby: in its cgroup (each `cgroup.procs` of `joins`) and
/// namespaces, pid 2 waits on `socket` for a start (as the spawner's
/// requests, without the tag), then becomes that instance. Exits when the
/// server lets it go (closes its end).
pub(super) fn stand_by(socket: OwnedFd, buffer: &mut [u8], joins: &[OwnedFd]) -> ! {
    // SAFETY: descriptor and process-attribute system calls on this
    // process, which is single-threaded and never returns.
    unsafe {
        // Before the forks below: the init and pid 2 are born in it.
        for procs in joins {
            if libc::write(procs.as_raw_fd(), c"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(1);
            }
        }
        // Nothing of the spawner's: above all not its socket, whose
        // closing tells the server the spawner is gone. The socket is 3.
        crate::isolation::keep_only(socket.as_raw_fd());
        libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC);
        std::mem::forget(socket);
        libc::setpgid(0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if crate::isolation::enter_standby().is_err() {
            libc::_exit(1);
        }
        // Pid 2 of its namespace from here.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"berth-standby".as_ptr(), 0, 0, 0);
    }
    let (got, fds) = match receive_with_fds(3, buffer) {
        Ok((got, fds)) if got > 0 => (got, fds),
        // SAFETY: _exit(2): let go unused.
        _ => unsafe { libc::_exit(0) },
    };
    // SAFETY: close(2) of the standby's socket, read from.
    unsafe {
        libc::close(3);
    }
    match Decoded::read(Reader::new(&buffer[..got]), fds) {
        Ok(request) => request.become_instance(true),
        Err((err, fds)) => {
            let status = fds.get(3).map(|fd| fd.as_raw_fd());
            let failed = err.raw_os_error().unwrap_or(libc::EINVAL);
            // SAFETY: write(2) of a stack value to the status pipe (when
            // the request carried one), then _exit.
            unsafe {
                if let Some(status) = status {
                    libc::write(status, (&raw const failed).cast(), 4);
                }
                libc::_exit(127)
            }
        }
    }
}

/// A start request, decoded.
pub(super) struct Decoded {
    program: CString,
    workdir: CString,
    args: Vec<CString>,
    env: Vec<CString>,
    sandbox: PreparedSandbox,
    /// Stdin, stdout, stderr, the exec status pipe, maybe the network
    /// namespace (owned by the sandbox from here).
    fds: Vec<OwnedFd>,
}

impl Decoded {
    /// Reads a request; on failure the descriptors come back with the
    /// error (the status pipe among them, to report it on).
    fn read(reader: Reader<'_>, fds: Vec<OwnedFd>) -> Result<Decoded, (io::Error, Vec<OwnedFd>)> {
        let mut reader = reader;
        let mut strings = || -> io::Result<_> {
            let program = reader.c_string()?;
            let workdir = reader.c_string()?;
            let args = reader.c_strings()?;
            let env = reader.c_strings()?;
            if fds.len() < 4 {
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
            let sandbox =
                PreparedSandbox::decode(&mut reader, fds.get(4).map(|fd| fd.as_raw_fd()))?;
            Ok((program, workdir, args, env, sandbox))
        };
        match strings() {
            Ok((program, workdir, args, env, sandbox)) => Ok(Decoded {
                program,
                workdir,
                args,
                env,
                sandbox,
                fds,
            }),
            Err(err) => Err((err, fds)),
        }
    }

    /// In the instance's process (a fresh fork, or a standby): stdio, the
    /// sandbox (what is left of it, for a standby), then exec. Reports why
    /// through the status pipe if it cannot.
    fn become_instance(mut self, from_standby: bool) -> ! {
        // execve(2)'s arrays: pointers into the strings, then a null.
        let pointers = |strings: &[CString]| -> Vec<*const libc::c_char> {
            strings
                .iter()
                .map(|string| string.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        let (argv, envp) = (pointers(&self.args), pointers(&self.env));
        let fd = |index: usize| self.fds[index].as_raw_fd();
        let (stdin, stdout, stderr) = (fd(0), fd(1), fd(2));
        // Its descriptors are the spawner's, not the server's: keep the
        // two it needs off the number the sandbox reserves.
        let mut status = fd(3);
        let sandbox = &mut self.sandbox;
        let failed = (|| -> io::Result<()> {
            status = sandbox.clear_of_reserved(status)?;
            if let Some(network) = sandbox.network_fd() {
                sandbox.clear_of_reserved(network)?;
            }
            // SAFETY: descriptor and process-attribute system calls on this
            // process; the strings and arrays live on until exec.
            unsafe {
                for (from, to) in [(stdin, 0), (stdout, 1), (stderr, 2)] {
                    if libc::dup2(from, to) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if from_standby {
                    sandbox.enter_from_standby()?;
                } else {
                    libc::setpgid(0, 0);
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                    sandbox.enter()?;
                }
                // After the user change, which clears it.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                if libc::chdir(self.workdir.as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::execve(self.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
            }
            Err(io::Error::last_os_error())
        })()
        .err()
        .and_then(|err| err.raw_os_error())
        .unwrap_or(libc::EINVAL);
        // SAFETY: write(2) of a stack value to the status pipe, then _exit.
        unsafe {
            libc::write(status, (&raw const failed).cast(), 4);
            libc::_exit(127)
        }
    }
}

/// Decodes one request and forks its process (the server's child).
pub(super) fn start_one(reader: Reader<'_>, fds: Vec<OwnedFd>) -> io::Result<i32> {
    let request = Decoded::read(reader, fds).map_err(|(err, _)| err)?;
    let pid = fork_for_server()?;
    if pid > 0 {
        return Ok(pid);
    }
    request.become_instance(false)
}
