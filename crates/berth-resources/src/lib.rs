//! Managed services berth runs for apps on the same machine.
//!
//! - [`postgres`]: one PostgreSQL cluster in the data dir, a database and
//!   role (with a generated password) per app, backups with pg_dump.
//! - [`redis`]: one Redis server per app, password-protected, with a memory
//!   limit and an append-only file in the data dir.
//! - [`supervise`]: keeps those server processes running, restarting them
//!   with backoff when they die, stopping them cleanly on shutdown.
//!
//! Everything listens on 127.0.0.1 only.

pub mod postgres;
pub mod redis;
pub mod supervise;

use std::path::{Path, PathBuf};

/// What can go wrong with a resource.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A program the resource needs is not installed.
    #[error("{what} is not installed: {hint}")]
    NotInstalled {
        /// What is missing.
        what: String,
        /// How to get it.
        hint: String,
    },
    /// A file or directory could not be prepared.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A command the resource runs failed.
    #[error("{command} failed: {output}")]
    Command {
        /// The command.
        command: String,
        /// What it said.
        output: String,
    },
    /// The server did not come up.
    #[error("{what} did not start: {reason}")]
    Start {
        /// Which server.
        what: String,
        /// Why, with its last log lines.
        reason: String,
    },
    /// A database statement failed.
    #[error("PostgreSQL: {0}")]
    Sql(#[from] tokio_postgres::Error),
    /// Something else, said plainly.
    #[error("{0}")]
    Other(String),
}

pub(crate) fn io_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ResourceError {
    let path = path.to_path_buf();
    move |source| ResourceError::Io {
        action,
        path,
        source,
    }
}

/// A free TCP port on 127.0.0.1, preferring `wanted` if it is free.
pub fn free_port(wanted: Option<u16>) -> std::io::Result<u16> {
    if let Some(port) = wanted
        && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    {
        return Ok(port);
    }
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// The user a service runs as: when berth runs as root, the service's own
/// system user (`postgres`, `redis`) because PostgreSQL refuses root and
/// nothing else should run as root needlessly; otherwise berth's own user.
pub fn service_user(name: &str) -> Result<Option<berth_runtime::SystemUser>, ResourceError> {
    if !berth_runtime::can_isolate() {
        return Ok(None);
    }
    berth_runtime::system_user(name)
        .map(Some)
        .ok_or_else(|| ResourceError::NotInstalled {
            what: format!("the system user `{name}`"),
            hint: format!(
                "berth runs as root and runs this service as `{name}`; install the Debian package that creates it, or `useradd --system {name}`"
            ),
        })
}

/// Gives `user` ownership of `path` (recursively), when there is a user.
pub(crate) fn hand_over(
    path: &Path,
    user: Option<&berth_runtime::SystemUser>,
) -> Result<(), ResourceError> {
    let Some(user) = user else { return Ok(()) };
    fn walk(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        if path.is_dir() && !path.is_symlink() {
            for entry in std::fs::read_dir(path)? {
                walk(&entry?.path(), uid, gid)?;
            }
        }
        Ok(())
    }
    walk(path, user.uid, user.gid).map_err(io_error("cannot hand over", path))
}

/// The last `count` lines of a log file, for error messages.
pub fn tail(path: &Path, count: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// Finds `program` on `PATH`.
pub(crate) fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Checks that a service running as `user` can pass through every
/// directory above `path`, so it fails here with the reason rather than
/// later with a permission error in its own log.
pub(crate) fn check_reachable(
    path: &Path,
    user: Option<&berth_runtime::SystemUser>,
) -> Result<(), ResourceError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(user) = user else { return Ok(()) };
    for dir in path.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = meta.permissions().mode();
        let passable = mode & 0o001 != 0
            || (meta.uid() == user.uid && mode & 0o100 != 0)
            || (meta.gid() == user.gid && mode & 0o010 != 0);
        if !passable {
            return Err(ResourceError::Other(format!(
                "this service runs as the system user `{}`, which cannot pass through {} (mode {:o}); \
                 use a data dir it can reach (as root the default is /var/lib/berth), or `chmod o+x {}`",
                user.name,
                dir.display(),
                mode & 0o777,
                dir.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    /// A data dir the services' own users can traverse, as a server
    /// running as root makes its data dir (mode 0711).
    pub(crate) fn data_dir() -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        if berth_runtime::can_isolate() {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        }
        dir
    }
}
