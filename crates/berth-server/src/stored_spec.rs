//! A release's spec as the store keeps it (JSON), decoded in one place.

use berth_spec::AppSpec;
use berth_store::ReleaseRow;

/// A release whose stored spec does not decode (a damaged store, or one
/// written by a newer berth): it must not run as if it had no config.
#[derive(Debug, thiserror::Error)]
#[error("the stored spec of {app} v{version} cannot be read ({reason}); deploy again or roll back")]
pub struct UnreadableSpec {
    /// The app.
    pub app: String,
    /// The release.
    pub version: u64,
    /// What the decoder said.
    pub reason: String,
}

/// The spec `release` was made with: the one place a stored spec is decoded.
pub fn spec_of(release: &ReleaseRow) -> Result<AppSpec, UnreadableSpec> {
    serde_json::from_str(&release.spec_json).map_err(|err| UnreadableSpec {
        app: release.app.clone(),
        version: release.version,
        reason: err.to_string(),
    })
}
