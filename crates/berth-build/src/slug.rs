//! Release slugs: a source tree plus its built binaries, stored under the
//! digest of their content, so the same content is stored once and a rollback
//! only has to point at a digest that is already there.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where binaries live inside a slug; it is put first on `PATH`.
pub const SLUG_BIN_DIR: &str = ".berth/bin";

/// What can go wrong storing a slug.
#[derive(Debug, thiserror::Error)]
#[error("cannot store the release slug: {context}")]
pub struct SlugError {
    context: String,
    #[source]
    source: io::Error,
}

fn slug_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> SlugError {
    let context = context.into();
    move |source| SlugError { context, source }
}

/// The slug directory of the data dir.
#[derive(Debug, Clone)]
pub struct SlugStore {
    root: PathBuf,
}

impl SlugStore {
    /// A store of slugs under `root`.
    pub fn new(root: PathBuf) -> Self {
        SlugStore { root }
    }

    /// The directory of the slug with `digest`.
    pub fn path(&self, digest: &str) -> PathBuf {
        self.root.join(digest)
    }

    /// Whether the slug with `digest` is stored.
    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_dir()
    }

    /// Stores `source` (without `target/`, `.git/` and `.berth/`) plus
    /// `binaries` as a slug of `app` and returns its digest. The app's name
    /// is part of the slug (`.berth/app`), so two apps never share one:
    /// each app's slug can belong to that app's own user.
    ///
    /// `.berth/` is berth's alone: the source's own is left out, so a build
    /// that planted links there (`.berth -> /usr/local`) cannot have the
    /// server, as root, write binaries or the app's name through them.
    pub fn store(
        &self,
        app: &str,
        source: &Path,
        binaries: &[(String, PathBuf)],
    ) -> Result<String, SlugError> {
        self.store_with(app, source, binaries, &[])
    }

    /// [`SlugStore::store`], with `berth_files` (name, bytes) written into
    /// the slug's `.berth/` too.
    pub fn store_with(
        &self,
        app: &str,
        source: &Path,
        binaries: &[(String, PathBuf)],
        berth_files: &[(&str, &[u8])],
    ) -> Result<String, SlugError> {
        fs::create_dir_all(&self.root)
            .map_err(slug_error(format!("create {}", self.root.display())))?;
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(&self.root)
            .map_err(slug_error("create a staging directory"))?;
        copy_tree(source, staging.path(), true).map_err(slug_error("copy the source tree"))?;
        // Made here, new: nothing in them can be a link.
        let berth_dir = staging.path().join(".berth");
        fs::create_dir(&berth_dir).map_err(slug_error("create .berth"))?;
        let bin_dir = staging.path().join(SLUG_BIN_DIR);
        fs::create_dir(&bin_dir).map_err(slug_error("create the bin directory"))?;
        for (name, path) in binaries {
            if name.contains('/') || name.starts_with('.') {
                return Err(SlugError {
                    context: format!("copy binary {name}"),
                    source: io::Error::other("not a plain file name"),
                });
            }
            copy_new(path, &bin_dir.join(name))
                .map_err(slug_error(format!("copy binary {name}")))?;
        }
        write_new(&berth_dir.join("app"), app.as_bytes())
            .map_err(slug_error("write the app's name"))?;
        for (name, bytes) in berth_files {
            write_new(&berth_dir.join(name), bytes)
                .map_err(slug_error(format!("write .berth/{name}")))?;
        }
        let digest = digest_tree(staging.path()).map_err(slug_error("hash the slug"))?;
        let final_path = self.path(&digest);
        if final_path.is_dir() {
            return Ok(digest);
        }
        let staged = staging.keep();
        if let Err(err) = fs::rename(&staged, &final_path) {
            let _ = fs::remove_dir_all(&staged);
            if !final_path.is_dir() {
                return Err(SlugError {
                    context: format!("move the slug to {}", final_path.display()),
                    source: err,
                });
            }
        }
        Ok(digest)
    }
}

impl SlugStore {
    /// Deletes every slug not in `keep` that is older than `grace` (a slug
    /// stored moments ago may belong to a release about to be made), and
    /// staging folders a crash left. Returns the bytes freed.
    pub fn collect(
        &self,
        keep: &std::collections::HashSet<String>,
        grace: std::time::Duration,
    ) -> u64 {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return 0;
        };
        let mut freed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) {
                continue;
            }
            let old_enough = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|age| age >= grace);
            if !old_enough || !entry.path().is_dir() {
                continue;
            }
            let size = tree_size(&entry.path());
            if fs::remove_dir_all(entry.path()).is_ok() {
                freed += size;
            }
        }
        freed
    }
}

/// Bytes of the files under `dir`.
fn tree_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => tree_size(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |meta| meta.len()),
            _ => 0,
        })
        .sum()
}

/// A new file at `path` (never through a link) holding `bytes`.
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .open(path)?
        .write_all(bytes)
}

/// Copies the file `from` to a new file `to`, with its mode.
fn copy_new(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut source = fs::File::open(from)?;
    let mode = source.metadata()?.permissions();
    let mut dest = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)?;
    io::copy(&mut source, &mut dest)?;
    dest.set_permissions(mode)
}

/// Copies directories, links (as links) and regular files; a FIFO, socket
/// or device a build left in the tree is not copied (reading a FIFO would
/// hang the server). At the top (`top`), `.berth` is left out: it is
/// berth's (see [`SlugStore::store`]).
fn copy_tree(from: &Path, to: &Path, top: bool) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "target" || name == ".git" || (top && name == ".berth") {
            continue;
        }
        let kind = entry.file_type()?;
        let dest = to.join(&name);
        if kind.is_dir() {
            copy_tree(&entry.path(), &dest, false)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &dest)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// Hashes a tree: every relative path, file type, executable bit and content, in sorted order.
