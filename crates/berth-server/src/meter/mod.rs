//! The meter: samples what runs every second (instances by size, their
//! cgroups' CPU and memory, the router's counts) and flushes it to the
//! store every `--meter-interval` (10 s), then has the budgets evaluated.
//! Volumes, databases and backups are measured hourly; builds and job executions are recorded
//! where they end. Requests pay two uncontended lock operations for it:
//! the router only bumps counters the sampler reads.

mod disk_usage;
mod egress;
mod sample;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_store::Store;
use tokio_util::sync::CancellationToken;

use crate::budgets::Budgets;
use crate::reconciler::ReconcilerHandle;
use sample::{Sampler, Sizes};

/// How often what runs is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How long the hourly database sizes may take.
const STORAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// How often rows past their keeping are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// A release's spec and its process groups.
type ReleaseShape = Arc<(berth_spec::AppSpec, Vec<String>)>;

/// Sizes and web groups read from the store's releases, cached.
struct StoredSizes {
    store: Arc<Store>,
    specs: HashMap<(String, u64), Option<ReleaseShape>>,
}

impl StoredSizes {
    fn spec(&mut self, app: &str, release: u64) -> Option<ReleaseShape> {
        let store = &self.store;
        self.specs
            .entry((app.to_string(), release))
            .or_insert_with(|| {
                let row = store.release(app, release).ok()?;
                let spec = crate::stored_spec::spec_of(&row).ok()?;
                Some(Arc::new((spec, row.processes.keys().cloned().collect())))
            })
            .clone()
    }
}

impl Sizes for StoredSizes {
    fn size(&mut self, app: &str, release: u64, process: &str) -> (f64, u32) {
        let vm = self
            .spec(app, release)
            .map(|spec| spec.0.vm_for(process))
            .unwrap_or_default();
        (vm.cpus, vm.memory_mb)
    }

    fn sent_bytes(&mut self, pid: u32) -> Option<u64> {
        egress::sent_bytes(pid)
    }

    fn web_group(&mut self, app: &str, release: u64) -> Option<String> {
        let spec = self.spec(app, release)?;
        spec.1
            .iter()
            .find(|group| spec.0.serves_http(group))
            .cloned()
    }
}

/// What metering is started with.
pub(crate) struct MeterSetup {
    pub(crate) store: Arc<Store>,
    pub(crate) reconciler: ReconcilerHandle,
    pub(crate) jobs: Arc<crate::jobs::JobRunner>,
    /// The price tables (shipped, or `--prices`).
    pub(crate) prices: Arc<Vec<berth_cost::PriceTable>>,
    /// What the server costs a month (`--server-usd`).
    pub(crate) server_usd: Option<f64>,
    /// How often usage is written; `None`: no metering (`--no-meter`).
    pub(crate) every: Option<Duration>,
    pub(crate) volumes_dir: std::path::PathBuf,
    pub(crate) resources: Arc<crate::services::Resources>,
}

/// Starts the webhook deliverer, the budgets and (unless off) the meter:
/// the budgets, for the API, and the meter's task, to wait for at shutdown.
pub(crate) fn start(
    setup: MeterSetup,
    shutdown: &CancellationToken,
) -> (Arc<Budgets>, Option<tokio::task::JoinHandle<()>>) {
    let notifier = crate::notify::Notifier::new(setup.store.clone());
    tokio::spawn(notifier.clone().run(shutdown.clone()));
    let budgets = Arc::new(Budgets {
        store: setup.store.clone(),
        tables: setup.prices,
        server_usd: setup.server_usd,
        reconciler: setup.reconciler.clone(),
        jobs: setup.jobs,
        notifier,
        lock: std::sync::Mutex::new(()),
    });
    berth_router::set_metering(setup.every.is_some());
    let task = setup.every.map(|every| {
        tokio::spawn(
            Meter {
                store: setup.store,
                reconciler: setup.reconciler,
                budgets: budgets.clone(),
                every,
                volumes_dir: setup.volumes_dir,
                resources: setup.resources,
            }
            .run(shutdown.clone()),
        )
    });
    (budgets, task)
}

