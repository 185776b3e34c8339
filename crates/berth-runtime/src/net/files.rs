//! Files berth writes once for instances to mount read-only (their
//! resolv.conf, their hosts file).

/// Writes `text` where every instance's mount can read it
/// (`/run/berth/PREFIX-HASH.EXTENSION`), named by its content: instances
/// that need the same file share one, and a file never changes under a
/// running instance.
pub fn shared_file(
    prefix: &str,
    extension: &str,
    text: &str,
) -> Result<std::path::PathBuf, String> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::PermissionsExt;
    let dir = std::path::Path::new("/run/berth");
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    let path = dir.join(format!("{prefix}-{:016x}.{extension}", hasher.finish()));
    if path.is_file() {
        return Ok(path);
    }
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)))
        .and_then(|()| {
            let staging = dir.join(format!(
                ".{prefix}-{}-{:08x}",
                std::process::id(),
                staging_number()
            ));
            std::fs::write(&staging, text)?;
            std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o644))?;
            std::fs::rename(&staging, &path)
        });
    written
        .map(|()| path.clone())
        .map_err(|err| format!("cannot write {} for the instances: {err}", path.display()))
}

/// A suffix that keeps two threads of one process from sharing a staging file.
fn staging_number() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
