//! Manifests and image indexes, tags, referrers and the catalog.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Digest, Registry, RegistryError, RepoName, Result, valid_tag, write_atomically};

/// The manifest media types the registry stores.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The largest manifest accepted (as the reference registry).
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// What a repository's manifest link records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Link {
    #[serde(rename = "mediaType")]
    media_type: String,
    size: u64,
}

/// A stored manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its bytes, exactly as pushed.
    pub bytes: Vec<u8>,
}

/// What storing a manifest did.
#[derive(Debug, Clone)]
pub struct PutManifest {
    /// Its digest.
    pub digest: Digest,
    /// Its subject, when it has one (the `OCI-Subject` answer header).
    pub subject: Option<Digest>,
}

/// One repository, for `berth registry list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoListing {
    /// Its name.
    pub name: String,
    /// Tags and the digests they name, sorted by tag.
    pub tags: Vec<(String, String)>,
    /// Manifests it holds, tagged or not.
    pub manifests: usize,
}

/// The digests a manifest references: its config, layers and (for an
/// index) manifests, and its subject.
#[derive(Debug, Default)]
pub(crate) struct References {
    pub(crate) blobs: Vec<(Digest, bool)>,
    pub(crate) manifests: Vec<Digest>,
    pub(crate) subject: Option<Value>,
}

/// Parses `bytes` as a manifest of `media_type`: what it references.
/// A blob reference is `(digest, foreign)`: foreign layers (with `urls`)
/// need not be in the registry.
pub(crate) fn references(media_type: &str, bytes: &[u8]) -> Result<References> {
    let invalid = |why: &str| RegistryError::ManifestInvalid(why.to_string());
    let body: Value =
        serde_json::from_slice(bytes).map_err(|err| invalid(&format!("not JSON: {err}")))?;
    if body.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    if let Some(declared) = body.get("mediaType").and_then(Value::as_str)
        && declared != media_type
    {
        return Err(invalid(&format!(
            "its mediaType {declared} is not the Content-Type {media_type}"
        )));
    }
    let descriptor_digest = |descriptor: &Value| -> Result<Digest> {
        let digest = descriptor
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("a descriptor without a digest"))?;
        Digest::parse(digest)
    };
    let mut found = References {
        subject: body.get("subject").cloned(),
        ..References::default()
    };
    let is_index = media_type == OCI_INDEX || media_type.ends_with("manifest.list.v2+json");
    if is_index {
        let manifests = body
            .get("manifests")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("an index without manifests"))?;
        for manifest in manifests {
            found.manifests.push(descriptor_digest(manifest)?);
        }
    } else {
        let config = body
            .get("config")
            .ok_or_else(|| invalid("a manifest without a config"))?;
        found.blobs.push((descriptor_digest(config)?, false));
        let layers = body
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("a manifest without layers"))?;
        for layer in layers {
            let foreign = layer.get("urls").is_some();
            found.blobs.push((descriptor_digest(layer)?, foreign));
        }
    }
    if let Some(subject) = &found.subject {
        descriptor_digest(subject)?;
    }
    Ok(found)
}

impl Registry {
    pub(crate) fn manifest_link(&self, repo: &RepoName, digest: &Digest) -> PathBuf {
        self.repo_dir(repo).join("_manifests").join(digest.hex())
    }

    fn tag_file(&self, repo: &RepoName, tag: &str) -> PathBuf {
        self.repo_dir(repo).join("_tags").join(tag)
    }

