//! Copying an image from another registry into berth's: the manifest for
//! this machine's platform (picked from an index), its config and layers
//! (each checked against its digest as it is stored), then the manifest
//! under its tag.

use std::sync::Arc;

use berth_image::Platform;
use berth_registry::{Digest, MANIFEST_MEDIA_TYPES, MAX_MANIFEST, Registry, RepoName};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::RemoteRegistry;

/// `HOST/REST` split when the first component is a registry address
/// (has a dot or a colon, or is `localhost`), as docker reads references.
pub(crate) fn split_host(reference: &str) -> Option<(&str, &str)> {
    let (host, rest) = reference.trim().split_once('/')?;
    let is_host = host.contains('.') || host.contains(':') || host == "localhost";
    (is_host && !rest.is_empty()).then_some((host, rest))
}

/// The name in berth's registry of `path` pulled from `host`: the host's
/// dots, colons and brackets made single dashes (`ghcr-io/team/shop`), so
/// the name never reads as an address of its own.
pub(crate) fn local_name(host: &str, path: &str) -> Result<RepoName, String> {
    let mut prefix = String::new();
    for c in host.chars() {
        if c.is_ascii_alphanumeric() {
            prefix.push(c.to_ascii_lowercase());
        } else if !prefix.ends_with('-') && !prefix.is_empty() {
            prefix.push('-');
        }
    }
    let prefix = prefix.trim_end_matches('-');
    RepoName::parse(&format!("{prefix}/{path}")).map_err(|err| err.to_string())
}

/// A manifest as fetched: media type and bytes.
struct Fetched {
    media_type: String,
    bytes: Vec<u8>,
    digest: Digest,
}

impl RemoteRegistry {
    async fn manifest(&self, path: &str, reference: &str) -> Result<Fetched, String> {
        let answer = self
            .get(
                &format!("{path}/manifests/{reference}"),
                &MANIFEST_MEDIA_TYPES,
            )
            .await?;
        if !answer.status().is_success() {
            return Err(format!(
                "{path}:{reference}: the registry answered {}",
                answer.status()
            ));
        }
        let media_type = answer
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                value
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        let mut bytes = Vec::new();
        let mut body = answer.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|err| format!("{path}:{reference}: {err}"))?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_MANIFEST {
                return Err(format!("{path}:{reference}: the manifest is too large"));
            }
        }
        let digest = Digest::of(&bytes);
        if reference.starts_with("sha256:") && reference != digest.as_str() {
            return Err(format!(
                "{path}@{reference}: the registry sent a manifest whose digest is {digest}"
            ));
        }
        Ok(Fetched {
            media_type,
            bytes,
            digest,
        })
    }

    /// Stores blob `digest` of `path` in `registry` as `local`'s.
    async fn copy_blob(
        &self,
        path: &str,
        digest: &Digest,
        registry: &Arc<Registry>,
        local: &RepoName,
    ) -> Result<(), String> {
        if registry.blob(local, digest).is_ok() {
            return Ok(());
        }
        let answer = self.get(&format!("{path}/blobs/{digest}"), &[]).await?;
        if !answer.status().is_success() {
            return Err(format!(
                "{path}: blob {digest}: the registry answered {}",
                answer.status()
            ));
        }
        let id = registry
            .start_upload(local)
            .map_err(|err| err.to_string())?;
        let (file, _) = registry.upload(local, &id).map_err(|err| err.to_string())?;
        let written = async {
            let mut out = tokio::fs::OpenOptions::new()
                .append(true)
                .open(&file)
                .await?;
            let mut body = answer.bytes_stream();
            while let Some(chunk) = body.next().await {
                out.write_all(&chunk.map_err(std::io::Error::other)?)
                    .await?;
            }
            out.flush().await
        }
        .await;
        if let Err(err) = written {
            let _ = registry.cancel_upload(local, &id);
            return Err(format!("{path}: blob {digest}: {err}"));
        }
        let (registry, local, digest) = (registry.clone(), local.clone(), digest.clone());
        tokio::task::spawn_blocking(move || registry.finish_upload(&local, &id, &digest))
            .await
            .map_err(|err| err.to_string())?
            .map(|_| ())
            .map_err(|err| format!("{path}: {err}"))
    }

    /// Copies `path:reference` for `platform` into `registry` as `local`
    /// (tagged `reference` when it is a tag); the manifest's digest.
    pub(crate) async fn pull(
        &self,
        path: &str,
        reference: &str,
        platform: &Platform,
        registry: &Arc<Registry>,
        local: &RepoName,
    ) -> Result<Digest, String> {
        let mut manifest = self.manifest(path, reference).await?;
        let is_index =
            manifest.media_type.contains("index") || manifest.media_type.contains("manifest.list");
        if is_index {
            let chosen = berth_image::pick_from_index(&manifest.bytes, platform)
                .map_err(|err| format!("{path}:{reference}: {err}"))?;
            manifest = self.manifest(path, &chosen).await?;
        }
        let body: serde_json::Value = serde_json::from_slice(&manifest.bytes)
            .map_err(|err| format!("{path}:{reference}: the manifest is not JSON: {err}"))?;
        let descriptors = std::iter::once(&body["config"])
            .chain(body["layers"].as_array().into_iter().flatten())
            .filter(|descriptor| descriptor.get("urls").is_none());
        for descriptor in descriptors {
            let digest = Digest::parse(descriptor["digest"].as_str().unwrap_or_default())
                .map_err(|err| format!("{path}:{reference}: {err}"))?;
            self.copy_blob(path, &digest, registry, local).await?;
        }
        let registry = registry.clone();
        let local = local.clone();
        let tag = (!reference.starts_with("sha256:")).then(|| reference.to_string());
        tokio::task::spawn_blocking(move || {
            let stored = registry.put_manifest(
                &local,
                manifest.digest.as_str(),
                &manifest.media_type,
                &manifest.bytes,
            )?;
            if let Some(tag) = tag {
                registry.put_manifest(&local, &tag, &manifest.media_type, &manifest.bytes)?;
            }
            Ok::<_, berth_registry::RegistryError>(stored.digest)
        })
        .await
        .map_err(|err| err.to_string())?
        .map_err(|err| format!("{path}:{reference}: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_told_from_names_and_become_names_of_their_own() {
        assert_eq!(
            split_host("ghcr.io/team/shop:v1"),
            Some(("ghcr.io", "team/shop:v1"))
        );
        assert_eq!(
            split_host("127.0.0.1:5000/shop"),
            Some(("127.0.0.1:5000", "shop"))
        );
        assert_eq!(split_host("localhost/shop"), Some(("localhost", "shop")));
        assert_eq!(split_host("team/shop:v1"), None);
        assert_eq!(split_host("shop"), None);
        assert_eq!(
            local_name("ghcr.io", "team/shop").unwrap().as_str(),
            "ghcr-io/team/shop"
        );
        assert_eq!(
            local_name("127.0.0.1:5000", "shop").unwrap().as_str(),
            "127-0-0-1-5000/shop"
        );
        assert_eq!(
            local_name("[::1]:5000", "shop").unwrap().as_str(),
            "1-5000/shop"
        );
        assert!(local_name("ghcr.io", "Team/shop").is_err());
    }
}
