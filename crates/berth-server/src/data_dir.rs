//! The data dir's own files: the API token, the server's info file, and
//! the modes that keep berth's data closed to the apps it runs.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use berth_proto::ServerInfo;

use crate::ServerError;

pub(crate) fn data_error(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError {
    let path = path.to_path_buf();
    move |source| ServerError::DataDir { path, source }
}

/// Reads the API token in `data_dir`, creating it (mode 0600) on first start.
pub fn ensure_token(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let token = format!("berth_{}", hex::encode(rand::random::<[u8; 24]>()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    Ok(token)
}

/// Makes the store and log files (and their WAL and shared-memory files)
/// mode 0600, and the directories services and instances pass through
/// 0711: a data dir made by an older berth (or another umask) is closed too.
pub(crate) fn close_data_files(data: &Path) -> std::io::Result<()> {
    for name in ["berth.db", "logs.db"] {
        for suffix in ["", "-wal", "-shm"] {
            let path = data.join(format!("{name}{suffix}"));
            if path.exists() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    for dir in ["postgres", "redis", "volumes", "slugs"] {
        let path = data.join(dir);
        std::fs::create_dir_all(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o711))?;
    }
    // The registry's images are berth's until an instance runs one.
    let registry = data.join("registry");
    std::fs::create_dir_all(&registry)?;
    std::fs::set_permissions(&registry, std::fs::Permissions::from_mode(0o700))?;
    for dir in ["backups", "tmp"] {
        let path = data.join(dir);
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

pub(crate) fn write_server_info(path: &Path, info: &ServerInfo) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, path)
}
