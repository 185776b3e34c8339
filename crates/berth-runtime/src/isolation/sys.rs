//! Single system calls the sandbox is made of: parent-death signals,
//! the effective user, the umask, and private namespaces.

use std::io;

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

pub(super) fn check(result: i32) -> io::Result<()> {
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

/// Sets this process's umask (files it creates from now on get at most
/// `0o777 & !mask`).
pub(crate) fn set_umask(mask: u32) {
    // SAFETY: umask(2) takes an integer and cannot fail.
    unsafe {
        libc::umask(mask as libc::mode_t);
    }
}

/// New namespaces (`flags` for unshare(2)) of which the mount namespace
/// does not propagate mounts back to the host.
pub(super) fn unshare_private(flags: i32) -> io::Result<()> {
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

/// Bytes an unprivileged user may still write on the file system that holds
/// `path` (statvfs's available blocks).
pub(crate) fn free_disk_bytes(path: &std::path::Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: statvfs(3) fills the zeroed struct we own; the C string
    // outlives the call.
    unsafe {
        let mut stats: libc::statvfs = std::mem::zeroed();
        check(libc::statvfs(path.as_ptr(), &mut stats))?;
        // Both are u64 here, narrower on some 32-bit targets.
        #[allow(clippy::useless_conversion)]
        Ok(u64::from(stats.f_bavail).saturating_mul(u64::from(stats.f_frsize)))
    }
}
