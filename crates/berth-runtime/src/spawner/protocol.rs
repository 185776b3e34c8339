//! The messages between the server and the spawner: tags, limits, and
//! how strings and lists are written and read.

use std::ffi::{CString, OsString};
use std::io;
use std::path::{Path, PathBuf};

/// Messages between the server and the spawner start with one of these.
pub(super) mod tag {
    /// Server → spawner: start a process (a [`super::Request`] follows).
    pub const START: u32 = 1;
    /// Server → spawner: make a standby. Spawner → server: here is one
    /// (its pid follows, its socket comes as a descriptor).
    pub const STANDBY: u32 = 2;
    /// Spawner → server: the answer to a start (pid and errno follow).
    pub const STARTED: u32 = 3;
}

/// How long after a standby was asked for the spawner makes it, unless
/// asked to start something meanwhile: the fork must not compete with the
/// instance that just took the last one.
pub const STANDBY_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// The largest request (arguments and env) the spawner takes.
pub(super) const MAX_REQUEST: usize = 1 << 20;

/// Descriptors a request carries at most: stdin, stdout, stderr, the exec
/// status pipe, the network namespace.
pub(super) const MAX_FDS: usize = 5;

pub(super) fn put(message: &mut Vec<u8>, bytes: &[u8]) {
    message.extend((bytes.len() as u32).to_ne_bytes());
    message.extend(bytes);
}

pub(super) fn put_list<'a>(message: &mut Vec<u8>, items: impl ExactSizeIterator<Item = &'a [u8]>) {
    message.extend((items.len() as u32).to_ne_bytes());
    for item in items {
        put(message, item);
    }
}

/// Reads what [`put`] and [`put_list`] wrote.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads `message`, from its start.
    pub(crate) fn new(message: &'a [u8]) -> Reader<'a> {
        Reader { rest: message }
    }

    pub(crate) fn u32(&mut self) -> io::Result<u32> {
        let (head, rest) = self
            .rest
            .split_at_checked(4)
            .ok_or_else(|| io::Error::other("a short request"))?;
        self.rest = rest;
        Ok(u32::from_ne_bytes(head.try_into().expect("4 bytes")))
    }

    pub(crate) fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let length = self.u32()? as usize;
        let (head, rest) = self
            .rest
            .split_at_checked(length)
            .ok_or_else(|| io::Error::other("a short request"))?;
        self.rest = rest;
        Ok(head)
    }

    pub(crate) fn c_string(&mut self) -> io::Result<CString> {
        CString::new(self.bytes()?).map_err(|_| io::Error::other("a NUL inside a string"))
    }

    pub(crate) fn c_strings(&mut self) -> io::Result<Vec<CString>> {
        let count = self.u32()?;
        (0..count).map(|_| self.c_string()).collect()
    }
}

/// Finds `program` the way a shell would, in `path` (`:`-separated) unless
/// it names a path itself.
pub(crate) fn resolve(program: &str, path: &str, workdir: &Path) -> PathBuf {
    if program.contains('/') {
        let candidate = Path::new(program);
        return if candidate.is_absolute() {
            candidate.to_path_buf()
        } else {
            workdir.join(candidate)
        };
    }
    for dir in path.split(':').filter(|dir| !dir.is_empty()) {
        let candidate = Path::new(dir).join(program);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return candidate;
            }
        }
    }
    PathBuf::from(program)
}

/// [`resolve`] for a process whose `/` will be `root` (an image's): the
/// program is looked for in `root`, symlinks followed as they will be
/// once `root` is `/`, and named as the process will see it.
pub(crate) fn resolve_in_root(root: &Path, program: &str, path: &str, workdir: &Path) -> PathBuf {
    if program.contains('/') {
        return if Path::new(program).is_absolute() {
            PathBuf::from(program)
        } else {
            workdir.join(program)
        };
    }
    for dir in path.split(':').filter(|dir| dir.starts_with('/')) {
        let inside = Path::new(dir).join(program);
        if is_executable_in_root(root, &inside) {
            return inside;
        }
    }
    PathBuf::from(program)
}

/// The names and `..`s of `path`, in order, to walk by hand.
fn walk(path: &Path) -> std::collections::VecDeque<std::ffi::OsString> {
    path.components()
        .filter_map(|part| match part {
            std::path::Component::Normal(name) => Some(name.to_os_string()),
            std::path::Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// Whether `inside` (an absolute path) names an executable file when
/// `root` is `/`: each component is looked at without following it, and
/// a symlink is followed by hand, absolute ones from `root`.
fn is_executable_in_root(root: &Path, inside: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mut pending = walk(inside);
    let mut at: Vec<std::ffi::OsString> = Vec::new();
    let mut followed = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            at.pop();
            continue;
        }
        let host: PathBuf = at
            .iter()
            .fold(root.to_path_buf(), |path, p| path.join(p))
            .join(&part);
        let Ok(meta) = std::fs::symlink_metadata(&host) else {
            return false;
        };
        if meta.file_type().is_symlink() {
            followed += 1;
            let Ok(target) = std::fs::read_link(&host) else {
                return false;
            };
            if followed > 40 {
                return false;
            }
            if target.is_absolute() {
                at.clear();
            }
            let mut next = walk(&target);
            next.extend(pending.drain(..));
            pending = next;
        } else if pending.is_empty() {
            return meta.is_file() && meta.permissions().mode() & 0o111 != 0;
        } else {
            at.push(part);
        }
    }
    false
}

/// `KEY=value` for the env of a request.
pub(crate) fn env_entry(key: &str, value: &std::ffi::OsStr) -> OsString {
    let mut entry = OsString::from(key);
    entry.push("=");
    entry.push(value);
    entry
}
