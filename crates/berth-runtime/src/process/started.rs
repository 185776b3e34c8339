//! What starting an instance's process gives back.

use tokio::io::AsyncRead;

use crate::ExitCause;

/// A started instance process: its pid, output, and its exit to come.
pub(super) struct Started {
    pub(super) pid: u32,
    pub(super) stdout: Box<dyn AsyncRead + Send + Unpin>,
    pub(super) stderr: Box<dyn AsyncRead + Send + Unpin>,
    /// Its exit status, or why there is none (it could not execute its
    /// program, say).
    pub(super) exit:
        std::pin::Pin<Box<dyn Future<Output = Result<std::process::ExitStatus, ExitCause>> + Send>>,
}
