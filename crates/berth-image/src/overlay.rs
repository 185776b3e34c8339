//! The kernel calls a layered image needs: overlayfs's whiteouts written
//! into a layer's own folder (a 0/0 character device hides a lower file,
//! `trusted.overlay.opaque` a lower folder's contents), and the read-only
//! overlay that stacks an image's layers into its root.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other(format!("{} holds a NUL byte", path.display())))
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes `path` overlayfs's whiteout: what lower layers have there is
/// hidden.
pub(crate) fn make_whiteout(path: &Path) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    check(unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) })
}

/// Marks `dir` opaque: what lower layers have in it is hidden.
pub(crate) fn mark_opaque(dir: &Path) -> io::Result<()> {
    let dir = c_path(dir)?;
    let value = b"y";
    // SAFETY: both strings are NUL-terminated and outlive the call; the
    // value pointer and length describe `value`.
    check(unsafe {
        libc::setxattr(
            dir.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Mounts `lowers` (top first) as a read-only overlay on `target`. Each
/// folder is named by a descriptor (`/proc/self/fd/N`), so the options stay
/// short whatever the data dir's path and however many layers there are.
pub(crate) fn mount_layers(target: &Path, lowers: &[PathBuf]) -> io::Result<()> {
    let opened: Vec<std::fs::File> = lowers
        .iter()
        .map(|dir| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                .open(dir)
        })
        .collect::<io::Result<_>>()?;
    let lowerdir: Vec<String> = opened
        .iter()
        .map(|file| format!("/proc/self/fd/{}", file.as_raw_fd()))
        .collect();
    let options =
        CString::new(format!("lowerdir={}", lowerdir.join(":"))).map_err(io::Error::other)?;
    if options.as_bytes().len() >= 4000 {
        return Err(io::Error::other("an image has too many layers to stack"));
    }
    let target = c_path(target)?;
    // SAFETY: every string is NUL-terminated and outlives the call; the
    // layer descriptors named in `options` stay open until it returns.
    let mounted = check(unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            options.as_ptr().cast(),
        )
    });
    drop(opened);
    mounted
}

/// Unmounts `target` (lazily: an instance may still be starting on it);
/// nothing mounted there, or no `target` at all, is no error.
pub(crate) fn unmount(target: &Path) -> io::Result<()> {
    let target = c_path(target)?;
    // SAFETY: `target` is NUL-terminated and outlives the call.
    match check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) }) {
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::EINVAL | libc::ENOENT | libc::ENOTDIR)
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Whether something is mounted on `dir` (its device differs from its
/// parent's).
pub(crate) fn is_mounted(dir: &Path) -> bool {
    let (Some(parent), Ok(here)) = (dir.parent(), std::fs::metadata(dir)) else {
        return false;
    };
    std::fs::metadata(parent).is_ok_and(|above| above.dev() != here.dev())
}
