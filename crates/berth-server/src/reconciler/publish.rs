//! What the loop publishes after each pass: the route table for the
//! router and the snapshot the API reads.

use std::sync::Arc;

use berth_proto::{GroupHealth, InstanceInfo, ProcessGroupStatus};
use berth_router::{AppRoute, Backend, RouteTable};
use berth_store::DesiredApp;
use tokio::time::Instant;

use super::handle::{AppActual, ENDED_KEPT, Snapshot};
use super::state::{Phase, RouteKey};
use super::{CRASH_LOOP_AFTER, Reconciler};

impl Reconciler {
    pub(super) fn publish(&mut self, desired: &[DesiredApp]) {
        let mut table = RouteTable::default();
        let mut key = Vec::with_capacity(desired.len());
        self.passes += 1;
        let mut snapshot = Snapshot {
            passes: self.passes,
            ..Snapshot::default()
        };
        // Read each pass: a domain added or removed routes at the next one.
        let mut domains_of: std::collections::HashMap<String, Vec<(String, bool)>> =
            std::collections::HashMap::new();
        match self.parts.store.domains(None) {
            Ok(rows) => {
                for row in rows {
                    domains_of
                        .entry(row.app)
                        .or_default()
                        .push((row.name, row.tls_internal));
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot read the custom domains"),
        }
        match self.parts.store.all_edge_rules() {
            Ok(rules) => self.edge_by_cli = rules,
            Err(err) => tracing::warn!(
                error = %err,
                "cannot read the edge rules set with `berth edge`; keeping the last ones read"
            ),
        }
        let mut edge_by_cli = self.edge_by_cli.clone();
        for app in desired {
            let traffic = self.traffic.entry(app.app.clone()).or_default().clone();
            let traffic_of_app = traffic.clone();
            let backends: Vec<Arc<Backend>> = self
                .instances
                .values()
                .filter(|instance| instance.app == app.app && instance.phase == Phase::Running)
                .filter_map(|instance| instance.backend.clone())
                .collect();
            let groups = self.group_statuses(app);
            self.note_crash_loops(&app.app, &groups);
            // The budget page only when the groups that serve HTTP are
            // the ones the budget stopped.
            let held_stopped = app.hold.as_ref().filter(|_| {
                app.release.as_ref().is_some_and(|release| {
                    self.spec(release).is_some_and(|spec| {
                        release
                            .processes
                            .keys()
                            .filter(|group| spec.serves_http(group))
                            .any(|group| super::hold::stopped_by_budget(app, group))
                    })
                })
            });
            let reason = if backends.is_empty() {
                Some(match held_stopped {
                    Some(hold) => super::hold::budget_page_reason(&app.app, hold),
                    None => unavailable_reason(app, &groups),
                })
            } else {
                None
            };
            let mut statics = Vec::new();
            let mut internal = berth_router::InternalAccess::default();
            let mut https = (false, false, false);
            let mut edge = berth_proto::EdgeRuleSet::default();
            let mut tcp: Vec<berth_router::TcpRoute> = Vec::new();
            let mut site: Option<berth_router::Site> = None;
            let mut access_log = true;
            let target = app
                .release
                .as_ref()
                .and_then(|release| Some((release, self.spec(release)?)));
            let (admission, failing) = match target {
                Some((release, spec)) => {
                    https = (
                        spec.http.force_https,
                        spec.http.hsts,
                        spec.http.tls_internal,
                    );
                    edge = spec.edge.to_rule_set();
                    access_log = spec.logs.access_or_default();
                    tcp = self.tcp_routes(&app.app, &spec);
                    site = spec.site.as_ref().map(|site| berth_router::Site {
                        root: self.parts.launcher.slug_dir(release),
                        dir: std::path::PathBuf::from(&site.dir),
                        rules: site.rules.clone(),
                        headers: site.headers.clone(),
                    });
                    let slug = self.parts.launcher.slug_dir(release);
                    statics = spec
                        .statics
                        .iter()
                        .filter_map(|entry| {
                            Some(berth_router::StaticDir {
                                prefix: entry.url_prefix.clone(),
                                root: slug.clone(),
                                dir: entry.slug_relative()?,
                            })
                        })
                        .collect();
                    internal = berth_router::InternalAccess {
                        groups: release
                            .processes
                            .keys()
                            .filter(|group| spec.serves_http(group))
                            .cloned()
                            .collect(),
                        port: spec.http.internal_port,
                        callers: spec.internal.allow.clone(),
                    };
                    let scaling = &spec.http.scaling;
                    let failing = groups.iter().any(|group| {
                        spec.serves_http(&group.name) && group.health == GroupHealth::CrashLoop
                    });
                    let admission = berth_router::Admission {
                        hard_limit: scaling.hard_limit.map(|limit| limit as usize),
                        wake: (scaling.is_active() && scaling.auto_start && held_stopped.is_none())
                            .then(|| self.waker.clone())
                            .flatten(),
                        hold_timeout: spec.deploy.wait_timeout,
                        ..berth_router::Admission::default()
                    };
                    (admission, failing)
                }
                None => (berth_router::Admission::default(), false),
            };
            if let Some(by_cli) = edge_by_cli.remove(&app.app) {
                edge = edge.with(&by_cli);
            }
            if let Some(limit) = app.hold.as_ref().and_then(super::hold::throttle_limit) {
                edge.rate_limits.push(limit);
            }
            key.push(RouteKey {
                app: app.app.clone(),
                backends: backends
                    .iter()
                    .map(|backend| backend.instance.clone())
                    .collect(),
                reason: reason.clone(),
                failing,
                admission: admission.clone(),
                statics: statics.clone(),
                internal: internal.clone(),
                domains: domains_of.get(&app.app).cloned().unwrap_or_default(),
                https,
                edge: edge.clone(),
                tcp: tcp
                    .iter()
                    .map(|route| {
                        let instances = route.backends.iter().map(|b| b.instance.clone());
                        let shape = (
                            route.public_port,
                            route.internal_port,
                            route.tls,
                            route.proxy_proto,
                            route.proxy_proto_version,
                        );
                        (shape, instances.collect())
                    })
                    .collect(),
                site: site.clone(),
            });
            for (name, tls_internal) in domains_of.remove(&app.app).unwrap_or_default() {
                if tls_internal {
                    table.tls_internal_domains.insert(name.clone());
                }
                table.domains.insert(name, app.app.clone());
            }
            table.apps.insert(
                app.app.clone(),
                AppRoute {
                    backends,
                    unavailable_reason: reason,
                    traffic,
                    failing,
                    admission,
                    statics: statics.into(),
                    internal: Arc::new(internal),
                    force_https: https.0,
                    hsts: https.1,
                    tls_internal: https.2,
                    edge: Arc::new(edge_rules(&edge)),
                    tcp: tcp.into(),
                    site: site.map(Arc::new),
                    access_log,
                },
            );
            let instances = self
                .instances
                .values()
                .filter(|instance| instance.app == app.app)
                .map(|instance| {
                    let usage = instance.running.usage();
                    InstanceInfo {
                        cpu_seconds: usage.cpu_seconds,
                        memory_bytes: usage.memory_bytes,
                        proxied_bytes: instance
                            .network
                            .as_ref()
                            .and_then(|network| network.proxied_bytes()),
                        id: instance.id.clone(),
                        process: instance.process.clone(),
                        release: instance.release,
                        state: instance.phase.wire(),
                        healthy: instance.phase == Phase::Running,
                        restarts: self
                            .backoff
                            .get(&(instance.app.clone(), instance.process.clone()))
                            .map_or(0, |backoff| backoff.failures),
                        uptime_secs: instance.started.elapsed().as_secs(),
                        uptime_ms: instance.started.elapsed().as_millis() as u64,
                        pid: Some(instance.running.pid),
                        port: instance.port,
                    }
                })
                .collect();
            snapshot.apps.insert(
                app.app.clone(),
                AppActual {
                    release: app.release.as_ref().map(|release| release.version),
                    instances,
                    groups,
                    traffic: {
                        use std::sync::atomic::Ordering::Relaxed;
                        super::handle::TrafficCounts {
                            requests: traffic_of_app.requests(),
                            router_errors: traffic_of_app.router_errors.load(Relaxed),
                            held: traffic_of_app.waiting(),
                            tcp_open: traffic_of_app.tcp_open.load(Relaxed),
                            http: traffic_of_app.http.figures(),
                        }
                    },
                    lifecycle: self
                        .lifecycles
                        .iter()
                        .filter(|((name, _), _)| *name == app.app)
                        .map(|((_, group), counts)| (group.clone(), counts.clone()))
                        .collect(),
                    edge: {
                        use std::sync::atomic::Ordering::Relaxed;
                        let counts = &traffic_of_app.edge;
                        berth_proto::EdgeCounts {
                            denied: counts.denied.load(Relaxed),
                            rate_limited: counts.limited.load(Relaxed),
                            too_large: counts.too_large.load(Relaxed),
                            over_connections: counts.over_connections.load(Relaxed),
                            timed_out: counts.timed_out.load(Relaxed),
                        }
                    },
                },
            );
        }
        self.traffic.retain(|app, _| table.apps.contains_key(app));
        if key != self.published_routes {
            self.published_routes = key;
            let _ = self.parts.routes.send(Arc::new(table));
            tracing::debug!("routes published");
        }
        while self
            .ended
            .front()
            .is_some_and(|(at, _)| at.elapsed() > ENDED_KEPT)
        {
            self.ended.pop_front();
        }
        snapshot.ended = self.ended.iter().map(|(_, ended)| ended.clone()).collect();
        snapshot.published = Some(Instant::now());
        let _ = self.snapshot.send(Arc::new(snapshot));
    }

    /// The TCP services of `app` (running `spec`) with their running
    /// instances, each reached at its TCP backend (its own connection
    /// count: TCP connections never take an HTTP request's place).
    fn tcp_routes(&self, app: &str, spec: &berth_spec::AppSpec) -> Vec<berth_router::TcpRoute> {
        let mut routes = Vec::new();
        for service in &spec.tcp_services {
            let backends: Vec<Arc<Backend>> = self
                .instances
                .values()
                .filter(|instance| {
                    instance.app == app
                        && instance.phase == Phase::Running
                        && spec.serves_tcp(service, &instance.process)
                })
                .map(|instance| instance.tcp_backend.clone())
                .collect();
            for port in &service.ports {
                routes.push(berth_router::TcpRoute {
                    public_port: port.port,
                    internal_port: service.internal_port,
                    tls: port.tls,
                    proxy_proto: port.proxy_proto,
                    proxy_proto_version: if port.proxy_proto_v1 { 1 } else { 2 },
                    backends: backends.clone(),
                });
            }
        }
        routes
    }

    pub(super) fn group_statuses(&self, app: &DesiredApp) -> Vec<ProcessGroupStatus> {
        let Some(release) = &app.release else {
            return Vec::new();
        };
        release
            .processes
            .iter()
            .map(|(process, command)| {
                let ceiling = self
                    .cached_spec(release)
                    .and_then(|spec| super::instance_ceiling(&spec, process, self.isolated()));
                let desired = self.wanted_running(app, process, ceiling);
                let running = self
                    .instances
                    .values()
                    .filter(|instance| {
                        instance.app == app.app
                            && &instance.process == process
                            && instance.release == release.version
                            && instance.phase == Phase::Running
                    })
                    .count() as u32;
                let backoff = self.backoff.get(&(app.app.clone(), process.clone()));
                let (health, reason) = if desired == 0 {
                    (GroupHealth::Stopped, Some("scaled to zero".to_string()))
                } else if let Some(backoff) =
                    backoff.filter(|backoff| backoff.failures >= CRASH_LOOP_AFTER)
                {
                    let next = backoff
                        .next_start
                        .map(|at| at.saturating_duration_since(Instant::now()).as_secs_f64())
                        .unwrap_or(0.0);
                    (
                        GroupHealth::CrashLoop,
                        Some(format!(
                            "failed {} times in a row (last: {}); next restart in {next:.1}s",
                            backoff.failures, backoff.last_cause
                        )),
                    )
                } else if running >= desired {
                    (GroupHealth::Healthy, None)
                } else {
                    (
                        GroupHealth::Converging,
                        Some(format!("{running} of {desired} running")),
                    )
                };
                ProcessGroupStatus {
                    name: process.clone(),
                    command: command.clone(),
                    desired,
                    running,
                    health,
                    reason,
                    autoscaled: false,
                    why: None,
                    min: None,
                    max: None,
                }
            })
            .collect()
    }
}

fn unavailable_reason(app: &DesiredApp, groups: &[ProcessGroupStatus]) -> String {
    if app.release.is_none() {
        return "it has not been deployed yet".into();
    }
    match groups
        .iter()
        .find(|group| group.name == berth_spec::DEFAULT_PROCESS || group.name == "app")
    {
        Some(group) if group.health == GroupHealth::Stopped => "it is scaled to zero".into(),
        Some(group) if group.health == GroupHealth::CrashLoop => {
            format!(
                "it is crash-looping ({})",
                group.reason.clone().unwrap_or_default()
            )
        }
        _ => "its instances are starting".into(),
    }
}

/// The router's form of an app's edge rules.
fn edge_rules(rules: &berth_proto::EdgeRuleSet) -> berth_router::EdgeRules {
    berth_router::EdgeRules {
        allow: rules.allow.clone(),
        deny: rules.deny.clone(),
        max_body: rules.max_body,
        limits: rules
            .rate_limits
            .iter()
            .map(|limit| berth_router::RateRule {
                path: limit.path.clone(),
                per_second: f64::from(limit.requests) * 1000.0 / limit.per_ms.max(1) as f64,
                burst: f64::from(limit.burst),
            })
            .collect(),
        max_header: rules.max_header,
        max_connections: rules.max_connections,
        request_timeout: rules
            .request_timeout_ms
            .map(std::time::Duration::from_millis),
    }
}
