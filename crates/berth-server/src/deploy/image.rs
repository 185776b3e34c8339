//! Deploys of an image instead of source: the image is found in berth's
//! registry (`berth deploy --image REF`, fly.toml `[build] image`,
//! render's `image:`), unpacked once into a root of its own, and pinned
//! by digest in a small slug (`.berth/image.json`), so a release — and a
//! rollback to it — always runs the same image, whatever its tag says now.

use berth_image::{ImageStore, Platform, UnpackLimits};
use berth_registry::RepoName;

use super::Deployer;
use super::failure::{DeployFailure, Progress, say};
use crate::launch::{IMAGE_FILE_NAME, PinnedImage};

/// `NAME[:TAG|@DIGEST]`, with this machine's registry address before it
/// or not (`127.0.0.1:8079/shop:v1`): the repository and reference.
pub(crate) fn parse_reference(reference: &str) -> Result<(RepoName, String), String> {
    let mut rest = reference.trim();
    // A registry address before the name (as pushed: `SERVER:8079/shop`):
    // berth looks in its own registry whatever it is.
    if let Some((host, after)) = rest.split_once('/')
        && (host.contains(':') || host.contains('.') || host.contains('[') || host == "localhost")
    {
        rest = after;
    }
    let (name, tag) = match rest.split_once('@') {
        // `name:tag@digest`: the digest decides.
        Some((name, digest)) => (
            name.split_once(':').map_or(name, |(name, _)| name),
            digest.to_string(),
        ),
        None => match rest.rsplit_once(':') {
            Some((name, tag)) => (name, tag.to_string()),
            None => (rest, "latest".to_string()),
        },
    };
    let repo = RepoName::parse(name).map_err(|err| format!("{reference}: {err}"))?;
    Ok((repo, tag))
}

impl Deployer {
    /// Finds `reference` in the registry, unpacks it (once per digest) and
    /// stores a slug pinning it; the slug's digest and the image.
    pub(super) async fn image_slug(
        &self,
        app: &str,
        reference: &str,
        progress: &Progress,
    ) -> Result<(String, PinnedImage), DeployFailure> {
        // Pulled from a registry signed in to: its place in berth's own
        // (never read back from text, where the host would be dropped).
        let (repo, tag) = match self.pull_if_remote(reference, progress).await? {
            Some(pulled) => pulled,
            None => parse_reference(reference).map_err(DeployFailure::before_release)?,
        };
        say(
            progress,
            format!("image {repo}:{tag} from berth's registry"),
        );
        let registry = self.registry.clone();
        let store = ImageStore::new(&self.resources.images_dir(), UnpackLimits::default());
        let slugs = self.slugs.clone();
        let (app, reference) = (app.to_string(), reference.to_string());
        tokio::task::spawn_blocking(move || {
            let prepared = store
                .prepare(&registry, &repo, &tag, &Platform::host())
                .map_err(|err| match err {
                    berth_image::ImageError::Registry(
                        berth_registry::RegistryError::ManifestUnknown(_)
                        | berth_registry::RegistryError::NameUnknown(_),
                    ) => format!(
                        "{reference}: manifest unknown in berth's registry (berth runs images from its own registry: push it there first, see docs/registry.md)"
                    ),
                    other => format!("{reference}: {other}"),
                })?;
            let pinned = PinnedImage {
                reference,
                repository: repo.to_string(),
                manifest: prepared.manifest.to_string(),
                config: prepared.config,
            };
            let empty = tempfile::tempdir().map_err(|err| err.to_string())?;
            let pin = serde_json::to_vec_pretty(&pinned).expect("an image serializes");
            let slug = slugs
                .store_with(&app, empty.path(), &[], &[(IMAGE_FILE_NAME, &pin)])
                .map_err(|err| err.to_string())?;
            Ok::<_, String>((slug, pinned))
        })
        .await
        .map_err(|err| {
            DeployFailure::before_release(format!("unpacking the image stopped: {err}"))
        })?
        .map_err(DeployFailure::before_release)
    }
}

impl Deployer {
    /// When `reference` names a host berth signs in to (`berth registry
    /// login`), copies the image into berth's registry and returns where
    /// it is there, pinned by digest.
    async fn pull_if_remote(
        &self,
        reference: &str,
        progress: &Progress,
    ) -> Result<Option<(RepoName, String)>, DeployFailure> {
        let Some((host, rest)) = crate::remote_registry::split_host(reference) else {
            return Ok(None);
        };
        let Some(remote) = self.registry_logins.client(host) else {
            return Ok(None);
        };
        let fail =
            |err: String| DeployFailure::before_release(format!("pulling {reference}: {err}"));
        let remote = remote.map_err(fail)?;
        let (path, tag) = crate::remote_registry::split_tag(rest).map_err(fail)?;
        let local = crate::remote_registry::local_name(host, path.as_str()).map_err(fail)?;
        say(
            progress,
            format!("pulling {reference} into berth's registry as {local}"),
        );
        let digest = remote
            .pull(
                path.as_str(),
                &tag,
                &Platform::host(),
                &self.registry,
                &local,
            )
            .await
            .map_err(fail)?;
        Ok(Some((local, digest.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_this_registry_or_none() {
        let parsed = |text: &str| parse_reference(text).map(|(repo, tag)| (repo.to_string(), tag));
        assert_eq!(parsed("shop").unwrap(), ("shop".into(), "latest".into()));
        assert_eq!(
            parsed("team/shop:v1").unwrap(),
            ("team/shop".into(), "v1".into())
        );
        assert_eq!(
            parsed("127.0.0.1:8079/shop:v1").unwrap(),
            ("shop".into(), "v1".into())
        );
        assert_eq!(
            parsed("localhost:5000/shop").unwrap(),
            ("shop".into(), "latest".into())
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parsed(&format!("shop@{digest}")).unwrap(),
            ("shop".into(), digest.clone())
        );
        assert_eq!(
            parsed("docker.io/library/postgres:16").unwrap(),
            ("library/postgres".into(), "16".into())
        );
        assert_eq!(
            parsed("[::1]:8079/shop:v2").unwrap(),
            ("shop".into(), "v2".into())
        );
        assert_eq!(
            parsed(&format!("shop:v1@{digest}")).unwrap(),
            ("shop".into(), digest.clone())
        );
        assert!(parsed("Shop:v1").is_err());
    }
}
