//! The registry's upkeep: garbage collection every hour and on request
//! (`berth registry gc`), and what it holds (`berth registry list`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use berth_proto::{RegistryGc, RegistryListing, RegistryRepo, RegistryTag};
use berth_registry::{Digest, Registry};
use tokio_util::sync::CancellationToken;

use crate::api::error::ApiFailure;
use crate::api::state::ApiState;

/// How often the collector runs.
const EVERY: Duration = Duration::from_secs(3600);

/// Collects now, keeping `pinned` and what was pushed within `grace`
/// (tagged or not: a push in progress has blobs no manifest names yet).
fn collect(
    registry: &Registry,
    pinned: &HashSet<Digest>,
    grace: Duration,
) -> Result<RegistryGc, String> {
    let report = registry
        .collect_garbage(pinned, SystemTime::now(), grace)
        .map_err(|err| err.to_string())?;
    Ok(RegistryGc {
        manifests_removed: report.manifests_removed as u64,
        blobs_removed: report.blobs_removed as u64,
        bytes_freed: report.bytes_freed,
        uploads_removed: report.uploads_removed as u64,
        blobs_kept: report.blobs_kept as u64,
        disk_bytes: registry.disk_bytes(),
    })
}

/// Runs the collector every hour until `shutdown`.
pub(crate) fn spawn_collector(
    registry: Arc<Registry>,
    grace: Duration,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(EVERY) => {}
            }
            let registry = registry.clone();
            let collected =
                tokio::task::spawn_blocking(move || collect(&registry, &HashSet::new(), grace))
                    .await;
            match collected {
                Ok(Ok(report)) if report.blobs_removed + report.uploads_removed > 0 => {
                    tracing::info!(?report, "registry: garbage collected");
                }
                Ok(Err(err)) => tracing::warn!(error = %err, "registry: collection failed"),
                _ => {}
            }
        }
    });
}

/// `POST /v1/registry/gc`: collects now.
#[utoipa::path(post, path = "/v1/registry/gc", responses((status = 200, body = RegistryGc)))]
pub(crate) async fn gc_now(State(state): State<ApiState>) -> Result<Json<RegistryGc>, ApiFailure> {
    let (registry, grace) = (state.registry.clone(), state.registry_grace);
    tokio::task::spawn_blocking(move || collect(&registry, &HashSet::new(), grace))
        .await
        .map_err(|err| ApiFailure::Internal(err.to_string()))?
        .map(Json)
        .map_err(ApiFailure::Internal)
}

/// `GET /v1/registry`: repositories, tags and the disk used.
#[utoipa::path(get, path = "/v1/registry", responses((status = 200, body = RegistryListing)))]
pub(crate) async fn listing(State(state): State<ApiState>) -> Json<RegistryListing> {
    let registry = state.registry.clone();
    let listing = tokio::task::spawn_blocking(move || RegistryListing {
        repositories: registry
            .list()
            .into_iter()
            .map(|repo| RegistryRepo {
                name: repo.name,
                manifests: repo.manifests as u64,
                tags: repo
                    .tags
                    .into_iter()
                    .map(|(tag, digest)| RegistryTag { tag, digest })
                    .collect(),
            })
            .collect(),
        disk_bytes: registry.disk_bytes(),
    })
    .await
    .unwrap_or_default();
    Json(listing)
}
