//! The one module allowed `unsafe`: system calls made around a child
//! process (parent-death signal, signalling a process group, a private
//! mount namespace with bind mounts).
//!
//! Each block below calls a libc function with plain integer arguments or
//! with C strings made before the fork; none touches memory the child
//! shares with other threads.
#![allow(unsafe_code)]

use std::ffi::CString;
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

/// Bind mounts as C strings, made in the parent: a pre-exec hook must not
/// allocate.
pub(crate) struct PreparedBinds {
    pairs: Vec<(CString, CString)>,
}

impl PreparedBinds {
    /// Prepares `binds`, creating each destination (and the source) if missing.
    pub(crate) fn prepare(binds: &[BindMount]) -> io::Result<PreparedBinds> {
        let mut pairs = Vec::with_capacity(binds.len());
        for bind in binds {
            std::fs::create_dir_all(&bind.source)?;
            std::fs::create_dir_all(&bind.destination)?;
            let source = CString::new(bind.source.as_os_str().as_bytes())
                .map_err(|_| io::Error::other("a mount source holds a NUL byte"))?;
            let destination = CString::new(bind.destination.as_os_str().as_bytes())
                .map_err(|_| io::Error::other("a mount destination holds a NUL byte"))?;
            pairs.push((source, destination));
        }
        Ok(PreparedBinds { pairs })
    }

    /// In the child, before exec: a mount namespace of its own in which
    /// mounts do not propagate back to the host, then each bind mount.
    pub(crate) fn enter(&self) -> io::Result<()> {
        if self.pairs.is_empty() {
            return Ok(());
        }
        // SAFETY: unshare and mount are system calls, async-signal-safe; the
        // strings were made before the fork and live as long as `self`.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (source, destination) in &self.pairs {
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