    /// The digest `reference` (a tag or a digest) names in `repo`.
    pub fn resolve(&self, repo: &RepoName, reference: &str) -> Result<Digest> {
        let unknown = || RegistryError::ManifestUnknown(format!("{repo}:{reference}"));
        if reference.contains(':') {
            let digest = Digest::parse(reference)?;
            return match self.manifest_link(repo, &digest).exists() {
                true => Ok(digest),
                false => Err(unknown()),
            };
        }
        if !valid_tag(reference) {
            return Err(RegistryError::ManifestInvalid(format!(
                "invalid tag {:?}",
                reference.chars().take(130).collect::<String>()
            )));
        }
        let text = match std::fs::read_to_string(self.tag_file(repo, reference)) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(unknown()),
            Err(err) => return Err(err.into()),
        };
        Digest::parse(text.trim())
    }

    /// The manifest `reference` names in `repo`.
    pub fn manifest(&self, repo: &RepoName, reference: &str) -> Result<Manifest> {
        let digest = self.resolve(repo, reference)?;
        let link_bytes = match std::fs::read(self.manifest_link(repo, &digest)) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(RegistryError::ManifestUnknown(format!("{repo}@{digest}")));
            }
            Err(err) => return Err(err.into()),
        };
        let link: Link = serde_json::from_slice(&link_bytes).map_err(|err| {
            RegistryError::Io(std::io::Error::other(format!(
                "the link of {repo}@{digest} is damaged: {err}"
            )))
        })?;
        // Linked but unreadable is damage, never "unknown".
        let bytes = std::fs::read(self.blob_file(&digest))?;
        Ok(Manifest {
            digest,
            media_type: link.media_type,
            bytes,
        })
    }

    /// Stores manifest `bytes` of `media_type` in `repo` under `reference`
    /// (a tag, or the digest it must have). Every blob and manifest it
    /// references must be in `repo` already.
    pub fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<PutManifest> {
        if bytes.len() > MAX_MANIFEST {
            return Err(RegistryError::ManifestInvalid(format!(
                "{} bytes; at most {MAX_MANIFEST}",
                bytes.len()
            )));
        }
        if !MANIFEST_MEDIA_TYPES.contains(&media_type) {
            return Err(RegistryError::ManifestInvalid(format!(
                "media type {:?} is not a manifest (expected one of {})",
                media_type.chars().take(100).collect::<String>(),
                MANIFEST_MEDIA_TYPES.join(", ")
            )));
        }
        let digest = Digest::of(bytes);
        let tag = if reference.contains(':') {
            let named = Digest::parse(reference)?;
            if named != digest {
                return Err(RegistryError::DigestInvalid(format!(
                    "the manifest's content is {digest}, not {named}"
                )));
            }
            None
        } else if valid_tag(reference) {
            Some(reference)
        } else {
            return Err(RegistryError::ManifestInvalid(format!(
                "invalid tag {:?}",
                reference.chars().take(130).collect::<String>()
            )));
        };
        let found = references(media_type, bytes)?;
        let _shared = self.shared();
        for (blob, foreign) in &found.blobs {
            if !foreign && self.blob(repo, blob).is_err() {
                return Err(RegistryError::ManifestBlobUnknown(blob.to_string()));
            }
        }
        for manifest in &found.manifests {
            if !self.manifest_link(repo, manifest).exists() {
                return Err(RegistryError::ManifestBlobUnknown(manifest.to_string()));
            }
        }
        let blob = self.blob_file(&digest);
        let whole = std::fs::metadata(&blob).is_ok_and(|meta| meta.len() == bytes.len() as u64);
        if !whole {
            write_atomically(&blob, bytes)?;
        }
        let link = Link {
            media_type: media_type.to_string(),
            size: bytes.len() as u64,
        };
        write_atomically(
            &self.manifest_link(repo, &digest),
            &serde_json::to_vec(&link).expect("a link serializes"),
        )?;
        let mut subject = None;
        if let Some(descriptor) = &found.subject {
            let subject_digest = Digest::parse(descriptor["digest"].as_str().unwrap_or_default())?;
            let body: Value = serde_json::from_slice(bytes).unwrap_or_default();
            let artifact_type = body
                .get("artifactType")
                .or_else(|| {
                    body.get("config")
                        .and_then(|config| config.get("mediaType"))
                })
                .cloned();
            let mut referrer = serde_json::json!({
                "mediaType": media_type,
                "digest": digest.as_str(),
                "size": bytes.len(),
            });
            if let Some(artifact_type) = artifact_type {
                referrer["artifactType"] = artifact_type;
            }
            if let Some(annotations) = body.get("annotations") {
                referrer["annotations"] = annotations.clone();
            }
            write_atomically(
                &self
                    .repo_dir(repo)
                    .join("_referrers")
                    .join(subject_digest.hex())
                    .join(digest.hex()),
                &serde_json::to_vec(&referrer).expect("a descriptor serializes"),
            )?;
            subject = Some(subject_digest);
        }
        if let Some(tag) = tag {
            write_atomically(&self.tag_file(repo, tag), digest.as_str().as_bytes())?;
        }
        Ok(PutManifest { digest, subject })
    }

    /// Deletes `reference` from `repo`: a tag only the tag, a digest the
    /// manifest, every tag naming it and its place among referrers.
    pub fn delete_manifest(&self, repo: &RepoName, reference: &str) -> Result<()> {
        let _shared = self.shared();
        let digest = self.resolve(repo, reference)?;
        if !reference.contains(':') {
            std::fs::remove_file(self.tag_file(repo, reference))?;
            return Ok(());
        }
        self.unlink_manifest(repo, &digest)
    }

    pub(crate) fn unlink_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        for (tag, named) in self.tag_pairs(repo) {
            if named == digest.as_str() {
                let _ = std::fs::remove_file(self.tag_file(repo, &tag));
            }
        }
        if let Ok(subjects) = std::fs::read_dir(self.repo_dir(repo).join("_referrers")) {
            for subject in subjects.flatten() {
                let _ = std::fs::remove_file(subject.path().join(digest.hex()));
                // Fails while other referrers remain, as it should.
                let _ = std::fs::remove_dir(subject.path());
            }
        }
        std::fs::remove_file(self.manifest_link(repo, digest))?;
        Ok(())
    }

    /// Every tag of `repo` and its digest; any failure to read one is an
    /// error.
    pub(crate) fn tag_pairs_strict(&self, repo: &RepoName) -> Result<Vec<(String, String)>> {
        let mut pairs = Vec::new();
        for tag in list_dir(&self.repo_dir(repo).join("_tags"))? {
            let digest = std::fs::read_to_string(self.tag_file(repo, &tag))?;
            pairs.push((tag, digest.trim().to_string()));
        }
        Ok(pairs)
    }

    fn tag_pairs(&self, repo: &RepoName) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = file_names(&self.repo_dir(repo).join("_tags"))
            .into_iter()
            .filter_map(|tag| {
                let digest = std::fs::read_to_string(self.tag_file(repo, &tag)).ok()?;
                Some((tag, digest.trim().to_string()))
            })
            .collect();
        pairs.sort();
        pairs
    }

    /// The tags of `repo`, sorted; an unknown repository is an error.
    pub fn tags(&self, repo: &RepoName) -> Result<Vec<String>> {
        // A folder that only holds other repositories is not one.
        let dir = self.repo_dir(repo);
        if !dir.join("_manifests").is_dir() && !dir.join("_layers").is_dir() {
            return Err(RegistryError::NameUnknown(repo.to_string()));
        }
        Ok(self
            .tag_pairs(repo)
            .into_iter()
            .map(|(tag, _)| tag)
            .collect())
    }

    /// The manifests whose subject is `digest` in `repo`, as descriptors,
    /// only those of `artifact_type` when one is given.
    pub fn referrers(
        &self,
        repo: &RepoName,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Vec<Value> {
        let dir = self.repo_dir(repo).join("_referrers").join(digest.hex());
        let mut found: Vec<Value> = file_names(&dir)
            .into_iter()
            .filter_map(|name| serde_json::from_slice(&std::fs::read(dir.join(name)).ok()?).ok())
            .filter(|descriptor: &Value| {
                artifact_type.is_none_or(|wanted| descriptor["artifactType"] == wanted)
            })
            .collect();
        found.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
        found
    }

    /// Every repository, sorted; folders that cannot be read are left out.
    pub fn catalog(&self) -> Vec<RepoName> {
        self.walk_catalog(false).unwrap_or_default()
    }

    /// Every repository, sorted, or the error of any folder that cannot
    /// be read: for the collector, which must not take a repository it
    /// could not see for one without images.
    pub(crate) fn catalog_strict(&self) -> Result<Vec<RepoName>> {
        self.walk_catalog(true)
    }

    fn walk_catalog(&self, strict: bool) -> Result<Vec<RepoName>> {
        let mut found = Vec::new();
        let base = self.root.join("repositories");
        let mut pending = vec![base.clone()];
        while let Some(dir) = pending.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(err) if strict => return Err(err.into()),
                Err(_) => continue,
            };
            let mut is_repo = false;
            for entry in entries {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(err) if strict => return Err(err.into()),
                    Err(_) => continue,
                };
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('_') {
                    is_repo = true;
                } else {
                    match entry.file_type() {
                        Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                        Ok(_) => {}
                        Err(err) if strict => return Err(err.into()),
                        Err(_) => {}
                    }
                }
            }
            if is_repo
                && let Some(name) = dir.strip_prefix(&base).ok().and_then(|rel| rel.to_str())
                && let Ok(repo) = RepoName::parse(name)
            {
                found.push(repo);
            }
        }
        found.sort();
        Ok(found)
    }

    /// Every repository with its tags.
    pub fn list(&self) -> Vec<RepoListing> {
        self.catalog()
            .into_iter()
            .map(|repo| RepoListing {
                tags: self.tag_pairs(&repo),
                manifests: file_names(&self.repo_dir(&repo).join("_manifests")).len(),
                name: repo.to_string(),
            })
            .collect()
    }

    /// The digests of every manifest of `repo`.
    pub(crate) fn manifest_digests(&self, repo: &RepoName) -> Result<Vec<Digest>> {
        Ok(list_dir(&self.repo_dir(repo).join("_manifests"))?
            .into_iter()
            .filter_map(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
            .collect())
    }
}

/// The names of the files in `dir` but the temporary ones (`.…`); a
/// missing folder has none, and any other failure is an error (for the
/// collector, which must not take unreadable for empty).
pub(crate) fn list_dir(dir: &std::path::Path) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            names.push(name);
        }
    }
    Ok(names)
}

/// The names of the files in `dir` but the temporary ones (`.…`).
pub(crate) fn file_names(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .collect()
}
