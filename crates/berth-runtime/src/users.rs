//! User ids for apps, allocated host-wide: every berth server on a machine
//! takes them from one registry (`/var/lib/berth/uids`), under a file lock,
//! and an id is never handed out twice — not to another server's app, and
//! not to a new app after one is destroyed (files the old one left under
//! its id, in `/var/tmp` say, would be the new one's). What a destroyed
//! app left in the host's shared directories is removed.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

/// The first id an app gets.
pub const FIRST_APP_UID: u32 = 200_000;
/// The last id an app can get (below the 32-bit ids user namespaces use).
pub const LAST_APP_UID: u32 = 1_999_999_999;

/// The host's registry of app user ids.
#[derive(Debug, Clone)]
pub struct UidRegistry {
    path: PathBuf,
}

impl UidRegistry {
    /// The machine's registry, `/var/lib/berth/uids`.
    pub fn host() -> UidRegistry {
        UidRegistry::at(PathBuf::from("/var/lib/berth/uids"))
    }

    /// A registry kept in `path` (for tests).
    pub fn at(path: PathBuf) -> UidRegistry {
        UidRegistry { path }
    }

    /// A new id for `owner` (a server's data dir and an app's name): one
    /// above every id handed out on this machine so far.
    pub fn allocate(&self, owner: &str) -> io::Result<u32> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)?;
        // Held until the new line is on disk: two servers never take one id.
        file.lock()?;
        let next = highest(&file)?.map_or(FIRST_APP_UID, |uid| uid + 1);
        if next > LAST_APP_UID {
            return Err(io::Error::other("every app user id has been handed out"));
        }
        let owner: String = owner.chars().filter(|c| !c.is_control()).collect();
        writeln!(file, "{next} {owner}")?;
        file.sync_all()?;
        file.unlock()?;
        Ok(next)
    }
}

/// The highest id in the registry, if any.
fn highest(file: &File) -> io::Result<Option<u32>> {
    let mut highest = None;
    for line in io::BufReader::new(file).lines() {
        let line = line?;
        if let Some(uid) = line
            .split_whitespace()
            .next()
            .and_then(|uid| uid.parse::<u32>().ok())
        {
            highest = highest.max(Some(uid));
        }
    }
    Ok(highest)
}

/// Removes what user `uid` owns directly under each of `dirs` (the host's
/// shared scratch places, such as `/var/tmp`): a destroyed app's leftovers.
/// Returns how many entries went.
pub fn remove_files_of(uid: u32, dirs: &[&Path]) -> usize {
    use std::os::unix::fs::MetadataExt;
    let mut removed = 0;
    for dir in dirs {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.uid() != uid {
                continue;
            }
            let gone = if meta.is_dir() {
                std::fs::remove_dir_all(entry.path())
            } else {
                std::fs::remove_file(entry.path())
            };
            if gone.is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_servers_and_never_handed_out_twice() {
        let dir = tempfile::tempdir().unwrap();
        let registry = UidRegistry::at(dir.path().join("uids"));
        let other_server = UidRegistry::at(dir.path().join("uids"));
        let first = registry.allocate("/data/a shop").unwrap();
        let second = other_server.allocate("/data/b shop").unwrap();
        let third = registry.allocate("/data/a shop").unwrap();
        assert_eq!(
            [first, second, third],
            [FIRST_APP_UID, FIRST_APP_UID + 1, FIRST_APP_UID + 2]
        );
        // Taken from many threads at once, every id is still unique.
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let registry = registry.clone();
                std::thread::spawn(move || registry.allocate(&format!("/data/t app{n}")).unwrap())
            })
            .collect();
        let mut ids: Vec<u32> = handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 8);
        assert!(ids[0] > third);
    }
}
