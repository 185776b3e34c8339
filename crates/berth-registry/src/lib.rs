//! The storage of berth's built-in OCI registry (the distribution spec,
//! v1.1): blobs content-addressed on disk and shared by every repository,
//! upload sessions, manifests and image indexes, tags, referrers, the
//! catalog, and a garbage collector. The HTTP side lives in berth-server.
//!
//! Layout under the root (every name checked against the spec first, so none
//! climbs out):
//!
//! ```text
//! blobs/sha256/HEX                         the bytes, written once by rename
//! uploads/ID/{data,repo}                   an upload in progress
//! repositories/NAME/_layers/HEX            the blob is in NAME (empty)
//! repositories/NAME/_manifests/HEX         a manifest of NAME: its link (JSON)
//! repositories/NAME/_tags/TAG              the digest the tag names
//! repositories/NAME/_referrers/SUBJECT/HEX a manifest whose subject is SUBJECT
//! ```
//!
//! A repository component never starts with `_`, so NAME/_x is never
//! another repository. Writers take a shared lock and the collector an
//! exclusive one, so a blob is never collected between its upload and the
//! manifest that names it being linked.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

mod gc;
mod layout;
mod manifests;
mod names;
mod uploads;

pub use gc::GcReport;
pub use manifests::{MANIFEST_MEDIA_TYPES, MAX_MANIFEST, Manifest, PutManifest, RepoListing};
pub use names::{Digest, RepoName, valid_tag};
pub use uploads::UploadClaim;

/// A failure, with the distribution spec's error code.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The blob is not in the repository.
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(String),
    /// The upload is unknown or was cancelled.
    #[error("blob upload unknown to registry: {0}")]
    UploadUnknown(String),
    /// A chunk out of order, or an upload that cannot be completed.
    #[error("blob upload invalid: {0}")]
    UploadInvalid(String),
    /// A chunk that does not start where the upload ends.
    #[error("the chunk starts at {given}, the upload is at {at}")]
    RangeInvalid {
        /// Where the upload is.
        at: u64,
        /// Where the chunk said it starts.
        given: u64,
    },
    /// The content does not match its digest, or a digest is malformed.
    #[error("provided digest did not match uploaded content: {0}")]
    DigestInvalid(String),
    /// A manifest that names a blob the repository does not have.
    #[error("blob unknown to registry: the manifest references {0}")]
    ManifestBlobUnknown(String),
    /// A manifest that is not valid.
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    /// No such manifest or tag.
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    /// A repository name the spec does not allow.
    #[error("invalid repository name: {0:?}")]
    NameInvalid(String),
    /// No such repository.
    #[error("repository name not known to registry: {0}")]
    NameUnknown(String),
    /// What this registry does not do.
    #[error("the operation is unsupported: {0}")]
    Unsupported(String),
    /// The disk.
    #[error("registry storage: {0}")]
    Io(#[from] std::io::Error),
}

impl RegistryError {
    /// The spec's code, as in `{"errors":[{"code": …}]}`.
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::BlobUnknown(_) => "BLOB_UNKNOWN",
            RegistryError::UploadUnknown(_) => "BLOB_UPLOAD_UNKNOWN",
            RegistryError::UploadInvalid(_) | RegistryError::RangeInvalid { .. } => {
                "BLOB_UPLOAD_INVALID"
            }
            RegistryError::DigestInvalid(_) => "DIGEST_INVALID",
            RegistryError::ManifestBlobUnknown(_) => "MANIFEST_BLOB_UNKNOWN",
            RegistryError::ManifestInvalid(_) => "MANIFEST_INVALID",
            RegistryError::ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            RegistryError::NameInvalid(_) => "NAME_INVALID",
            RegistryError::NameUnknown(_) => "NAME_UNKNOWN",
            RegistryError::Unsupported(_) => "UNSUPPORTED",
            RegistryError::Io(_) => "UNKNOWN",
        }
    }

    /// The HTTP status the spec gives it.
    pub fn status(&self) -> u16 {
        match self {
            RegistryError::BlobUnknown(_)
            | RegistryError::UploadUnknown(_)
            | RegistryError::ManifestUnknown(_)
            | RegistryError::NameUnknown(_) => 404,
            RegistryError::RangeInvalid { .. } => 416,
            RegistryError::Unsupported(_) => 415,
            RegistryError::Io(_) => 500,
            _ => 400,
        }
    }
}

