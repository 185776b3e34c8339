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
