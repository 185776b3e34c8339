//! Garbage collection: what no tag, no pinned digest (a release's image)
//! and no recent push references goes, manifests first, then the blobs
//! only they held, then uploads that stopped.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::manifests::{file_names, references};
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
        let is_recent = |path: &std::path::Path| {
            modified(path).is_some_and(|at| now.duration_since(at).unwrap_or_default() < recent)
        };
        let mut report = GcReport::default();
        let mut marked: HashSet<Digest> = HashSet::new();
        for repo in self.catalog() {
            let all = self.manifest_digests(&repo);
            let tagged: HashSet<String> = self
                .tags(&repo)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|tag| self.resolve(&repo, &tag).ok())
                .map(|digest| digest.to_string())
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
                    if let Ok(manifest) = self.manifest(&repo, digest.as_str())
                        && let Ok(found) = references(&manifest.media_type, &manifest.bytes)
                    {
                        more.extend(found.manifests);
                    }
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
            for digest in &all {
                if !kept.contains(digest) {
                    self.unlink_manifest(&repo, digest)?;
                    report.manifests_removed += 1;
                }
            }
            for digest in &kept {
                marked.insert(digest.clone());
                if let Ok(manifest) = self.manifest(&repo, digest.as_str())
                    && let Ok(found) = references(&manifest.media_type, &manifest.bytes)
                {
                    marked.extend(found.blobs.into_iter().map(|(blob, _)| blob));
                }
            }
            self.sweep_layer_links(&repo, &mut marked, &is_recent);
        }
        // Links of blobs now unmarked go with them.
        for repo in self.catalog() {
            let layers = self.repo_dir(&repo).join("_layers");
            for hex in file_names(&layers) {
                if let Ok(digest) = Digest::parse(&format!("sha256:{hex}"))
                    && !marked.contains(&digest)
                {
                    let _ = std::fs::remove_file(layers.join(hex));
                }
            }
            self.remove_if_empty(&repo);
        }
        let blobs = self.root.join("blobs/sha256");
        for hex in file_names(&blobs) {
            let path = blobs.join(&hex);
            match Digest::parse(&format!("sha256:{hex}")) {
                Ok(digest) if marked.contains(&digest) => report.blobs_kept += 1,
                _ => {
                    report.bytes_freed += std::fs::metadata(&path).map_or(0, |meta| meta.len());
                    std::fs::remove_file(&path)?;
                    report.blobs_removed += 1;
                }
            }
        }
        let uploads = self.root.join("uploads");
        for id in file_names(&uploads) {
            let dir = uploads.join(&id);
            let touched = modified(&dir.join("data")).or_else(|| modified(&dir));
            let stale = STALE_UPLOAD.min(recent);
            if touched.is_none_or(|at| now.duration_since(at).unwrap_or_default() >= stale) {
                std::fs::remove_dir_all(&dir)?;
                report.uploads_removed += 1;
            }
        }
        Ok(report)
    }

    /// Marks the blobs pushed to `repo` within the recent window; the
    /// others are left to be marked by a manifest or go.
    fn sweep_layer_links(
        &self,
        repo: &RepoName,
        marked: &mut HashSet<Digest>,
        is_recent: &dyn Fn(&std::path::Path) -> bool,
    ) {
        let layers = self.repo_dir(repo).join("_layers");
        for hex in file_names(&layers) {
            if is_recent(&layers.join(&hex))
                && let Ok(digest) = Digest::parse(&format!("sha256:{hex}"))
            {
                marked.insert(digest);
            }
        }
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
