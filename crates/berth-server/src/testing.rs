//! A server's core without processes, for unit tests: a real store, log
//! store, launcher and reconciler over a temp dir, with a
//! [`FakeDriver`] for instances and a health probe that asks it. Tests run
//! on a paused tokio clock, so restarts, drains and timeouts of a minute
//! take milliseconds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_build::SlugStore;
use berth_logs::LogStore;
use berth_proto::InstanceState;
use berth_router::RouteTable;
use berth_runtime::fake::FakeDriver;
use berth_spec::{AppSpec, HealthCheck};
use berth_store::{NewRelease, Store};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::deploy::Deployer;
use crate::health::{HealthProbe, Namespace, ProbeFuture};
use crate::launch::Launcher;
use crate::reconciler::{Reconciler, ReconcilerHandle, ReconcilerParts};
use crate::services::Resources;

/// The slug every fake release runs (an empty folder).
pub(crate) const SLUG: &str = "fake-slug";

/// Health as the fake driver's scripts say.
pub(crate) struct FakeProbe(pub(crate) FakeDriver);

impl HealthProbe for FakeProbe {
    fn probe<'a>(
        &'a self,
        addr: SocketAddr,
        _netns: &'a Namespace,
        _check: &'a HealthCheck,
    ) -> ProbeFuture<'a, Result<(), String>> {
        let answers = self.0.answers_on(addr.port());
        Box::pin(async move {
            if answers {
                Ok(())
            } else {
                Err(format!("connect to {addr}: refused"))
            }
        })
    }

    fn wait_until_healthy<'a>(
        &'a self,
        addr: SocketAddr,
        _netns: &'a Namespace,
        _check: &'a HealthCheck,
        deadline: Instant,
    ) -> ProbeFuture<'a, Result<Duration, String>> {
        Box::pin(async move {
            let started = Instant::now();
            while Instant::now() < deadline {
                if self.0.answers_on(addr.port()) {
                    return Ok(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(format!("connect to {addr}: refused"))
        })
    }
}

/// Builds without cargo: fails with the error it is given, or "builds" a
/// binary named after the package (a shell script).
#[derive(Default)]
pub(crate) struct FakeBuilder {
    pub(crate) failure: std::sync::Mutex<Option<berth_build::BuildError>>,
}

impl berth_build::Builder for FakeBuilder {
    fn build(
        &self,
        request: &berth_build::BuildRequest<'_>,
        output: &mut dyn FnMut(String),
    ) -> Result<(berth_build::BuildOutput, berth_build::BuildLock), berth_build::BuildError> {
        output("   Compiling shop v0.1.0".into());
        if let Some(failure) = self.failure.lock().unwrap().take() {
            return Err(failure);
        }
        let uploaded = request.uploaded;
        let binary = uploaded.join("target/shop");
        std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
        std::fs::write(&binary, "#!/bin/sh\nexit 0\n").unwrap();
        let built = berth_build::BuildOutput {
            binaries: vec![("shop".into(), binary)],
            default_binary: "shop".into(),
            source_dir: uploaded.to_path_buf(),
        };
        Ok((built, berth_build::BuildLock::none()))
    }
}

/// The core of a server (see the module docs).
pub(crate) struct Core {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) store: Arc<Store>,
    pub(crate) logs: Arc<LogStore>,
    pub(crate) slugs: SlugStore,
    pub(crate) resources: Arc<Resources>,
    pub(crate) driver: FakeDriver,
    pub(crate) handle: ReconcilerHandle,
    pub(crate) routes: watch::Receiver<Arc<RouteTable>>,
    /// Apps a request woke (what the autoscaler would be told).
    pub(crate) woken: mpsc::UnboundedReceiver<crate::reconciler::Woken>,
    pub(crate) launcher: Launcher,
    shutdown: CancellationToken,
    reconciler: Option<tokio::task::JoinHandle<()>>,
}

