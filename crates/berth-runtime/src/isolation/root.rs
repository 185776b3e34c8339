//! An instance in a root file system of its own (an image's): the root is
//! bound onto itself and `pivot_root` makes it `/`; the host's root stays
//! reachable at [`HOST`] only while the bind mounts are made, then it is
//! detached, so nothing of the host's file system is left to see.

use std::ffi::{CStr, CString};
use std::io;
use std::path::{Component, Path};

use super::sys::check;

/// Where the host's root is while the instance's mounts are made.
pub(super) const HOST: &CStr = c"/.berth-host";

fn c_path(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other(format!("{} holds a NUL byte", path.display())))
}

/// The host path `source` as reached from inside the new root, before the
/// host's root is detached.
pub(super) fn from_host(source: &Path) -> io::Result<CString> {
    let mut path = HOST.to_bytes().to_vec();
    use std::os::unix::ffi::OsStrExt;
    path.extend_from_slice(source.as_os_str().as_bytes());
    CString::new(path)
        .map_err(|_| io::Error::other(format!("{} holds a NUL byte", source.display())))
}

/// The folders (and, last, the file when `file`) to make for `path`
/// inside the root, parents first, skipping those in `made`.
pub(super) fn mount_point(
    path: &Path,
    file: bool,
    made: &mut Vec<(CString, bool)>,
) -> io::Result<()> {
    let mut at = std::path::PathBuf::from("/");
    let parts: Vec<_> = path
        .components()
        .filter(|part| matches!(part, Component::Normal(_)))
        .collect();
    for (index, part) in parts.iter().enumerate() {
        at.push(part);
        let last_is_file = file && index + 1 == parts.len();
        let text = c_path(&at)?;
        if !made.iter().any(|(known, _)| *known == text) {
            made.push((text, last_is_file));
        }
    }
    Ok(())
}

/// Makes `root` the process's `/`, with the host's root at [`HOST`].
pub(super) fn pivot_into(root: &CStr, put_old: &CStr) -> io::Result<()> {
    // SAFETY: mount, mkdir, pivot_root and chdir with C strings made
    // before the fork; async-signal-safe system calls.
    unsafe {
        check(libc::mount(
            root.as_ptr(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ))?;
        if libc::mkdir(put_old.as_ptr(), 0o700) != 0 && *libc::__errno_location() != libc::EEXIST {
            return Err(io::Error::last_os_error());
        }
        check(libc::syscall(libc::SYS_pivot_root, root.as_ptr(), put_old.as_ptr()) as i32)?;
        check(libc::chdir(c"/".as_ptr()))
    }
}

/// Makes the mount points inside the new root that its image lacks.
pub(super) fn make_mount_points(points: &[(CString, bool)]) -> io::Result<()> {
    for (path, file) in points {
        // SAFETY: mkdir and open with C strings made before the fork.
        unsafe {
            if *file {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                    0o644,
                );
                // A symlink there (ELOOP) is followed by the mount, inside
                // the new root.
                let errno = *libc::__errno_location();
                if fd < 0 && errno != libc::EEXIST && errno != libc::ELOOP {
                    return Err(io::Error::last_os_error());
                }
                if fd >= 0 {
                    libc::close(fd);
                }
            } else if libc::mkdir(path.as_ptr(), 0o755) != 0
                && *libc::__errno_location() != libc::EEXIST
            {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Detaches the host's root: from here on only the instance's is seen.
pub(super) fn detach_host() -> io::Result<()> {
    // SAFETY: umount2 and rmdir with a constant C string.
    unsafe {
        check(libc::umount2(HOST.as_ptr(), libc::MNT_DETACH))?;
        libc::rmdir(HOST.as_ptr());
    }
    Ok(())
}
