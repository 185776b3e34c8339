//! Packing an app folder into an upload (on the client): a zstd-compressed
//! tarball of what git would ship.

use std::io;
use std::path::{Path, PathBuf};

use crate::source::{SourceError, io_error};

/// Packs `dir` into a zstd-compressed tarball: files that `.gitignore` (and
/// `.ignore`) exclude are left out — unless git tracks them (in a git work
/// tree, a committed `Cargo.lock` stays, whatever an ignore rule says) — as
/// are `target/` and `.git/`.
pub fn pack(dir: &Path) -> Result<Vec<u8>, SourceError> {
    pack_with(dir, &[])
}

/// Like [`pack`], plus the ignored files that match one of `include` (globs
/// relative to `dir`, `*` crossing folders: `static/*` is everything under
/// `static`), as Shuttle's `[deploy] include` asks. `target/` and `.git/`
/// stay out.
pub fn pack_with(dir: &Path, include: &[String]) -> Result<Vec<u8>, SourceError> {
    let encoder =
        zstd::Encoder::new(Vec::new(), 3).map_err(io_error("cannot start compression"))?;
    let mut archive = tar::Builder::new(encoder);
    archive.follow_symlinks(false);
    let mut packed = std::collections::BTreeSet::new();
    for path in walk(dir, true)? {
        let relative = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
        archive
            .append_path_with_name(&path, &relative)
            .map_err(io_error(format!("cannot pack {}", path.display())))?;
        packed.insert(relative);
    }
    let globs = include_globs(include)?;
    let tracked = tracked_by_git(dir);
    if globs.is_some() || !tracked.is_empty() {
        for path in walk(dir, false)? {
            let relative = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
            let wanted = tracked.contains(&relative)
                || globs
                    .as_ref()
                    .is_some_and(|globs| globs.is_match(&relative));
            if packed.contains(&relative) || !wanted {
                continue;
            }
            // Parent folders first, so unpacking recreates them.
            for ancestor in relative
                .ancestors()
                .skip(1)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                if ancestor.as_os_str().is_empty() || packed.contains(ancestor) {
                    continue;
                }
                archive
                    .append_path_with_name(dir.join(ancestor), ancestor)
                    .map_err(io_error(format!("cannot pack {}", ancestor.display())))?;
                packed.insert(ancestor.to_path_buf());
            }
            archive
                .append_path_with_name(&path, &relative)
                .map_err(io_error(format!("cannot pack {}", path.display())))?;
            packed.insert(relative);
        }
    }
    let encoder = archive
        .into_inner()
        .map_err(io_error("cannot finish the tarball"))?;
    encoder
        .finish()
        .map_err(io_error("cannot finish compression"))
}

fn include_globs(include: &[String]) -> Result<Option<globset::GlobSet>, SourceError> {
    if include.is_empty() {
        return Ok(None);
    }
    let mut globs = globset::GlobSetBuilder::new();
    for pattern in include {
        let glob = globset::Glob::new(pattern.trim_start_matches("./")).map_err(|err| {
            SourceError::Io {
                context: format!("bad include pattern `{pattern}`"),
                source: io::Error::other(err.to_string()),
            }
        })?;
        globs.add(glob);
    }
    globs.build().map(Some).map_err(|err| SourceError::Io {
        context: "bad include patterns".into(),
        source: io::Error::other(err.to_string()),
    })
}

/// The files under `dir` that git tracks (relative to `dir`), when `dir` is
/// in a git work tree and git is installed; otherwise none.
fn tracked_by_git(dir: &Path) -> std::collections::HashSet<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    // Paths come relative to the folder git runs in.
    let listed = std::process::Command::new("git")
        .args(["ls-files", "-z", "--cached"])
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .output();
    let output = match listed {
        Ok(output) if output.status.success() => output.stdout,
        _ => return Default::default(),
    };
    output
        .split(|byte| *byte == 0)
        .filter(|path| !path.is_empty())
        .map(|path| PathBuf::from(std::ffi::OsStr::from_bytes(path)))
        .collect()
}

