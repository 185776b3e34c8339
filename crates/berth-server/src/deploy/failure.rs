//! Why a deploy failed, and where its progress lines go.

use berth_proto::DeployProgress;
use berth_store::StoreError;
use tokio::sync::mpsc;

use crate::services::ResourcesError;

impl From<ResourcesError> for DeployFailure {
    fn from(err: ResourcesError) -> Self {
        DeployFailure::before_release(err.to_string())
    }
}

/// Where progress lines of a deploy go (the client's NDJSON stream).
pub type Progress = mpsc::UnboundedSender<DeployProgress>;

pub(crate) fn say(progress: &Progress, message: impl Into<String>) {
    let _ = progress.send(DeployProgress::Step {
        message: message.into(),
    });
}

/// Why a deploy failed; the message is for a person.
#[derive(Debug)]
pub struct DeployFailure {
    /// What went wrong.
    pub message: String,
    /// The release that was tried, if one was made.
    pub release: Option<u64>,
}

impl DeployFailure {
    pub(crate) fn before_release(message: impl Into<String>) -> Self {
        DeployFailure {
            message: message.into(),
            release: None,
        }
    }
}

impl From<StoreError> for DeployFailure {
    fn from(err: StoreError) -> Self {
        DeployFailure::before_release(err.to_string())
    }
}