/// Results of registry operations.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// The registry's storage under one directory.
#[derive(Debug)]
pub struct Registry {
    root: PathBuf,
    /// Shared by writers, exclusive for the collector.
    gate: RwLock<()>,
    /// Uploads a request is writing to or completing now (see
    /// [`Registry::claim_upload`]).
    busy: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Registry {
    /// Opens (and makes) the registry under `root`.
    pub fn open(root: &Path) -> Result<Registry> {
        for dir in ["blobs/sha256", "uploads", "repositories"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        Ok(Registry {
            root: root.to_path_buf(),
            gate: RwLock::new(()),
            busy: Default::default(),
        })
    }

    /// Where the registry keeps everything.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn shared(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn exclusive(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.gate
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn blob_file(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    fn repo_dir(&self, repo: &RepoName) -> PathBuf {
        self.root.join("repositories").join(repo.as_str())
    }

    fn layer_link(&self, repo: &RepoName, digest: &Digest) -> PathBuf {
        self.repo_dir(repo).join("_layers").join(digest.hex())
    }

    /// The file and size of blob `digest` of `repo` (a manifest's bytes
    /// are a blob of its repository too).
    pub fn blob(&self, repo: &RepoName, digest: &Digest) -> Result<(PathBuf, u64)> {
        let linked =
            self.layer_link(repo, digest).exists() || self.manifest_link(repo, digest).exists();
        if !linked {
            return Err(RegistryError::BlobUnknown(digest.to_string()));
        }
        // Linked but gone is damage, not an unknown blob: said as such.
        let file = self.blob_file(digest);
        let size = std::fs::metadata(&file)?.len();
        Ok((file, size))
    }

    /// Marks blob `digest` of `repo` as pushed now: a client that finds it
    /// (`HEAD`) skips its upload, and the manifest naming it comes next,
    /// so the collector's grace period starts again.
    pub fn touch(&self, repo: &RepoName, digest: &Digest) {
        let link = self.layer_link(repo, digest);
        if let Ok(file) = std::fs::File::options().append(true).open(&link) {
            let _ = file.set_modified(std::time::SystemTime::now());
        }
    }

    /// Unlinks blob `digest` from `repo` (its bytes go at the next
    /// collection if nothing else holds them).
    pub fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let _shared = self.shared();
        match std::fs::remove_file(self.layer_link(repo, digest)) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                Err(RegistryError::BlobUnknown(digest.to_string()))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Links blob `digest`, held by `from`, into `repo` too; `false` when
    /// `from` does not have it (the client then uploads it).
    pub fn mount(&self, repo: &RepoName, from: &RepoName, digest: &Digest) -> Result<bool> {
        let _shared = self.shared();
        if self.blob(from, digest).is_err() {
            return Ok(false);
        }
        self.link_layer(repo, digest)?;
        Ok(true)
    }

    fn link_layer(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let link = self.layer_link(repo, digest);
        std::fs::create_dir_all(link.parent().expect("a link has a parent"))?;
        std::fs::write(link, b"")?;
        Ok(())
    }

    /// Bytes the registry holds on disk: blobs and uploads in progress.
    pub fn disk_bytes(&self) -> u64 {
        fn size(dir: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|entry| match entry.file_type() {
                    Ok(kind) if kind.is_dir() => size(&entry.path()),
                    Ok(_) => entry.metadata().map_or(0, |meta| meta.len()),
                    Err(_) => 0,
                })
                .sum()
        }
        size(&self.root.join("blobs")) + size(&self.root.join("uploads"))
    }
}

/// Writes `bytes` to `path` whole or not at all.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("a file has a parent");
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(
        ".{}.{:016x}",
        path.file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("file"),
        rand::random::<u64>()
    ));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        std::io::Write::write_all(&mut file, bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        sync_dir(dir)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
