//! An image's config and platform, and the manifest an index holds for
//! this machine.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ImageError, Result, io_error};

/// The largest image config read (they are a few KiB; a blob named as one
/// is read into memory whole, so a bound keeps a pushed gigabyte out).
pub const MAX_CONFIG: u64 = 8 * 1024 * 1024;

/// The bytes of config blob `digest` of `repo`, refused over
/// [`MAX_CONFIG`].
pub(crate) fn read_config(
    registry: &berth_registry::Registry,
    repo: &berth_registry::RepoName,
    digest: &berth_registry::Digest,
) -> Result<Vec<u8>> {
    let (path, size) = registry.blob(repo, digest)?;
    if size > MAX_CONFIG {
        return Err(ImageError::TooLarge(format!(
            "the image config {digest} is {size} bytes (at most {MAX_CONFIG})"
        )));
    }
    std::fs::read(&path).map_err(io_error(format!("cannot read {}", path.display())))
}

/// An operating system and CPU architecture, as images name them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
}

impl Platform {
    /// This machine's.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)
    }
}

/// What an instance of the image runs with. Stored with releases: a
/// field added later reads as its default from older ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    /// `ENTRYPOINT`.
    pub entrypoint: Vec<String>,
    /// `CMD`: the entrypoint's arguments, or the command without one.
    pub cmd: Vec<String>,
    /// `ENV`, in order.
    pub env: Vec<(String, String)>,
    /// `WORKDIR`; `/` when empty.
    pub working_dir: String,
    /// `USER` (berth runs instances as the app's own user instead).
    pub user: String,
    /// `EXPOSE`d TCP ports, sorted.
    pub exposed_ports: Vec<u16>,
    /// Its platform.
    pub platform: Option<Platform>,
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl ImageConfig {
    /// Parses an image config blob (`application/vnd.oci.image.config.v1+json`).
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig> {
        let body: Value = serde_json::from_slice(bytes)
            .map_err(|err| ImageError::Invalid(format!("config is not JSON: {err}")))?;
        let config = body.get("config").cloned().unwrap_or(Value::Null);
        let env = strings(config.get("Env"))
            .into_iter()
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                Some((key.to_string(), value.to_string()))
            })
            .collect();
        let mut exposed_ports: Vec<u16> = config
            .get("ExposedPorts")
            .and_then(Value::as_object)
            .map(|ports| {
                ports
                    .keys()
                    .filter(|port| !port.ends_with("/udp"))
                    .filter_map(|port| port.split('/').next()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        exposed_ports.sort_unstable();
        let platform = match (
            body.get("os").and_then(Value::as_str),
            body.get("architecture").and_then(Value::as_str),
        ) {
            (Some(os), Some(architecture)) => Some(Platform {
                os: os.into(),
                architecture: architecture.into(),
            }),
            _ => None,
        };
        let text = |key: &str| {
            config
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Ok(ImageConfig {
            entrypoint: strings(config.get("Entrypoint")),
            cmd: strings(config.get("Cmd")),
            env,
            working_dir: text("WorkingDir"),
            user: text("User"),
            exposed_ports,
            platform,
        })
    }

    /// The command line: entrypoint then cmd.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }

    /// Refuses an image for another platform than `wanted`.
    pub fn check_platform(&self, wanted: &Platform) -> Result<()> {
        match &self.platform {
            Some(found) if found != wanted => Err(ImageError::Platform {
                wanted: wanted.to_string(),
                found: found.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

/// The digest of the manifest for `wanted` in an image index.
pub fn pick_from_index(index: &[u8], wanted: &Platform) -> Result<String> {
    let body: Value = serde_json::from_slice(index)
        .map_err(|err| ImageError::Invalid(format!("index is not JSON: {err}")))?;
    let manifests = body
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| ImageError::Invalid("index has no manifests".into()))?;
    let mut offered = Vec::new();
    for manifest in manifests {
        let platform = manifest.get("platform");
        let os = platform.and_then(|p| p.get("os")).and_then(Value::as_str);
        let architecture = platform
            .and_then(|p| p.get("architecture"))
            .and_then(Value::as_str);
        if let (Some(os), Some(architecture)) = (os, architecture) {
            if os == wanted.os && architecture == wanted.architecture {
                return manifest
                    .get("digest")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| ImageError::Invalid("index entry without a digest".into()));
            }
            offered.push(format!("{os}/{architecture}"));
        }
    }
    Err(ImageError::NoPlatform {
        wanted: wanted.to_string(),
        found: if offered.is_empty() {
            "no platforms".into()
        } else {
            offered.join(", ")
        },
    })
}

#[cfg(test)]
mod tests {
    use berth_registry::{Digest, Registry, RepoName};

    #[test]
    fn a_config_blob_over_the_bound_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let repo = RepoName::parse("shop").unwrap();
        let small = br#"{"architecture":"amd64","os":"linux"}"#;
        registry.put_blob(&repo, &Digest::of(small), small).unwrap();
        assert_eq!(
            super::read_config(&registry, &repo, &Digest::of(small)).unwrap(),
            small
        );
        let huge = vec![b' '; super::MAX_CONFIG as usize + 1];
        registry.put_blob(&repo, &Digest::of(&huge), &huge).unwrap();
        match super::read_config(&registry, &repo, &Digest::of(&huge)) {
            Err(crate::ImageError::TooLarge(why)) => assert!(why.contains("config"), "{why}"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}
