//! What an app as a whole used, counted where it ends rather than sampled:
//! a build's seconds, a job task's seconds.

use std::time::Duration;

use berth_proto::UsageRow;
use berth_store::Store;

/// Adds `usage` of `app` as a whole (no process group) to the store now.
/// Failures are logged: usage is never worth failing a build or a job for.
fn record(store: &Store, app: &str, usage: UsageRow) {
    let row = UsageRow {
        app: app.to_string(),
        process: String::new(),
        ..usage
    };
    if let Err(err) = store.add_usage(berth_store::now_unix(), &[row]) {
        tracing::warn!(app, error = %err, "cannot record usage");
    }
}

/// A build of `app` that took `took`.
pub(crate) fn record_build(store: &Store, app: &str, took: Duration) {
    record(
        store,
        app,
        UsageRow {
            build_seconds: took.as_secs_f64(),
            ..UsageRow::default()
        },
    );
}

/// A task attempt of a job of `app`, run as `process` (`job-NAME`) at its
/// declared size, that ran `took`: priced like instance time.
pub(crate) fn record_job(store: &Store, app: &str, process: &str, vm: (f64, u32), took: Duration) {
    let row = UsageRow {
        app: app.to_string(),
        process: process.to_string(),
        cpus: vm.0,
        memory_mb: vm.1,
        job_seconds: took.as_secs_f64(),
        ..UsageRow::default()
    };
    if let Err(err) = store.add_usage(berth_store::now_unix(), &[row]) {
        tracing::warn!(app, error = %err, "cannot record usage");
    }
}
