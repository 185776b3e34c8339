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

/// An image root made or used this recently stays, whatever the grace:
/// a deploy may be between making it and storing its release.
const MIN_ROOT_GRACE: Duration = Duration::from_secs(600);

/// What names the images releases run: the manifests their slugs pin.
pub(crate) type Pins = Arc<dyn Fn() -> Result<HashSet<Digest>, String> + Send + Sync>;

/// The manifests the releases of every app pin (an image release's slug
/// names its digest): the collector keeps them, and their roots.
pub(crate) fn release_pins(store: Arc<berth_store::Store>, slugs: berth_build::SlugStore) -> Pins {
    Arc::new(move || {
        let mut pinned = HashSet::new();
        for app in store.apps().map_err(|err| err.to_string())? {
            for release in store.releases(&app.name).map_err(|err| err.to_string())? {
                let slug = slugs.path(&release.slug);
                // A slug already collected pins nothing; one unreadable
                // stops the collection.
                if !slug.is_dir() {
                    continue;
                }
                if let Some(image) = crate::launch::PinnedImage::of_slug(&slug)? {
                    pinned.insert(Digest::parse(&image.manifest).map_err(|err| err.to_string())?);
                }
            }
        }
        Ok(pinned)
    })
}

/// Collects now, keeping what releases pin and what was pushed within
/// `grace` (tagged or not: a push in progress has blobs no manifest names
/// yet); then the roots of images no release runs any more.
fn collect(
    registry: &Registry,
    images: &berth_image::ImageStore,
    pins: &Pins,
    grace: Duration,
) -> Result<RegistryGc, String> {
    let pinned = pins()?;
    let report = registry
        .collect_garbage(&pinned, SystemTime::now(), grace)
        .map_err(|err| err.to_string())?;
    images
        .remove_unused(&pinned, SystemTime::now(), grace.max(MIN_ROOT_GRACE))
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
    images: berth_image::ImageStore,
    pins: Pins,
    grace: Duration,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(EVERY) => {}
            }
            let (registry, images, pins) = (registry.clone(), images.clone(), pins.clone());
            let collected =
                tokio::task::spawn_blocking(move || collect(&registry, &images, &pins, grace))
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
    let images = berth_image::ImageStore::new(
        &state.resources.images_dir(),
        berth_image::UnpackLimits::default(),
    );
    let pins = release_pins(state.store.clone(), state.deployer.slugs.clone());
    tokio::task::spawn_blocking(move || collect(&registry, &images, &pins, grace))
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
