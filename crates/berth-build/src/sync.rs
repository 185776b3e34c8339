//! Syncing an upload into an app's persistent build workspace, file by
//! file, so that cargo sees unchanged files unchanged.

use std::fs;
use std::io;
use std::path::Path;

/// Makes `dest` hold exactly the tree in `src`: files whose content changed
/// are rewritten, new ones added, missing ones removed. Unchanged files keep
/// their modification time, which is what lets cargo rebuild incrementally.
pub fn sync_tree(src: &Path, dest: &Path) -> io::Result<()> {
    // `dest` may belong to the app's user, whose build could have swapped
    // it for a link to a folder of the host's: never write through one.
    if fs::symlink_metadata(dest).is_ok_and(|meta| !meta.is_dir()) {
        remove_any(dest)?;
    }
    fs::create_dir_all(dest)?;
    let mut wanted = std::collections::HashSet::new();
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        wanted.insert(name.clone());
        let from = entry.path();
        let to = dest.join(&name);
        let kind = entry.file_type()?;
        let existing = fs::symlink_metadata(&to).ok();
        if kind.is_dir() {
            if existing.as_ref().is_some_and(|meta| !meta.is_dir()) {
                fs::remove_file(&to)?;
            }
            sync_tree(&from, &to)?;
        } else if kind.is_symlink() {
            let link = fs::read_link(&from)?;
            if fs::read_link(&to).ok().as_ref() != Some(&link) {
                remove_any(&to)?;
                std::os::unix::fs::symlink(link, &to)?;
            }
        } else {
            let same = match &existing {
                Some(meta) if meta.is_file() && meta.len() == entry.metadata()?.len() => {
                    fs::read(&from)? == fs::read(&to)?
                }
                _ => false,
            };
            if !same {
                if existing.is_some() {
                    remove_any(&to)?;
                }
                fs::copy(&from, &to)?;
            }
        }
    }
    for entry in fs::read_dir(dest)? {
        let entry = entry?;
        if !wanted.contains(&entry.file_name()) {
            remove_any(&entry.path())?;
        }
    }
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_swapped_for_a_link_is_replaced_not_written_through() {
        let src = tempfile::tempdir().unwrap();
        let place = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        fs::write(src.path().join("main.rs"), "fn main() {}").unwrap();
        fs::write(elsewhere.path().join("precious"), "keep").unwrap();
        let dest = place.path().join("src");
        std::os::unix::fs::symlink(elsewhere.path(), &dest).unwrap();
        sync_tree(src.path(), &dest).unwrap();
        assert!(fs::symlink_metadata(&dest).unwrap().is_dir());
        assert!(dest.join("main.rs").exists());
        assert_eq!(
            fs::read_to_string(elsewhere.path().join("precious")).unwrap(),
            "keep"
        );
        assert!(!elsewhere.path().join("main.rs").exists());
    }

    #[test]
    fn sync_keeps_unchanged_files_untouched() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        fs::write(src.path().join("same.rs"), "same").unwrap();
        fs::write(src.path().join("changed.rs"), "v1").unwrap();
        fs::write(src.path().join("gone.rs"), "bye").unwrap();
        sync_tree(src.path(), dest.path()).unwrap();
        let before = fs::metadata(dest.path().join("same.rs"))
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(src.path().join("changed.rs"), "v2").unwrap();
        fs::remove_file(src.path().join("gone.rs")).unwrap();
        sync_tree(src.path(), dest.path()).unwrap();
        let after = fs::metadata(dest.path().join("same.rs"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after);
        assert_eq!(
            fs::read_to_string(dest.path().join("changed.rs")).unwrap(),
            "v2"
        );
        assert!(!dest.path().join("gone.rs").exists());
    }
}
