//! Opening a file inside a folder an app controls, from a process that
//! does not run as the app (the router serves `[[statics]]` as root).
//!
//! The app owns its slug, so any component under it may be swapped for a
//! symbolic link at any moment. `openat2` with `RESOLVE_BENEATH` and
//! `RESOLVE_NO_SYMLINKS` resolves the whole path in the kernel, in one step,
//! refusing `..` that climbs out and every link: there is no gap between a
//! check and the open for a swap to slip into.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Opens `relative` under `root` for reading, following no symbolic link
/// (not even in `root` itself) and never leaving `root`. The open never
/// blocks: a FIFO (or a device) the app left there opens at once, for the
/// caller to refuse as not a regular file.
pub fn open_beneath(root: &Path, relative: &Path) -> io::Result<File> {
    open_under(
        root,
        relative,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// Opens `relative` under `root` for reading as if `root` were `/`: links
/// inside the tree are followed (a workspace's `migrations ->
/// crates/db/migrations`), but none, absolute or with `..`, leads out of
/// it. `root` itself is not followed if it is a link.
pub fn open_in_root(root: &Path, relative: &Path) -> io::Result<File> {
    open_under(
        root,
        relative,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
}

fn open_under(root: &Path, relative: &Path, resolve: u64) -> io::Result<File> {
    let root = CString::new(root.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let relative = if relative.as_os_str().is_empty() {
        CString::new(".").expect("no NUL")
    } else {
        CString::new(relative.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?
    };
    // SAFETY: open(2) and openat2(2) with C strings that outlive the calls
    // and a zeroed, filled-in `open_how`; the descriptors are owned below.
    unsafe {
        let dir = libc::open(
            root.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        );
        if dir < 0 {
            return Err(io::Error::last_os_error());
        }
        let dir = std::os::fd::OwnedFd::from_raw_fd(dir);
        let mut how: libc::open_how = std::mem::zeroed();
        // With links refused anywhere, the last component too; in the
        // root, a last link is followed like any other (within it).
        let last = if resolve & libc::RESOLVE_NO_SYMLINKS != 0 {
            libc::O_NOFOLLOW
        } else {
            0
        };
        how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | last) as u64;
        how.resolve = resolve;
        let fd = libc::syscall(
            libc::SYS_openat2,
            std::os::fd::AsRawFd::as_raw_fd(&dir),
            relative.as_ptr(),
            &raw const how,
            std::mem::size_of::<libc::open_how>(),
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(File::from_raw_fd(fd as i32))
    }
}

/// The bytes of the regular file `relative` under `root` (opened as
/// [`open_in_root`] does), refused past `max` bytes: for files of an app's
/// tree that a process not running as the app reads whole.
pub fn read_in_root(root: &Path, relative: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let file = open_in_root(root, relative)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", relative.display()),
        ));
    }
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is over {max} bytes", relative.display()),
        ));
    }
    Ok(bytes)
}

/// The names in the folder `relative` under `root` (opened as
/// [`open_in_root`] does), sorted.
pub fn list_in_root(root: &Path, relative: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let folder = open_in_root(root, relative)?;
    if !folder.metadata()?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a folder", relative.display()),
        ));
    }
    // The folder as this process holds it open, whatever its path.
    let held = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&folder));
    let mut names = std::fs::read_dir(held)?
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_beneath_open_and_links_or_climbs_do_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("public/css")).unwrap();
        std::fs::write(dir.path().join("public/css/a.css"), "body{}").unwrap();
        std::fs::write(dir.path().join("secret"), "no").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), dir.path().join("public/link"))
            .unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("rooted")).unwrap();
        let root = dir.path().join("public");
        let text =
            std::io::read_to_string(open_beneath(&root, Path::new("css/a.css")).unwrap()).unwrap();
        assert_eq!(text, "body{}");
        assert!(open_beneath(&root, Path::new("link")).is_err());
        assert!(open_beneath(&root, Path::new("../secret")).is_err());
        assert!(open_beneath(&dir.path().join("rooted"), Path::new("etc/passwd")).is_err());
        assert!(open_beneath(dir.path(), Path::new("rooted/etc/passwd")).is_err());
    }

    #[test]
    fn reading_in_root_follows_links_inside_and_none_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("app");
        std::fs::create_dir_all(root.join("crates/db/migrations")).unwrap();
        std::fs::write(root.join("crates/db/migrations/1_a.sql"), "SELECT 1;").unwrap();
        std::os::unix::fs::symlink("crates/db/migrations", root.join("migrations")).unwrap();
        std::fs::write(root.join("small"), "1.90").unwrap();
        std::fs::write(root.join("big"), "x".repeat(100)).unwrap();
        std::fs::write(dir.path().join("secret"), "token").unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("zero")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("up")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("absolute")).unwrap();
        let read = |name: &str| read_in_root(&root, Path::new(name), 10);
        assert_eq!(read("small").unwrap(), b"1.90");
        assert_eq!(read("migrations/1_a.sql").unwrap(), b"SELECT 1;");
        assert!(read("big").is_err());
        assert!(read("crates").is_err(), "a folder");
        // Out of the tree: /dev/zero is the tree's own /dev/zero (none),
        // `..` stops at its root, and so does an absolute link.
        assert!(read("zero").is_err());
        assert!(read("up").is_err());
        assert!(read("absolute").is_err());
        assert_eq!(
            list_in_root(&root, Path::new("migrations")).unwrap(),
            ["1_a.sql"]
        );
    }
}
