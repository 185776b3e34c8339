//! Signalling an instance's processes, and finding orphans of a previous
//! server to stop.

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
pub(super) fn process_group(pid: u32) -> Option<u32> {
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
