//! Keeping each app's logs within its `[logs]` retention: every minute, the
//! age and size bound of its active release's spec (or the defaults) go to
//! the log store, which deletes what is older and trims what is over.

use std::sync::Arc;
use std::time::Duration;

use berth_logs::{LogStore, Retention};
use berth_spec::LogsSpec;
use berth_store::Store;
use tokio_util::sync::CancellationToken;

/// How often retention is applied (lines age between passes).
const EVERY: Duration = Duration::from_secs(60);

/// The retention `spec` asks for.
pub fn retention_of(spec: &LogsSpec) -> Retention {
    Retention {
        max_age_micros: i64::try_from(spec.retain_or_default().as_micros()).unwrap_or(i64::MAX),
        max_bytes: spec.max_bytes_or_default(),
    }
}

/// Applies every app's retention now.
pub fn apply_all(store: &Store, logs: &LogStore) {
    let apps = match store.apps() {
        Ok(apps) => apps,
        Err(err) => {
            tracing::warn!(error = %err, "cannot list apps to apply log retention");
            return;
        }
    };
    for app in apps {
        let spec = store
            .active_release(&app.name)
            .ok()
            .flatten()
            .and_then(|release| crate::stored_spec::spec_of(&release).ok())
            .map(|spec| spec.logs)
            .unwrap_or_default();
        if logs.retain(&app.name, retention_of(&spec)).is_err() {
            return;
        }
    }
}

/// Applies retention at start and every [`EVERY`] until `shutdown`.
pub async fn run(store: Arc<Store>, logs: Arc<LogStore>, shutdown: CancellationToken) {
    loop {
        let (store, logs_now) = (store.clone(), logs.clone());
        let _ = tokio::task::spawn_blocking(move || apply_all(&store, &logs_now)).await;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}
