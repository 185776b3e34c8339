//! How much the store grows per app and month from metering: two months
//! of one-minute flushes for one app with two process groups, pruned as the
//! server prunes (minutes kept 2 days), then the database's size.
//! `cargo run --release -p berth-store --example usage_growth`.

use berth_proto::UsageRow;
use berth_store::Store;

fn main() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("berth.db");
    let store = Store::open(&path).expect("a store");
    let empty = std::fs::metadata(&path).map_or(0, |meta| meta.len());
    let start = 1_796_601_600 - 60 * 86_400;
    let row = |process: &str, minute: u64| UsageRow {
        app: "shop".into(),
        process: process.into(),
        cpus: 1.0,
        memory_mb: 256,
        instance_seconds: 60.0,
        cpu_seconds: 1.5,
        memory_peak_bytes: 40_000_000 + minute,
        memory_avg_bytes: 30_000_000,
        requests: 1_000 + minute,
        bytes_in: 50_000,
        bytes_out: 2_000_000,
        ..UsageRow::default()
    };
    let mut after_a_month = 0;
    for minute in 0..60 * 1_440 {
        if minute == 30 * 1_440 {
            after_a_month = file_size(&path);
        }
        let at = start + minute * 60;
        store
            .add_usage(at, &[row("web", minute), row("worker", minute)])
            .expect("a flush");
        if minute % 1_440 == 0 {
            store.prune_usage(at).expect("a prune");
        }
    }
    let after_two = file_size(&path);
    let mib = |bytes: u64| bytes as f64 / 1_048_576.0;
    println!(
        "one app, two process groups, one-minute flushes: store {:.2} MiB empty, {:.2} MiB after a month, {:.2} MiB after two: {:.2} MiB a month once minutes are pruned; rows kept: minute {}, hour {}, day {}",
        mib(empty),
        mib(after_a_month),
        mib(after_two),
        mib(after_two.saturating_sub(after_a_month)),
        count(&store, "minute", start),
        count(&store, "hour", start),
        count(&store, "day", start),
    );
}

fn count(store: &Store, resolution: &str, start: u64) -> usize {
    store
        .usage(None, resolution, start, start + 70 * 86_400)
        .expect("usage")
        .len()
}

/// The database file's size plus its write-ahead log.
fn file_size(path: &std::path::Path) -> u64 {
    let wal = path.with_extension("db-wal");
    std::fs::metadata(path).map_or(0, |meta| meta.len())
        + std::fs::metadata(wal).map_or(0, |meta| meta.len())
}
