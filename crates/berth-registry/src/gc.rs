//! Garbage collection: what no tag, no pinned digest (a release's image)
//! and no recent push references goes, manifests first, then the blobs
//! only they held, then uploads that stopped.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::manifests::{file_names, list_dir, references};
use crate::{Digest, Registry, RepoName, Result};

/// An upload untouched this long has stopped (or `recent`, if shorter).
const STALE_UPLOAD: Duration = Duration::from_secs(3600);

/// What a collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// Untagged, unpinned manifests removed from their repositories.
    pub manifests_removed: usize,
    /// Blobs deleted.
    pub blobs_removed: usize,
    /// Bytes those blobs held.
    pub bytes_freed: u64,
    /// Uploads that had stopped, deleted.
    pub uploads_removed: usize,
    /// Blobs kept.
    pub blobs_kept: usize,
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
}

impl Registry {
    /// Collects at `now`: a manifest is kept when tagged, in `pinned`,
    /// pushed within `recent`, in a kept index, or a referrer of a kept
    /// manifest; a blob when a kept manifest names it or it was pushed
    /// within `recent`. Everything else goes.
    pub fn collect_garbage(
        &self,
        pinned: &HashSet<Digest>,
        now: SystemTime,
        recent: Duration,
    ) -> Result<GcReport> {
        let _exclusive = self.exclusive();
        let age = |path: &std::path::Path| {
            modified(path).map(|at| now.duration_since(at).unwrap_or_default())
        };
        let is_recent = |path: &std::path::Path| age(path).is_some_and(|age| age < recent);
        let mut report = GcReport::default();
        let mut marked: HashSet<Digest> = HashSet::new();
        // Anything unreadable stops the collection before it removes
        // anything more: unreadable is never taken for unreferenced.
        for repo in self.catalog_strict()? {
            let all = self.manifest_digests(&repo)?;
            let tagged: HashSet<String> = self
                .tag_pairs_strict(&repo)?
                .into_iter()
                .map(|(_, digest)| digest)
                .collect();
            let mut kept: BTreeSet<Digest> = all
                .iter()
                .filter(|digest| {
                    tagged.contains(digest.as_str())
                        || pinned.contains(*digest)
                        || is_recent(&self.manifest_link(&repo, digest))
                })
                .cloned()
                .collect();
            // Children of kept indexes and referrers of kept manifests.
            loop {
                let mut more = Vec::new();
                for digest in &kept {
                    let manifest = self.manifest(&repo, digest.as_str())?;
                    more.extend(references(&manifest.media_type, &manifest.bytes)?.manifests);
                    for referrer in self.referrers(&repo, digest, None) {
                        if let Some(Ok(digest)) = referrer["digest"].as_str().map(Digest::parse) {
                            more.push(digest);
                        }
                    }
                }
                let before = kept.len();
                kept.extend(more.into_iter().filter(|digest| all.contains(digest)));
                if kept.len() == before {
                    break;
                }
            }
            // What this repository still holds: its kept manifests, what
            // they name, and blobs pushed to it within the grace period.
            let mut held: HashSet<Digest> = HashSet::new();
            for digest in &kept {
                held.insert(digest.clone());
                let manifest = self.manifest(&repo, digest.as_str())?;
                let found = references(&manifest.media_type, &manifest.bytes)?;
                held.extend(found.blobs.into_iter().map(|(blob, _)| blob));
            }
            for digest in &all {
                if !kept.contains(digest) {
                    self.unlink_manifest(&repo, digest)?;
                    report.manifests_removed += 1;
                }
            }
            let layers = self.repo_dir(&repo).join("_layers");
            for hex in list_dir(&layers)? {
                let Ok(digest) = Digest::parse(&format!("sha256:{hex}")) else {
                    continue;
                };
                if held.contains(&digest) || is_recent(&layers.join(&hex)) {
                    held.insert(digest);
                } else {
                    let _ = std::fs::remove_file(layers.join(&hex));
                }
            }
            marked.extend(held);
            self.remove_if_empty(&repo);
        }
        let blobs = self.root.join("blobs/sha256");
        for entry in std::fs::read_dir(&blobs)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.') {
                // A write that a crash interrupted.
                if age(&path).is_some_and(|age| age >= STALE_UPLOAD) {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            match Digest::parse(&format!("sha256:{name}")) {
                Ok(digest) if marked.contains(&digest) => report.blobs_kept += 1,
                _ => {
                    report.bytes_freed += entry.metadata().map_or(0, |meta| meta.len());
                    std::fs::remove_file(&path)?;
                    report.blobs_removed += 1;
                }
            }
        }
        let uploads = self.root.join("uploads");
        let stale = STALE_UPLOAD.min(recent);
        for id in file_names(&uploads) {
            let dir = uploads.join(&id);
            let idle = age(&dir.join("data")).or_else(|| age(&dir));
            if idle.is_none_or(|idle| idle >= stale) {
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => report.uploads_removed += 1,
                    // Cancelled by its client meanwhile.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(err.into()),
                }
            }
        }
        Ok(report)
    }

    /// Removes `repo` once it holds no manifest and no blob.
    fn remove_if_empty(&self, repo: &RepoName) {
        let dir = self.repo_dir(repo);
        if !file_names(&dir.join("_manifests")).is_empty()
            || !file_names(&dir.join("_layers")).is_empty()
        {
            return;
        }
        for internal in ["_manifests", "_layers", "_tags", "_referrers"] {
            let _ = std::fs::remove_dir_all(dir.join(internal));
        }
        // The repository's folders, up to the first still in use.
        let base = self.root.join("repositories");
        let mut at = Some(dir.as_path());
        while let Some(path) = at {
            if path == base || std::fs::remove_dir(path).is_err() {
                break;
            }
            at = path.parent();
        }
    }
}