pub fn digest_tree(root: &Path) -> io::Result<String> {
    let mut paths = Vec::new();
    collect(root, root, &mut paths)?;
    paths.sort();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    for relative in paths {
        let path = root.join(&relative);
        let meta = fs::symlink_metadata(&path)?;
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        if meta.file_type().is_symlink() {
            hasher.update(b"L");
            hasher.update(fs::read_link(&path)?.to_string_lossy().as_bytes());
        } else {
            use std::os::unix::fs::PermissionsExt;
            hasher.update(if meta.permissions().mode() & 0o111 != 0 {
                b"X"
            } else {
                b"F"
            });
            let mut file = fs::File::open(&path)?;
            loop {
                let read = file.read(&mut buffer)?;
                if read == 0 {
                    break;
                }
                hasher.update(&buffer[..read]);
            }
        }
        hasher.update([0]);
    }
    Ok(hex::encode(&hasher.finalize()[..16]))
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(root, &path, out)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            out.push(relative.to_path_buf());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn collect_deletes_old_slugs_not_kept_and_leaves_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let slugs = SlugStore::new(root.path().to_path_buf());
        for name in ["kept", "stale"] {
            std::fs::create_dir_all(root.path().join(name).join(".berth")).unwrap();
            std::fs::write(root.path().join(name).join(".berth/app"), "x".repeat(1000)).unwrap();
        }
        let keep = std::collections::HashSet::from(["kept".to_string()]);
        // Too young to go.
        assert_eq!(
            slugs.collect(&keep, std::time::Duration::from_secs(3600)),
            0
        );
        assert!(root.path().join("stale").exists());
        assert_eq!(slugs.collect(&keep, std::time::Duration::ZERO), 1000);
        assert!(!root.path().join("stale").exists());
        assert!(root.path().join("kept/.berth/app").exists());
    }

    use super::*;

    #[test]
    fn the_same_content_is_one_slug() {
        let data = tempfile::tempdir().unwrap();
        let store = SlugStore::new(data.path().join("slugs"));
        let source = tempfile::tempdir().unwrap();
        fs::write(source.path().join("main.rs"), "fn main() {}").unwrap();
        fs::create_dir(source.path().join("target")).unwrap();
        fs::write(source.path().join("target/junk"), "x").unwrap();
        let binary = source.path().join("bin-out");
        fs::write(&binary, "ELF").unwrap();

        let first = store
            .store("hello", source.path(), &[("hello".into(), binary.clone())])
            .unwrap();
        let second = store
            .store("hello", source.path(), &[("hello".into(), binary.clone())])
            .unwrap();
        assert_eq!(first, second);
        let slug = store.path(&first);
        assert_eq!(
            fs::read_to_string(slug.join(".berth/bin/hello")).unwrap(),
            "ELF"
        );
        assert!(!slug.join("target").exists());

        fs::write(source.path().join("main.rs"), "fn main() { 1; }").unwrap();
        let other_app = store
            .store("other", source.path(), &[("hello".into(), binary.clone())])
            .unwrap();
        assert_ne!(first, other_app, "apps never share a slug");
        let third = store
            .store("hello", source.path(), &[("hello".into(), binary)])
            .unwrap();
        assert_ne!(first, third);
        assert!(store.contains(&first) && store.contains(&third));
    }

    #[test]
    fn a_berth_folder_the_build_planted_is_left_out_and_never_written_through() {
        let data = tempfile::tempdir().unwrap();
        let store = SlugStore::new(data.path().join("slugs"));
        let source = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(source.path().join("main.rs"), "fn main() {}").unwrap();
        // `.berth` a link out of the tree, as a build script could leave it.
        std::os::unix::fs::symlink(outside.path(), source.path().join(".berth")).unwrap();
        let binary = source.path().join("bin-out");
        fs::write(&binary, "ELF").unwrap();
        let digest = store
            .store_with(
                "hello",
                source.path(),
                &[("run-parts".into(), binary.clone())],
                &[("image.json", b"{}")],
            )
            .unwrap();
        assert_eq!(
            fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing written outside"
        );
        let slug = store.path(&digest);
        assert!(fs::symlink_metadata(slug.join(".berth")).unwrap().is_dir());
        assert_eq!(
            fs::read_to_string(slug.join(".berth/bin/run-parts")).unwrap(),
            "ELF"
        );
        assert_eq!(
            fs::read_to_string(slug.join(".berth/app")).unwrap(),
            "hello"
        );
        assert_eq!(
            fs::read_to_string(slug.join(".berth/image.json")).unwrap(),
            "{}"
        );
        // A real `.berth` folder of the source's, with a link for `app`: left out too.
        fs::remove_file(source.path().join(".berth")).unwrap();
        fs::create_dir(source.path().join(".berth")).unwrap();
        let victim = outside.path().join("passwd");
        fs::write(&victim, "root:x:0:0").unwrap();
        std::os::unix::fs::symlink(&victim, source.path().join(".berth/app")).unwrap();
        store.store("hello", source.path(), &[]).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "root:x:0:0");
        // A binary's name is a file name, never a path.
        assert!(
            store
                .store("hello", source.path(), &[("../x".into(), binary)])
                .is_err()
        );
    }
}
