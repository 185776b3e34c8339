//! Blob uploads: a session per upload, its bytes appended in one piece
//! (monolithic) or in chunks, then checked against the digest the client
//! names and moved into the blob store whole. A session that stops half
//! way leaves nothing in the store; the collector removes it later.

use std::io::{Read, Write};
use std::path::PathBuf;

use crate::{Digest, Registry, RegistryError, RepoName, Result};

/// An upload's id: 32 hex digits (a safe file name).
fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Registry {
    fn upload_dir(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    /// Starts an upload to `repo`; its id.
    pub fn start_upload(&self, repo: &RepoName) -> Result<String> {
        let id = format!("{:032x}", rand::random::<u128>());
        let dir = self.upload_dir(&id);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("repo"), repo.as_str())?;
        std::fs::File::create(dir.join("data"))?;
        Ok(id)
    }

    /// The data file of upload `id` of `repo` and how many bytes it has.
    pub fn upload(&self, repo: &RepoName, id: &str) -> Result<(PathBuf, u64)> {
        let unknown = || RegistryError::UploadUnknown(id.chars().take(64).collect());
        if !valid_id(id) {
            return Err(unknown());
        }
        let dir = self.upload_dir(id);
        let owner = match std::fs::read_to_string(dir.join("repo")) {
            Ok(owner) => owner,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(unknown()),
            Err(err) => return Err(err.into()),
        };
        if owner != repo.as_str() {
            return Err(unknown());
        }
        let data = dir.join("data");
        let size = std::fs::metadata(&data)?.len();
        Ok((data, size))
    }

    /// Claims upload `id` of `repo` for one request: its appends, its
    /// completion or its cancelling happen under the claim, one request at
    /// a time. Without it a second request could append to the file after
    /// the first checked its range, or keep writing into the blob after its
    /// digest was checked and it was moved into the store.
    /// The claim is owned: work done for the request on other threads
    /// holds it (a clone of its `Arc`) until that work ends, also when the
    /// request itself is gone.
    pub fn claim_upload(&self, repo: &RepoName, id: &str) -> Result<std::sync::Arc<UploadClaim>> {
        self.upload(repo, id)?;
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !busy.insert(id.to_string()) {
            return Err(RegistryError::UploadInvalid(format!(
                "another request is writing to upload {id}; send one chunk at a time"
            )));
        }
        Ok(std::sync::Arc::new(UploadClaim {
            busy: self.busy.clone(),
            id: id.to_string(),
        }))
    }

    /// Checks that a chunk starting at `start` (from its `Content-Range`)
    /// continues upload `id`; the upload's size.
    pub fn check_chunk(&self, repo: &RepoName, id: &str, start: Option<u64>) -> Result<u64> {
        let (_, at) = self.upload(repo, id)?;
        match start {
            Some(given) if given != at => Err(RegistryError::RangeInvalid { at, given }),
            _ => Ok(at),
        }
    }

    /// Completes upload `id` as blob `digest` of `repo`: its bytes must
    /// hash to it. The upload is gone afterwards either way; the size. The
    /// bytes are hashed and made durable before the collector's lock is
    /// taken, which then covers only the rename and the link.
    pub fn finish_upload(&self, repo: &RepoName, id: &str, digest: &Digest) -> Result<u64> {
        let (data, size) = self.upload(repo, id)?;
        let outcome = (|| {
            let actual = hash_file(&data)?;
            if actual != *digest {
                return Err(RegistryError::DigestInvalid(format!(
                    "the upload's content is {actual}, not {digest}"
                )));
            }
            std::fs::File::open(&data)?.sync_all()?;
            let _shared = self.shared();
            let blob = self.blob_file(digest);
            // A blob already stored is kept only when whole (a crash may
            // have left a short one): else this upload replaces it.
            let whole = std::fs::metadata(&blob).is_ok_and(|meta| meta.len() == size);
            if !whole {
                std::fs::rename(&data, &blob)?;
                crate::sync_dir(blob.parent().expect("a blob has a folder"))?;
            }
            self.link_layer(repo, digest)?;
            Ok(size)
        })();
        let _ = std::fs::remove_dir_all(self.upload_dir(id));
        outcome
    }

    /// Stores `bytes` as blob `digest` of `repo` at once.
    pub fn put_blob(&self, repo: &RepoName, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let id = self.start_upload(repo)?;
        let (data, _) = self.upload(repo, &id)?;
        std::fs::OpenOptions::new()
            .append(true)
            .open(data)?
            .write_all(bytes)?;
        self.finish_upload(repo, &id, digest).map(|_| ())
    }

    /// Stores what `reader` gives as blob `digest` of `repo`, streamed.
    pub fn put_blob_from(
        &self,
        repo: &RepoName,
        digest: &Digest,
        mut reader: impl Read,
    ) -> Result<()> {
        let id = self.start_upload(repo)?;
        let (data, _) = self.upload(repo, &id)?;
        let copied = std::fs::OpenOptions::new()
            .append(true)
            .open(data)
            .and_then(|mut file| std::io::copy(&mut reader, &mut file));
        if let Err(err) = copied {
            let _ = self.cancel_upload(repo, &id);
            return Err(err.into());
        }
        self.finish_upload(repo, &id, digest).map(|_| ())
    }

    /// Cancels upload `id`.
    pub fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        self.upload(repo, id)?;
        std::fs::remove_dir_all(self.upload_dir(id))?;
        Ok(())
    }
}

/// A request's hold on an upload (see [`Registry::claim_upload`]); let go
/// when dropped.
#[derive(Debug)]
pub struct UploadClaim {
    busy: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    id: String,
}

impl Drop for UploadClaim {
    fn drop(&mut self) {
        let mut busy = (self.busy.lock()).unwrap_or_else(|p| p.into_inner());
        busy.remove(&self.id);
    }
}

/// The sha256 of a file's bytes, read in pieces.
pub(crate) fn hash_file(path: &std::path::Path) -> std::io::Result<Digest> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(Digest::from_hasher(hasher))
}
