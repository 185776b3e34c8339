//! The bytes each app's volumes hold, walked now and then (a walk of a
//! large volume is not free, so it is not done at every flush).

use std::path::Path;

/// Entries a walk visits at most per app: past it, the count so far stands.
const MAX_ENTRIES: usize = 1_000_000;

/// Bytes of regular files under `dir` (symbolic links not followed), with
/// at most [`MAX_ENTRIES`] entries visited.
pub(crate) fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut visited = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            visited += 1;
            if visited > MAX_ENTRIES {
                return total;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                total += entry.metadata().map_or(0, |meta| meta.len());
            }
        }
    }
    total
}

/// Each app's volume bytes: `(app, bytes)` for every folder of `volumes`.
pub(crate) fn volume_bytes(volumes: &Path) -> Vec<(String, u64)> {
    let Ok(apps) = std::fs::read_dir(volumes) else {
        return Vec::new();
    };
    apps.flatten()
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                bytes_under(&entry.path()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn volume_bytes_add_files_in_folders_per_app() {
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("shop/files/deep");
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join("a"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("shop/files/b"), vec![0u8; 24]).unwrap();
        std::fs::create_dir_all(dir.path().join("blog")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("shop/etc")).unwrap();
        let mut found = super::volume_bytes(dir.path());
        found.sort();
        assert_eq!(found, vec![("blog".into(), 0), ("shop".into(), 1024)]);
    }
}
