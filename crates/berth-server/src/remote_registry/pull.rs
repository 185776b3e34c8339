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

/// The name in berth's registry of `path` pulled from `host`: the host
/// with its port's colon made an underscore (`ghcr.io/team/shop`,
/// `127.0.0.1_5000/shop`).
pub(crate) fn local_name(host: &str, path: &str) -> Result<RepoName, String> {
    let host = host.to_ascii_lowercase().replace(':', "_");
    RepoName::parse(&format!("{host}/{path}")).map_err(|err| err.to_string())
}

/// `NAME:TAG`, `NAME@DIGEST` or `NAME` (tag `latest`) split, the name
/// taken whole (its components may hold dots).
pub(crate) fn split_tag(rest: &str) -> Result<(RepoName, String), String> {
    let (name, reference) = match rest.split_once('@') {
        Some((name, digest)) => (without_tag(name), digest.to_string()),
        None => match rest.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')) {
            Some((name, tag)) => (name, tag.to_string()),
            None => (rest, "latest".to_string()),
        },
    };
    let repo = RepoName::parse(name).map_err(|err| format!("{rest}: {err}"))?;
    Ok((repo, reference))
}

/// `NAME:TAG` without its tag (a colon after the last slash).
fn without_tag(name: &str) -> &str {
    name.rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or(name, |(name, _)| name)
}

/// The longest a pull of one blob may take.
const BLOB_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30 * 60);

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
        // A registry that sends no usable type: the manifest's own.
        let media_type = if MANIFEST_MEDIA_TYPES.contains(&media_type.as_str()) {
            media_type
        } else {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|body| body["mediaType"].as_str().map(str::to_string))
                .filter(|declared| MANIFEST_MEDIA_TYPES.contains(&declared.as_str()))
                .ok_or_else(|| {
                    format!("{path}:{reference}: the registry sent no manifest type berth knows ({media_type:?})")
                })?
        };
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
        size: u64,
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
        // No more than the manifest says, and not forever: a registry that
        // sends more, or trickles, fills no disk and holds no deploy.
        let written = tokio::time::timeout(BLOB_DEADLINE, async {
            let mut out = tokio::fs::OpenOptions::new()
                .append(true)
                .open(&file)
                .await?;
            let mut body = answer.bytes_stream();
            let mut received = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(std::io::Error::other)?;
                received += chunk.len() as u64;
                if received > size {
                    return Err(std::io::Error::other(format!(
                        "the registry sent more than the {size} bytes the manifest says"
                    )));
                }
                out.write_all(&chunk).await?;
            }
            out.flush().await
        })
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("it took longer than 30 minutes")));
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
        // The config always; layers unless foreign (fetched from `urls`).
        let descriptors = std::iter::once(&body["config"]).chain(
            body["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|descriptor| descriptor.get("urls").is_none()),
        );
        let mut wanted = Vec::new();
        for descriptor in descriptors {
            let digest = Digest::parse(descriptor["digest"].as_str().unwrap_or_default())
                .map_err(|err| format!("{path}:{reference}: {err}"))?;
            let size = descriptor["size"]
                .as_u64()
                .ok_or_else(|| format!("{path}:{reference}: a descriptor without a size"))?;
            wanted.push((digest, size));
        }
        for (digest, size) in &wanted {
            self.copy_blob(path, digest, *size, registry, local).await?;
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
        let local = |host: &str, path: &str| local_name(host, path).unwrap().as_str().to_string();
        assert_eq!(local("ghcr.io", "team/shop"), "ghcr.io/team/shop");
        assert_eq!(local("127.0.0.1:5000", "shop"), "127.0.0.1_5000/shop");
        assert_eq!(local("localhost", "shop"), "localhost/shop");
        // Hosts that differ give names that differ.
        assert_ne!(local("a-b.io", "x"), local("a.b.io", "x"));
        assert_ne!(local("a.b:5000", "x"), local("a.b5000", "x"));
        assert!(local_name("ghcr.io", "Team/shop").is_err());
    }

    #[test]
    fn a_name_keeps_its_dots_and_its_tag_or_digest() {
        let split = |rest: &str| {
            split_tag(rest).map(|(repo, reference)| (repo.as_str().to_string(), reference))
        };
        assert_eq!(
            split("my.project/app:v1").unwrap(),
            ("my.project/app".into(), "v1".into())
        );
        assert_eq!(split("app").unwrap(), ("app".into(), "latest".into()));
        let digest = format!("sha256:{}", "b".repeat(64));
        assert_eq!(
            split(&format!("team/app:v1@{digest}")).unwrap(),
            ("team/app".into(), digest.clone())
        );
        assert!(split("App:v1").is_err());
    }
}