/// What the meter needs.
pub(crate) struct Meter {
    pub(crate) store: Arc<Store>,
    pub(crate) reconciler: ReconcilerHandle,
    pub(crate) budgets: Arc<Budgets>,
    /// How often usage is written and budgets evaluated.
    pub(crate) every: Duration,
    /// Where apps' volumes are (their size is metered hourly).
    pub(crate) volumes_dir: std::path::PathBuf,
    /// Databases and their backups (their size is metered hourly).
    pub(crate) resources: Arc<crate::services::Resources>,
}

impl Meter {
    /// Samples and flushes until `shutdown`, then flushes once more.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut sampler = Sampler::default();
        let mut sizes = StoredSizes {
            store: self.store.clone(),
            specs: HashMap::new(),
        };
        let mut sample = tokio::time::interval(SAMPLE_EVERY.min(self.every));
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush =
            tokio::time::interval_at(tokio::time::Instant::now() + self.every, self.every);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune = tokio::time::Instant::now();
        let mut first_flush = true;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    sampler.sample(&self.reconciler.snapshot(), &mut sizes, std::time::Instant::now());
                    self.flush(sampler.take(), false).await;
                    return;
                }
                _ = sample.tick() => {
                    sampler.sample(&self.reconciler.snapshot(), &mut sizes, std::time::Instant::now());
                }
                _ = flush.tick() => {
                    sampler.sample(&self.reconciler.snapshot(), &mut sizes, std::time::Instant::now());
                    let hourly = last_prune.elapsed() >= PRUNE_EVERY || first_flush;
                    first_flush = false;
                    if hourly {
                        last_prune = tokio::time::Instant::now();
                    }
                    let mut rows = sampler.take();
                    if hourly {
                        rows.extend(self.storage_rows().await);
                    }
                    self.flush(rows, hourly).await;
                    // Releases come and go: the cache starts over now and then.
                    if sizes.specs.len() > 1024 {
                        sizes.specs.clear();
                    }
                }
            }
        }
    }

    /// What each app's volumes, database and backups hold now.
    async fn storage_rows(&self) -> Vec<berth_proto::UsageRow> {
        let volumes = self.volumes_dir.clone();
        let mut rows: Vec<berth_proto::UsageRow> =
            tokio::task::spawn_blocking(move || disk_usage::volume_bytes(&volumes))
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, bytes)| *bytes > 0)
                .map(|(app, bytes)| berth_proto::UsageRow {
                    app,
                    volume_bytes: bytes,
                    ..berth_proto::UsageRow::default()
                })
                .collect();
        // A stuck database must not stop the meter.
        let storage = tokio::time::timeout(STORAGE_TIMEOUT, self.resources.storage_bytes())
            .await
            .unwrap_or_else(|_| {
                tracing::warn!(
                    "database sizes took over {}s; skipped this hour",
                    STORAGE_TIMEOUT.as_secs()
                );
                Vec::new()
            });
        for (app, database, backups) in storage {
            rows.push(berth_proto::UsageRow {
                app,
                database_bytes: database,
                backup_bytes: backups,
                ..berth_proto::UsageRow::default()
            });
        }
        rows
    }

    /// Writes `rows` and evaluates the budgets.
    async fn flush(&self, rows: Vec<berth_proto::UsageRow>, prune: bool) {
        let store = self.store.clone();
        let now = berth_store::now_unix();
        let written = tokio::task::spawn_blocking(move || {
            if !rows.is_empty() {
                store.add_usage(now, &rows)?;
            }
            if prune {
                store.prune_usage(now)?;
            }
            Ok::<_, berth_store::StoreError>(())
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(error = %err, "cannot write usage"),
            Err(err) => tracing::error!(error = %err, "the usage writer stopped"),
        }
        self.budgets.evaluate(now).await;
    }
}