/// Every entry under `dir` (not `dir` itself), sorted, without `target/`
/// at the top and `.git/` anywhere; `ignore_files` honours `.gitignore` and
/// `.ignore`.
fn walk(dir: &Path, ignore_files: bool) -> Result<Vec<PathBuf>, SourceError> {
    let walker = ignore::WalkBuilder::new(dir)
        .standard_filters(false)
        .git_ignore(ignore_files)
        .ignore(ignore_files)
        .git_exclude(ignore_files)
        .require_git(false)
        .parents(false)
        .filter_entry(|entry| {
            let name = entry.file_name();
            !(entry.depth() == 1 && name == "target") && name != ".git"
        })
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    let mut paths = Vec::new();
    for entry in walker {
        let entry = entry.map_err(|err| SourceError::Io {
            context: format!("cannot read {}", dir.display()),
            source: io::Error::other(err.to_string()),
        })?;
        if entry.depth() > 0 {
            paths.push(entry.into_path());
        }
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{UnpackLimits, unpack};
    use std::fs;

    #[test]
    fn pack_with_adds_ignored_files_that_match_include() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("Cargo.toml"), "[package]").unwrap();
        fs::write(
            dir.path().join(".gitignore"),
            "Secrets.toml\nfrontend/dist/\nother.txt\n",
        )
        .unwrap();
        fs::write(dir.path().join("Secrets.toml"), "K = 'v'").unwrap();
        fs::write(dir.path().join("other.txt"), "left out").unwrap();
        fs::create_dir_all(dir.path().join("frontend/dist/js")).unwrap();
        fs::write(dir.path().join("frontend/dist/js/app.js"), "js").unwrap();
        fs::create_dir_all(dir.path().join("target")).unwrap();
        fs::write(dir.path().join("target/x"), "bin").unwrap();

        let include = [
            "Secrets.toml".to_string(),
            "frontend/dist/*".to_string(),
            "target/*".to_string(),
        ];
        let packed = pack_with(dir.path(), &include).unwrap();
        let out = tempfile::tempdir().unwrap();
        unpack(&packed[..], out.path(), UnpackLimits::default()).unwrap();
        assert!(out.path().join("Secrets.toml").is_file());
        assert_eq!(
            fs::read_to_string(out.path().join("frontend/dist/js/app.js")).unwrap(),
            "js"
        );
        assert!(!out.path().join("other.txt").exists());
        assert!(!out.path().join("target").exists());
        assert!(pack_with(dir.path(), &["[".to_string()]).is_err());
    }

    #[test]
    fn pack_honours_gitignore_and_skips_target() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("Cargo.toml"), "[package]").unwrap();
        fs::write(dir.path().join(".gitignore"), "secret.txt\n").unwrap();
        fs::write(dir.path().join("secret.txt"), "no").unwrap();
        fs::create_dir_all(dir.path().join("target/release")).unwrap();
        fs::write(dir.path().join("target/release/big"), "bin").unwrap();
        fs::create_dir_all(dir.path().join("src")).unwrap();
        fs::write(dir.path().join("src/main.rs"), "fn main() {}").unwrap();

        let packed = pack(dir.path()).unwrap();
        let out = tempfile::tempdir().unwrap();
        unpack(&packed[..], out.path(), UnpackLimits::default()).unwrap();
        assert!(out.path().join("src/main.rs").exists());
        assert!(out.path().join("Cargo.toml").exists());
        assert!(!out.path().join("secret.txt").exists());
        assert!(!out.path().join("target").exists());
    }

    #[test]
    fn files_git_tracks_are_packed_even_when_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let status = std::process::Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .stdout(std::process::Stdio::null())
                .status()
                .expect("git (installed by .ci/run)");
            assert!(status.success(), "git {args:?}");
        };
        git(&["init", "-q"]);
        fs::write(dir.path().join(".gitignore"), "Cargo.lock\n*.log\n").unwrap();
        fs::write(dir.path().join("Cargo.lock"), "# locked").unwrap();
        fs::write(dir.path().join("debug.log"), "noise").unwrap();
        fs::create_dir(dir.path().join("src")).unwrap();
        fs::write(dir.path().join("src/main.rs"), "fn main() {}").unwrap();
        git(&["add", "-f", "Cargo.lock"]);

        let packed = pack(dir.path()).unwrap();
        let out = tempfile::tempdir().unwrap();
        unpack(&packed[..], out.path(), UnpackLimits::default()).unwrap();
        assert_eq!(
            fs::read_to_string(out.path().join("Cargo.lock")).unwrap(),
            "# locked"
        );
        assert!(out.path().join("src/main.rs").exists());
        assert!(
            !out.path().join("debug.log").exists(),
            "ignored and untracked"
        );
    }
}
