//! The one module allowed `unsafe`: system calls made around a child
//! process (parent-death signal, signalling a process group).
//!
//! Each block below calls a libc function with plain integer arguments; none
//! touches memory owned by Rust.
#![allow(unsafe_code)]

use std::io;

/// Makes the calling (child, pre-exec) process receive SIGKILL when the thread
/// that spawned it dies, so instances never outlive a crashed server.
pub(crate) fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers and is async-signal-safe,
    // which is what a pre_exec hook requires.
    let result = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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

/// Kills the group of `pid` if its environment says it is instance `instance_id`.
pub(crate) fn kill_orphan(pid: u32, instance_id: &str) -> bool {
    let environ = match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(environ) => environ,
        Err(_) => return false,
    };
    let marker = format!("BERTH_INSTANCE={instance_id}");
    let is_ours = environ
        .split(|byte| *byte == 0)
        .any(|entry| entry == marker.as_bytes());
    if is_ours {
        signal_group(pid, libc::SIGKILL);
    }
    is_ours
}