impl Core {
    /// Starts the reconciler on the current (paused) runtime.
    pub(crate) fn start() -> Core {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = Arc::new(Store::open(&dir.path().join("berth.db")).expect("the store"));
        let logs = Arc::new(LogStore::open(&dir.path().join("logs.db")).expect("the log store"));
        let slugs = SlugStore::new(dir.path().join("slugs"));
        std::fs::create_dir_all(slugs.path(SLUG)).expect("the slug");
        let resources = Arc::new(
            Resources::new(
                dir.path(),
                store.clone(),
                logs.clone(),
                false,
                berth_runtime::net::Networks::none(),
                "http://127.0.0.1:9".into(),
                Arc::new(|app| format!("http://{app}.localhost")),
            )
            .expect("the resources"),
        );
        let launcher = Launcher::new(slugs.clone(), resources.clone());
        let driver = FakeDriver::new();
        let (routes_sender, routes) = watch::channel(Arc::new(RouteTable::default()));
        let (wakes, woken) = mpsc::unbounded_channel();
        let (reconciler, handle) = Reconciler::new(ReconcilerParts {
            store: store.clone(),
            logs: logs.clone(),
            driver: Arc::new(driver.clone()),
            launcher: launcher.clone(),
            probe: Arc::new(FakeProbe(driver.clone())),
            routes: routes_sender,
            wakes: Some(wakes),
        });
        let shutdown = CancellationToken::new();
        let reconciler = Some(tokio::spawn(reconciler.run(shutdown.clone())));
        Core {
            dir,
            store,
            logs,
            slugs,
            resources,
            driver,
            handle,
            routes,
            woken,
            launcher,
            shutdown,
            reconciler,
        }
    }

    /// Makes the next release of `app` (creating the app) with `spec` and
    /// one `web` process, the app's target; returns its version.
    pub(crate) fn release(&self, app: &str, spec: &AppSpec) -> u64 {
        if self.store.app(app).is_err() {
            self.store.create_app(app).expect("the app");
        }
        let processes = spec.process_commands("serve");
        let release = self
            .store
            .begin_release(
                app,
                NewRelease {
                    cause: "test".into(),
                    slug: SLUG.into(),
                    spec_json: serde_json::to_string(spec).expect("spec as JSON"),
                    processes,
                    env: BTreeMap::new(),
                    secrets: BTreeMap::new(),
                },
            )
            .expect("a release");
        self.handle.nudge();
        release.version
    }

    /// A deployer over this core, building with `builder`.
    pub(crate) fn deployer(&self, builder: Arc<FakeBuilder>) -> Arc<Deployer> {
        Arc::new(Deployer::new(
            self.store.clone(),
            self.logs.clone(),
            self.slugs.clone(),
            self.resources.clone(),
            builder,
            self.handle.clone(),
            self.dir.path().join("tmp"),
            berth_build::UnpackLimits::default(),
            Arc::new(|app| format!("http://{app}.localhost")),
            10,
            Arc::new(
                berth_registry::Registry::open(&self.dir.path().join("registry"))
                    .expect("a registry"),
            ),
        ))
    }

    /// Stops the server's core as a server stop does, and waits for it.
    pub(crate) async fn shut_down(&mut self) {
        self.shutdown.cancel();
        if let Some(reconciler) = self.reconciler.take() {
            let _ = reconciler.await;
        }
    }

    /// Sets `app`'s `web` count.
    pub(crate) fn scale(&self, app: &str, count: u32) {
        let counts = BTreeMap::from([("web".to_string(), count)]);
        self.store.set_counts(app, &counts).expect("counts");
        self.handle.nudge();
    }

    /// Instances of `app` (release `version`) the reconciler reports running.
    pub(crate) fn running(&self, app: &str, version: u64) -> usize {
        self.handle.snapshot().apps.get(app).map_or(0, |actual| {
            actual
                .instances
                .iter()
                .filter(|instance| {
                    instance.release == version && instance.state == InstanceState::Running
                })
                .count()
        })
    }

    /// Backends the router would send `app`'s requests to.
    pub(crate) fn backends(&self, app: &str) -> Vec<Arc<berth_router::Backend>> {
        self.routes
            .borrow()
            .apps
            .get(app)
            .map(|route| route.backends.clone())
            .unwrap_or_default()
    }

    /// Waits (on tokio's clock) until `done` holds, at most `within`.
    pub(crate) async fn until(&self, what: &str, within: Duration, done: impl Fn(&Core) -> bool) {
        let deadline = Instant::now() + within;
        while !done(self) {
            assert!(Instant::now() < deadline, "not within {within:?}: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
