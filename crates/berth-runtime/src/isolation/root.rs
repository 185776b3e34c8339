//! An instance in a root file system of its own (an image's). Its `/` is
//! an overlay: the image's root, shared by every instance and never
//! written, under a small tmpfs of the instance's own, where the mount
//! points its image lacks are made. The host's root is detached right
//! after the pivot, before anything is made inside the new root, so no
//! path in the image — a symlink, a `..`, a working directory — can reach
//! the host's files. Bind sources are taken as detached mount trees
//! (`open_tree`) while the host's root is still there, and moved into
//! place after.

use std::ffi::{CStr, CString};
use std::io;
use std::path::{Component, Path};

use super::sys::check;

/// The most bind mounts an instance with its own root gets.
pub(super) const MAX_BINDS: usize = 32;

/// Where and how the new root is made (host paths, made before the fork).
#[derive(Debug)]
pub(crate) struct RootPlan {
    /// The image's root, the overlay's lower layer.
    pub(super) lower: CString,
    /// A folder beside it the instance's tmpfs is mounted on.
    pub(super) scratch: CString,
    /// In the tmpfs: the overlay's upper and work folders, and where the
    /// overlay is mounted.
    pub(super) upper: CString,
    pub(super) work: CString,
    pub(super) merged: CString,
    /// `lowerdir=…,upperdir=…,workdir=…`.
    pub(super) options: CString,
}

fn c_path(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other(format!("{} holds a NUL byte", path.display())))
}

impl RootPlan {
    /// The plan for `root` (an image's root folder); its scratch folder is
    /// made beside it.
    pub(super) fn new(root: &Path) -> io::Result<RootPlan> {
        use std::os::unix::ffi::OsStrExt;
        let scratch = root
            .parent()
            .ok_or_else(|| io::Error::other("an image root has a parent folder"))?
            .join("mnt");
        std::fs::create_dir_all(&scratch)?;
        let (upper, work) = (scratch.join("upper"), scratch.join("work"));
        let mut options = b"lowerdir=".to_vec();
        for (index, path) in [root, upper.as_path(), work.as_path()]
            .into_iter()
            .enumerate()
        {
            let bytes = path.as_os_str().as_bytes();
            // Commas and colons separate options and layers; backslashes
            // escape them.
            if bytes.iter().any(|b| matches!(b, b',' | b':' | b'\\')) {
                return Err(io::Error::other(format!(
                    "{} holds a comma, colon or backslash, which overlay options cannot carry",
                    path.display()
                )));
            }
            if index > 0 {
                options.extend_from_slice(if index == 1 {
                    b",upperdir="
                } else {
                    b",workdir="
                });
            }
            options.extend_from_slice(bytes);
        }
        if options.len() >= 4000 {
            return Err(io::Error::other(
                "an image root's path is too long for overlay options",
            ));
        }
        Ok(RootPlan {
            lower: c_path(root)?,
            upper: c_path(&upper)?,
            work: c_path(&work)?,
            merged: c_path(&scratch.join("merged"))?,
            scratch: c_path(&scratch)?,
            options: CString::new(options).map_err(io::Error::other)?,
        })
    }

    /// Its strings, in order, for the spawner's protocol.
    pub(super) fn parts(&self) -> [&CStr; 6] {
        [
            &self.lower,
            &self.scratch,
            &self.upper,
            &self.work,
            &self.merged,
            &self.options,
        ]
    }

    /// Made again from [`RootPlan::parts`].
    pub(super) fn from_parts(mut parts: Vec<CString>) -> io::Result<RootPlan> {
        if parts.len() != 6 {
            return Err(io::Error::other("a root plan has six parts"));
        }
        let options = parts.pop().expect("six");
        let merged = parts.pop().expect("six");
        let work = parts.pop().expect("six");
        let upper = parts.pop().expect("six");
        let scratch = parts.pop().expect("six");
        let lower = parts.pop().expect("six");
        Ok(RootPlan {
            lower,
            scratch,
            upper,
            work,
            merged,
            options,
        })
    }
}

/// What a mount point is made for: the bind at that index, or
/// [`WORKDIR`] (made after every bind is in place).
pub(super) type Owner = u32;

/// The owner of the working directory's mount points.
pub(super) const WORKDIR: Owner = u32::MAX;

/// A folder (or a file) to make inside the new root, and for what.
pub(super) type MountPoint = (CString, bool, Owner);

