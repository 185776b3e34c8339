//! `GET /metrics`: what runs, in the OpenMetrics text format
//! (`prometheus-client`), behind the API token like every other route.
//!
//! Per app: requests the router routed, answers by status class, their
//! duration (a histogram, from the app being known to the last byte sent),
//! body bytes sent, the router's own 5xx answers, requests held now,
//! TCP service connections open, and what the `[edge]` rules refused by
//! reason. Per process group: instances running and desired, CPU and
//! memory, restarts, OOM kills, and cold starts with their duration. Per
//! app: deploy durations by outcome and build durations. And berth's own:
//! its store's write latency, the apps it has, its version, and the log
//! lines it stored and dropped.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::error::{ApiFailure, ApiResult};
use super::state::ApiState;

type Labels = Vec<(String, String)>;

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` alone, without the token, on `listener`
/// (`--metrics ADDR`) until `shutdown`.
pub(crate) async fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(state);
    let serving = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await });
    if let Err(err) = serving.await {
        tracing::error!(error = %err, "the metrics listener stopped");
    }
}

/// The metrics, as a scrape gets them.
pub(super) async fn metrics(State(state): State<ApiState>) -> ApiResult<Response> {
    let text = encode(&state).map_err(|err| ApiFailure::Internal(err.to_string()))?;
    Ok(([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response())
}

fn encode(state: &ApiState) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("berth");
    let requests = Family::<Labels, Counter>::default();
    let router_errors = Family::<Labels, Counter>::default();
    let held = Family::<Labels, Gauge>::default();
    let tcp_open = Family::<Labels, Gauge>::default();
    let refused = Family::<Labels, Counter>::default();
    let running = Family::<Labels, Gauge>::default();
    let desired = Family::<Labels, Gauge>::default();
    let apps = Gauge::<i64>::default();
    let responses = Family::<Labels, Counter>::default();
    let bytes_out = Family::<Labels, Counter>::default();
    let lines_stored = Counter::<u64>::default();
    let lines_dropped = Counter::<u64>::default();
    registry.register(
        "log_lines_stored",
        "Log lines stored (apps' output, the router's access log, builds)",
        lines_stored.clone(),
    );
    registry.register(
        "log_lines_dropped",
        "Log lines dropped because the log writer was too far behind",
        lines_dropped.clone(),
    );
    let cpu_seconds = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let memory_bytes = Family::<Labels, Gauge>::default();
    registry.register(
        "cpu_seconds",
        "CPU time the group's running instances used since each started (from their cgroups)",
        cpu_seconds.clone(),
    );
    registry.register(
        "memory_bytes",
        "Memory the group's running instances hold now (from their cgroups)",
        memory_bytes.clone(),
    );
    let executions = Family::<Labels, Counter>::default();
    let releases = Family::<Labels, Gauge>::default();
    registry.register(
        "job_executions",
        "Job executions (berth-run: one-off commands) by outcome",
        executions.clone(),
    );
    registry.register(
        "releases",
        "Releases by status: failed ones are failed deploys",
        releases.clone(),
    );
    for count in state.store.execution_counts().unwrap_or_default() {
        let labels = vec![
            ("app".into(), count.app),
            ("job".into(), count.name),
            ("status".into(), count.status),
        ];
        executions.get_or_create(&labels).inc_by(count.count);
    }
    for count in state.store.release_counts().unwrap_or_default() {
        let labels = vec![("app".into(), count.app), ("status".into(), count.status)];
        releases.get_or_create(&labels).set(count.count as i64);
    }
    let (stored, dropped) = state.logs.counts();
    lines_stored.inc_by(stored);
    lines_dropped.inc_by(dropped);
    let mut durations = Vec::new();
    let mut cold_starts = Vec::new();
    let restarts = Family::<Labels, Counter>::default();
    let oom_kills = Family::<Labels, Counter>::default();
    registry.register(
        "restarts",
        "Instances of the group that exited unexpectedly and were restarted",
        restarts.clone(),
    );
    registry.register(
        "oom_kills",
        "Instances of the group the kernel killed for exceeding their memory",
        oom_kills.clone(),
    );
    registry.register(
        "http_responses",
        "Answers to the app's requests by status class (2xx, 4xx, …), the router's own included",
        responses.clone(),
    );
    registry.register(
        "http_response_bytes",
        "Body bytes sent to the app's clients",
        bytes_out.clone(),
    );
    registry.register(
        "http_requests",
        "Requests the router routed to the app (answered by it or by the router)",
        requests.clone(),
    );
    registry.register(
        "router_errors",
        "Requests the router answered with a 5xx of its own",
        router_errors.clone(),
    );
    registry.register(
        "requests_held",
        "Requests held at the router now, waiting for a start or a free slot",
        held.clone(),
    );
    registry.register(
        "tcp_connections_open",
        "Connections to the app's TCP services open now",
        tcp_open.clone(),
    );
    registry.register(
        "edge_refused",
        "Requests and connections the app's edge rules refused, by reason",
        refused.clone(),
    );
    registry.register(
        "instances_running",
        "Healthy instances of the process group",
        running.clone(),
    );
    registry.register(
        "instances_desired",
        "Instances the process group should have",
        desired.clone(),
    );
    registry.register("apps", "Apps on this server", apps.clone());
    registry.register(
        "build",
        "The berth server's version",
        Info::new(vec![(
            "version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        )]),
    );

    let passes = Counter::<u64>::default();
    registry.register(
        "reconcile_passes",
        "Passes the reconciler made (each compares what should run with what does)",
        passes.clone(),
    );
    let snapshot = state.reconciler.snapshot();
    passes.inc_by(snapshot.passes);
    apps.set(snapshot.apps.len() as i64);
    for (app, actual) in &snapshot.apps {
        let of_app: Labels = vec![("app".into(), app.clone())];
        requests
            .get_or_create(&of_app)
            .inc_by(actual.traffic.requests);
        router_errors
            .get_or_create(&of_app)
            .inc_by(actual.traffic.router_errors);
        held.get_or_create(&of_app).set(actual.traffic.held as i64);
        let http = &actual.traffic.http;
        for (class, count) in http.status.iter().enumerate() {
            let labels = vec![
                ("app".into(), app.clone()),
                ("class".into(), format!("{}xx", class + 1)),
            ];
            responses.get_or_create(&labels).inc_by(*count);
        }
        bytes_out.get_or_create(&of_app).inc_by(http.bytes_out);
        durations.push(histograms::Series {
            labels: vec![("app", app.clone())],
            sum: http.latency_sum_seconds,
            buckets: histograms::from_cumulative(&http.latency_cumulative),
        });
        for (group, counts) in &actual.lifecycle {
            let labels = vec![("app".into(), app.clone()), ("group".into(), group.clone())];
            restarts.get_or_create(&labels).inc_by(counts.restarts);
            oom_kills.get_or_create(&labels).inc_by(counts.oom_kills);
            if counts.cold_starts > 0 {
                cold_starts.push(histograms::Series {
                    labels: vec![("app", app.clone()), ("group", group.clone())],
                    sum: counts.cold_start_seconds,
                    buckets: counts.cold_start_buckets.clone(),
                });
            }
        }
        tcp_open
            .get_or_create(&of_app)
            .set(actual.traffic.tcp_open as i64);
        let edge = &actual.edge;
        for (reason, count) in [
            ("denied", edge.denied),
            ("rate_limited", edge.rate_limited),
            ("too_large", edge.too_large),
            ("over_connections", edge.over_connections),
            ("timed_out", edge.timed_out),
        ] {
            let labels = vec![
                ("app".into(), app.clone()),
                ("reason".into(), reason.into()),
            ];
            refused.get_or_create(&labels).inc_by(count);
        }
        for group in &actual.groups {
            let labels = vec![
                ("app".into(), app.clone()),
                ("group".into(), group.name.clone()),
            ];
            running.get_or_create(&labels).set(i64::from(group.running));
            desired.get_or_create(&labels).set(i64::from(group.desired));
            let of_group = actual
                .instances
                .iter()
                .filter(|instance| instance.process == group.name);
            let (mut cpu, mut memory) = (None::<f64>, None::<u64>);
            for instance in of_group {
                if let Some(seconds) = instance.cpu_seconds {
                    cpu = Some(cpu.unwrap_or(0.0) + seconds);
                }
                if let Some(bytes) = instance.memory_bytes {
                    memory = Some(memory.unwrap_or(0) + bytes);
                }
            }
            if let Some(cpu) = cpu {
                cpu_seconds.get_or_create(&labels).set(cpu);
            }
            if let Some(memory) = memory {
                memory_bytes.get_or_create(&labels).set(memory as i64);
            }
        }
    }
    registry.register_collector(Box::new(histograms::Seconds {
        name: "http_request_duration",
        help: "Time from the app being known to the last byte of its answer",
        bounds: &berth_router::LATENCY_BOUNDS,
        series: durations,
    }));
    registry.register_collector(Box::new(histograms::Seconds {
        name: "cold_start_duration",
        help: "Starts from zero: from the request that woke the group to a healthy instance",
        bounds: &berth_router::LATENCY_BOUNDS,
        series: cold_starts,
    }));
    let (buckets, sum) = state.store.write_latency();
    registry.register_collector(Box::new(histograms::Seconds {
        name: "store_write_duration",
        help: "The state store's write transactions, each synced to disk",
        bounds: &berth_store::WRITE_BOUNDS,
        series: vec![histograms::Series {
            labels: Vec::new(),
            sum,
            buckets,
        }],
    }));
    let timings = &state.deployer.timings;
    registry.register_collector(Box::new(histograms::Seconds {
        name: "deploy_duration",
        help: "Deploys from the upload to a release that serves (or the failure), by outcome",
        bounds: &crate::deploy::timings::DEPLOY_BOUNDS,
        series: timings
            .deploys()
            .into_iter()
            .map(|((app, outcome), observed)| histograms::Series {
                labels: vec![("app", app), ("outcome", outcome.to_string())],
                sum: observed.sum,
                buckets: observed.buckets,
            })
            .collect(),
    }));
    registry.register_collector(Box::new(histograms::Seconds {
        name: "build_duration",
        help: "Builds that succeeded",
        bounds: &crate::deploy::timings::DEPLOY_BOUNDS,
        series: timings
            .builds()
            .into_iter()
            .map(|(app, observed)| histograms::Series {
                labels: vec![("app", app)],
                sum: observed.sum,
                buckets: observed.buckets,
            })
            .collect(),
    }));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// Histograms from counts kept elsewhere (the router's, the
/// reconciler's): a collector, since nothing is observed here.
mod histograms {
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
    use prometheus_client::metrics::MetricType;
    use prometheus_client::registry::Unit;

    /// One labelled series: its labels, the sum of what it observed, and
    /// its counts per bucket of its family's bounds and one for longer (not
    /// cumulative).
    #[derive(Debug)]
    pub(super) struct Series {
        pub(super) labels: Vec<(&'static str, String)>,
        pub(super) sum: f64,
        pub(super) buckets: Vec<u64>,
    }

    /// A histogram family in seconds, its buckets bounded by `bounds`.
    #[derive(Debug)]
    pub(super) struct Seconds {
        pub(super) name: &'static str,
        pub(super) help: &'static str,
        pub(super) bounds: &'static [f64],
        pub(super) series: Vec<Series>,
    }

    impl Collector for Seconds {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let mut metric = encoder.encode_descriptor(
                self.name,
                self.help,
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for series in &self.series {
                let buckets: Vec<(f64, u64)> = self
                    .bounds
                    .iter()
                    .copied()
                    .chain([f64::MAX])
                    .zip(series.buckets.iter().copied())
                    .collect();
                let labels: Vec<(&str, &str)> = series
                    .labels
                    .iter()
                    .map(|(key, value)| (*key, value.as_str()))
                    .collect();
                metric
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(
                        series.sum,
                        series.buckets.iter().sum(),
                        &buckets,
                        None,
                    )?;
            }
            Ok(())
        }
    }

    /// The router's cumulative bucket counts, one per bucket.
    pub(super) fn from_cumulative(cumulative: &[u64]) -> Vec<u64> {
        let mut previous = 0;
        cumulative
            .iter()
            .map(|total| {
                let count = total - previous;
                previous = *total;
                count
            })
            .collect()
    }
}
