//! Registry storage calls off the async threads: they touch the disk and
//! may wait for the collector's lock, and the server's few worker threads
//! also carry the router.

use std::sync::Arc;

use berth_registry::{Registry, RegistryError};

/// Runs `work` on the blocking pool.
pub(super) async fn offload<T: Send + 'static>(
    registry: &Arc<Registry>,
    work: impl FnOnce(&Registry) -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, RegistryError> {
    let registry = registry.clone();
    tokio::task::spawn_blocking(move || work(&registry))
        .await
        .unwrap_or_else(|err| Err(RegistryError::Io(std::io::Error::other(err.to_string()))))
}
