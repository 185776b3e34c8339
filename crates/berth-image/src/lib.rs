//! OCI images made runnable: an image's config (entrypoint, cmd, env,
//! working dir, user, exposed ports) and platform, the manifest an index
//! holds for this machine, and its layers unpacked — gzip, zstd or plain
//! tar, whiteouts and opaque directories, hard links — into a root file
//! system that nothing in a layer can climb out of.
//!
//! Roots are content-addressed by the image's manifest digest under the
//! store's directory and made whole or not at all (unpacked beside, then
//! renamed), so a release that pins a digest always finds the same root.

mod compose;
mod config;
mod elf;
mod overlay;
mod store;
mod tar_headers;
mod unpack;

pub use compose::{ImageSettings, LayerWriter, WrittenLayer, publish};
pub use config::{ImageConfig, Platform, pick_from_index};
pub use elf::{is_not_elf, shared_libraries};
pub use store::{ImageStore, PreparedImage};
pub use unpack::is_dir_in_root;
pub use unpack::{LayerStats, UnpackLimits, unpack_layer, unpack_layer_alone};

/// Why an image cannot be made runnable.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A layer entry whose path climbs out of the root (`../`).
    #[error("layer entry {0:?} would escape the image's root")]
    Escapes(String),
    /// A layer that is not a tar stream (or a compressed one).
    #[error("a layer is not a valid tar stream: {0}")]
    Malformed(String),
    /// Past the size or entry limits.
    #[error("the image is larger than berth unpacks ({0})")]
    TooLarge(String),
    /// An image for another platform.
    #[error("the image is for {found}; this machine runs {wanted}")]
    Platform {
        /// This machine's.
        wanted: String,
        /// The image's.
        found: String,
    },
    /// An index without a manifest for this machine.
    #[error("the image index has no manifest for {wanted} (it has: {found})")]
    NoPlatform {
        /// This machine's.
        wanted: String,
        /// What the index offers.
        found: String,
    },
    /// A manifest or config that is not what the spec says.
    #[error("the image's {0}")]
    Invalid(String),
    /// Reading the registry.
    #[error(transparent)]
    Registry(#[from] berth_registry::RegistryError),
    /// The disk.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Results of this crate.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

#[cfg(test)]
mod tests;