/// The folders (and, last, the file when `file`) to make for `path`
/// inside the new root, parents first, skipping those in `made`; each is
/// made just before `owner`'s bind is moved into place, so one under an
/// earlier volume is made in that volume. A path with `..` is refused: it
/// is the app's spec or the image's, and needs none.
pub(super) fn mount_point(
    path: &Path,
    file: bool,
    owner: Owner,
    made: &mut Vec<MountPoint>,
) -> io::Result<()> {
    if path.components().any(|part| part == Component::ParentDir) {
        return Err(io::Error::other(format!(
            "{} climbs with `..`: a mount destination or working directory names a plain path",
            path.display()
        )));
    }
    let mut at = std::path::PathBuf::from("/");
    let parts: Vec<_> = path
        .components()
        .filter(|part| matches!(part, Component::Normal(_)))
        .collect();
    for (index, part) in parts.iter().enumerate() {
        at.push(part);
        let last_is_file = file && index + 1 == parts.len();
        let text = c_path(&at)?;
        if !made.iter().any(|(known, _, _)| *known == text) {
            made.push((text, last_is_file, owner));
        }
    }
    Ok(())
}

/// `open_tree(2)`: a detached copy of the mount tree at `source`.
fn open_tree(source: &CStr) -> io::Result<i32> {
    // SAFETY: open_tree with a C string made before the fork; an
    // async-signal-safe system call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            libc::OPEN_TREE_CLONE
                | libc::O_CLOEXEC as libc::c_uint
                | libc::AT_RECURSIVE as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd as i32)
}

/// Takes each bind's source (a host path) as a detached tree into `fds`.
pub(super) fn take_sources(
    binds: &[(CString, CString, bool)],
    fds: &mut [i32; MAX_BINDS],
) -> io::Result<()> {
    if binds.len() > MAX_BINDS {
        return Err(io::Error::other(
            "too many bind mounts for an image instance",
        ));
    }
    for (index, (source, _, _)) in binds.iter().enumerate() {
        fds[index] = open_tree(source)?;
    }
    Ok(())
}

/// Makes the overlay and pivots into it; the host's root is detached.
pub(super) fn enter_root(plan: &RootPlan) -> io::Result<()> {
    // SAFETY: mount, mkdir, chdir, pivot_root and umount2 with C strings
    // made before the fork; async-signal-safe system calls.
    unsafe {
        check(libc::mount(
            c"tmpfs".as_ptr(),
            plan.scratch.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=755,size=16m".as_ptr().cast(),
        ))?;
        for dir in [&plan.upper, &plan.work, &plan.merged] {
            check(libc::mkdir(dir.as_ptr(), 0o755))?;
        }
        check(libc::mount(
            c"overlay".as_ptr(),
            plan.merged.as_ptr(),
            c"overlay".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            plan.options.as_ptr().cast(),
        ))?;
        check(libc::chdir(plan.merged.as_ptr()))?;
        check(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as i32)?;
        // The host's root, stacked on top by the pivot, goes now.
        check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
        check(libc::chdir(c"/".as_ptr()))
    }
}

/// Makes the mount points of `owner` inside the new root that its image
/// lacks (in the instance's own upper layer: the image's root is not
/// touched).
pub(super) fn make_mount_points(points: &[MountPoint], owner: Owner) -> io::Result<()> {
    for (path, file, _) in points.iter().filter(|point| point.2 == owner) {
        // SAFETY: mkdir and open with C strings made before the fork.
        unsafe {
            if *file {
                let flags = libc::O_CREAT | libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
                // Read-only: an existing file is not copied up.
                let mut fd = libc::open(path.as_ptr(), flags, 0o644);
                if fd < 0 && *libc::__errno_location() == libc::ELOOP {
                    // A symlink there (perhaps dangling): replaced, in this
                    // instance's own layer, by a file to mount on.
                    check(libc::unlink(path.as_ptr()))?;
                    fd = libc::open(path.as_ptr(), flags, 0o644);
                }
                if fd < 0 && *libc::__errno_location() != libc::EEXIST {
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

/// Moves the detached tree `fd` onto `destination` (a path in the new root).
pub(super) fn move_into_place(fd: i32, destination: &CStr) -> io::Result<()> {
    // SAFETY: move_mount and close on a descriptor of ours, with C strings
    // made before the fork.
    unsafe {
        let moved = libc::syscall(
            libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            destination.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH as libc::c_uint,
        ) as i32;
        libc::close(fd);
        check(moved)
    }
}

/// Makes `/` read-only on a kernel without `mount_setattr` (before 5.12).
pub(super) fn remount_root_read_only() -> io::Result<()> {
    // SAFETY: mount with constant C strings.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        )
    })
}
