//! The built-in registry as the API shows it (`berth registry list|gc`).

use serde::{Deserialize, Serialize};

/// A tag and the manifest digest it names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistryTag {
    /// The tag.
    pub tag: String,
    /// `sha256:…`.
    pub digest: String,
}

/// A repository of the registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistryRepo {
    /// Its name, such as `team/shop`.
    pub name: String,
    /// Its tags, sorted.
    pub tags: Vec<RegistryTag>,
    /// Manifests it holds, tagged or not.
    pub manifests: u64,
}

/// `GET /v1/registry`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistryListing {
    /// Every repository, sorted.
    pub repositories: Vec<RegistryRepo>,
    /// Bytes of blobs and uploads in progress on disk.
    pub disk_bytes: u64,
}

/// `POST /v1/registry/gc`: what a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistryGc {
    /// Untagged, unpinned manifests removed.
    pub manifests_removed: u64,
    /// Blobs deleted.
    pub blobs_removed: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Uploads that had stopped, deleted.
    pub uploads_removed: u64,
    /// Blobs kept.
    pub blobs_kept: u64,
    /// Bytes the registry uses afterwards.
    pub disk_bytes: u64,
}

/// `POST /v1/apps/{app}/image`: which tag to store the app's image as.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BuildImage {
    /// The tag (default: `v` and the release's version).
    pub tag: Option<String>,
}

/// The app's image, as stored in berth's registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BuiltImage {
    /// Its repository (the app's name).
    pub repository: String,
    /// Its tag.
    pub tag: String,
    /// Its manifest digest.
    pub digest: String,
}

/// `POST /v1/registry/logins`: a registry berth may pull images from,
/// and how it signs in there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistryLogin {
    /// Its address: `ghcr.io`, `registry.example.com:5000`.
    pub host: String,
    /// The user name.
    pub username: String,
    /// The password or token; sealed at rest, never shown again.
    pub password: String,
    /// Plain HTTP instead of HTTPS (a registry on this machine or a LAN).
    #[serde(default)]
    pub plain_http: bool,
}

/// `GET /v1/registry/logins`: a registry berth signs in to (no password).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistryLoginInfo {
    /// Its address.
    pub host: String,
    /// The user name.
    pub username: String,
    /// Whether it is reached over plain HTTP.
    pub plain_http: bool,
}
