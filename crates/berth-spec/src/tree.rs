//! The files of a project folder, as spec detection reads them.
//!
//! Parsing in this crate works on texts; detecting a project's kind (a
//! Shuttle project, say) needs to look around the folder. [`ProjectTree`] is
//! that view: [`FolderTree`] reads a real folder, [`MemoryTree`] holds files
//! in memory for tests and uploads that are already unpacked elsewhere.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Read-only access to a project's files by relative path (`/`-separated).
pub trait ProjectTree {
    /// The text of the file at `path`, if it exists and is UTF-8.
    fn read(&self, path: &str) -> Option<String>;
    /// The names of the entries of the folder at `path` (empty if none).
    fn list(&self, path: &str) -> Vec<String>;
}

/// A project folder on disk. Paths that leave it (`..`, absolute) read as missing.
#[derive(Debug, Clone)]
pub struct FolderTree {
    root: PathBuf,
}

impl FolderTree {
    /// The folder at `root`.
    pub fn new(root: impl Into<PathBuf>) -> FolderTree {
        FolderTree { root: root.into() }
    }

    fn resolve(&self, path: &str) -> Option<PathBuf> {
        let relative = Path::new(path);
        relative
            .components()
            .all(|part| matches!(part, Component::Normal(_) | Component::CurDir))
            .then(|| self.root.join(relative))
    }
}

/// Files larger than this are not read by detection.
const MAX_READ: u64 = 4 * 1024 * 1024;

impl ProjectTree for FolderTree {
    fn read(&self, path: &str) -> Option<String> {
        let path = self.resolve(path)?;
        let metadata = std::fs::metadata(&path).ok()?;
        if !metadata.is_file() || metadata.len() > MAX_READ {
            return None;
        }
        std::fs::read_to_string(path).ok()
    }

    fn list(&self, path: &str) -> Vec<String> {
        let Some(dir) = self.resolve(path) else {
            return Vec::new();
        };
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|entry| entry.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A project held in memory: path → text.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    files: BTreeMap<String, String>,
}

impl MemoryTree {
    /// A tree of `files` (path, text).
    pub fn new(files: &[(&str, &str)]) -> MemoryTree {
        MemoryTree {
            files: files
                .iter()
                .map(|(path, text)| (path.to_string(), text.to_string()))
                .collect(),
        }
    }
}

impl ProjectTree for MemoryTree {
    fn read(&self, path: &str) -> Option<String> {
        self.files.get(path).cloned()
    }

    fn list(&self, path: &str) -> Vec<String> {
        let folder = path.trim_end_matches('/');
        let prefix = if folder.is_empty() || folder == "." {
            String::new()
        } else {
            format!("{folder}/")
        };
        let mut names: Vec<String> = self
            .files
            .keys()
            .filter_map(|file| file.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
            .collect();
        names.dedup();
        names
    }
}
