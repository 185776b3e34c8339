//! OCI image layouts (image-spec's `oci-layout`, `index.json` and
//! `blobs/sha256/`): an image of the registry written out as one, for a
//! tool that reads layouts (buildah builds on it), and an image a tool
//! wrote as one stored back in the registry.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::manifests::references;
use crate::{Digest, Registry, RegistryError, RepoName, Result};

/// The annotation that names an image in a layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The most manifests one image may nest (an index of manifests).
const MAX_DEPTH: usize = 2;

fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs/sha256").join(digest.hex())
}

impl Registry {
    /// Writes `reference` of `repo`, with the manifests and blobs it
    /// references that the registry holds, into `dir` as an OCI layout
    /// whose `index.json` names it `ref_name`. Blobs are hard links when
    /// `dir` is on the registry's file system, copies otherwise.
    pub fn export_layout(
        &self,
        repo: &RepoName,
        reference: &str,
        dir: &Path,
        ref_name: &str,
    ) -> Result<Digest> {
        let _shared = self.shared();
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        let top = self.manifest(repo, reference)?;
        self.export_manifest(repo, &top.digest, &top.media_type, dir, 0)?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": top.media_type,
                "digest": top.digest.as_str(),
                "size": top.bytes.len(),
                "annotations": { REF_NAME: ref_name },
            }],
        });
        std::fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&index).expect("an index serializes"),
        )?;
        Ok(top.digest)
    }

    fn export_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        dir: &Path,
        depth: usize,
    ) -> Result<()> {
        self.export_blob(digest, dir)?;
        let bytes = std::fs::read(self.blob_file(digest))?;
        let found = references(media_type, &bytes)?;
        for (blob, foreign) in &found.blobs {
            if !foreign {
                self.export_blob(blob, dir)?;
            }
        }
        if depth < MAX_DEPTH {
            let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            for child in body["manifests"].as_array().into_iter().flatten() {
                let Ok(child_digest) = Digest::parse(child["digest"].as_str().unwrap_or_default())
                else {
                    continue;
                };
                // An index may name platforms that were never pushed.
                if self.manifest_link(repo, &child_digest).exists() {
                    let media_type = child["mediaType"].as_str().unwrap_or_default();
                    self.export_manifest(repo, &child_digest, media_type, dir, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    fn export_blob(&self, digest: &Digest, dir: &Path) -> Result<()> {
        let target = blob_path(dir, digest);
        if target.exists() {
            return Ok(());
        }
        let source = self.blob_file(digest);
        if std::fs::hard_link(&source, &target).is_err() {
            std::fs::copy(&source, &target)?;
        }
        Ok(())
    }

    /// Stores the image `index.json` of the layout at `dir` names
    /// `ref_name` (or its only image) in `repo` under `tag`: every blob
    /// checked against its digest, child manifests before their index.
    /// Returns the image's digest.
    pub fn import_layout(
        &self,
        dir: &Path,
        ref_name: &str,
        repo: &RepoName,
        tag: &str,
    ) -> Result<Digest> {
        let invalid = |why: String| RegistryError::ManifestInvalid(why);
        let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)
            .map_err(|err| invalid(format!("the layout's index.json is not JSON: {err}")))?;
        let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
        let named = manifests
            .iter()
            .find(|descriptor| descriptor["annotations"][REF_NAME].as_str() == Some(ref_name))
            .or(match manifests.as_slice() {
                [only] => Some(only),
                _ => None,
            })
            .ok_or_else(|| invalid(format!("the layout has no image named {ref_name}")))?;
        let digest = Digest::parse(named["digest"].as_str().unwrap_or_default())?;
        let media_type = named["mediaType"].as_str().unwrap_or_default().to_string();
        self.import_manifest(dir, &digest, &media_type, repo, Some(tag), 0)?;
        Ok(digest)
    }

    fn import_manifest(
        &self,
        dir: &Path,
        digest: &Digest,
        media_type: &str,
        repo: &RepoName,
        tag: Option<&str>,
        depth: usize,
    ) -> Result<()> {
        let bytes = std::fs::read(blob_path(dir, digest))?;
        if Digest::of(&bytes) != *digest {
            return Err(RegistryError::DigestInvalid(format!(
                "the layout's manifest {digest} has other content"
            )));
        }
        let found = references(media_type, &bytes)?;
        for (blob, foreign) in &found.blobs {
            if !foreign && self.blob(repo, blob).is_err() {
                let file = std::fs::File::open(blob_path(dir, blob))?;
                self.put_blob_from(repo, blob, std::io::BufReader::new(file))?;
            }
        }
        if !found.manifests.is_empty() {
            if depth >= MAX_DEPTH {
                return Err(RegistryError::ManifestInvalid(
                    "indexes nested too deep".into(),
                ));
            }
            let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            for child in body["manifests"].as_array().into_iter().flatten() {
                let child_digest = Digest::parse(child["digest"].as_str().unwrap_or_default())?;
                let media_type = child["mediaType"].as_str().unwrap_or_default();
                self.import_manifest(dir, &child_digest, media_type, repo, None, depth + 1)?;
            }
        }
        let reference = tag.unwrap_or(digest.as_str());
        self.put_manifest(repo, reference, media_type, &bytes)?;
        Ok(())
    }
}
