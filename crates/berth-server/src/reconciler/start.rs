//! Starting an instance: its spec from the launcher, the driver's start,
//! its output into the log store, and the task that watches its health.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_logs::LogSource;
use berth_router::Backend;
use berth_spec::AppSpec;
use berth_store::ReleaseRow;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::handle::Message;
use super::state::{Instance, Phase};
use super::{Reconciler, UNHEALTHY_AFTER};
use crate::health::{self, HealthProbe};
use crate::launch::StartError;

impl Reconciler {
    pub(super) fn start_instance(
        &mut self,
        release: &ReleaseRow,
        spec: &AppSpec,
        process: &str,
        command: &str,
        serves_http: bool,
        fixed_port: Option<u16>,
    ) -> Result<(), StartError> {
        let id = format!("{process}-{:08x}", rand::random::<u32>());
        tracing::debug!(instance = %id, "starting: preparing its env");
        let port = if serves_http {
            Some(match fixed_port {
                Some(port) => port,
                None => free_port()
                    .map_err(|err| StartError::transient(format!("no free port: {err}")))?,
            })
        } else {
            None
        };
        let extra: Vec<(String, String)> = port
            .map(|port| ("PORT".to_string(), port.to_string()))
            .into_iter()
            .collect();
        let mut instance_spec = self
            .parts
            .launcher
            .instance_spec(release, spec, process, &id, command, &extra)?;
        let network =
            self.parts
                .launcher
                .attach_network(release, spec, &mut instance_spec, fixed_port)?;
        tracing::debug!(instance = %id, "starting: env and network ready");
        let netns = network.as_ref().map(|network| network.netns.clone());
        let source = LogSource {
            app: release.app.clone(),
            process: process.to_string(),
            instance: id.clone(),
            release: release.version,
        };
        let watch = crate::launch::read_only_watch(
            self.parts.store.clone(),
            release.app.clone(),
            id.clone(),
        );
        let sink = crate::launch::log_sink(self.parts.logs.clone(), source, Some(watch));
        let running = self
            .parts
            .driver
            .start(&instance_spec, sink)
            .map_err(StartError::from)?;
        tracing::debug!(instance = %id, pid = running.pid, "starting: spawned");
        self.pending_journal
            .push((id.clone(), release.app.clone(), running.pid));

        let messages = self.messages.clone();
        let probe = self.parts.probe.clone();
        let watcher = {
            let running = running.clone();
            let id = id.clone();
            let checks = checks_for(spec, process, port);
            let startup = spec.deploy.wait_timeout;
            tokio::spawn(async move {
                let exit = {
                    let running = running.clone();
                    let messages = messages.clone();
                    let id = id.clone();
                    async move {
                        let cause = running.exited().await;
                        let _ = messages.send(Message::Exited { id, cause });
                    }
                };
                let health =
                    watch_health(probe, id.clone(), netns, checks, startup, messages.clone());
                tokio::select! {
                    () = exit => {}
                    () = health => {
                        // Health watching only ends on start failure; still report the exit.
                        let cause = running.exited().await;
                        let _ = messages.send(Message::Exited { id, cause });
                    }
                }
            })
        };
        let backend = port.map(|port| {
            let backend = Backend::new(SocketAddr::from(([127, 0, 0, 1], port)), id.clone())
                .in_group(process);
            Arc::new(match &network {
                Some(network) => backend.in_namespace(network.netns.clone()),
                None => backend,
            })
        });
        let tcp_backend = {
            let backend =
                Backend::new(SocketAddr::from(([127, 0, 0, 1], 0)), id.clone()).in_group(process);
            Arc::new(match &network {
                Some(network) => backend.in_namespace(network.netns.clone()),
                None => backend,
            })
        };
        let instance = Instance {
            id: id.clone(),
            app: release.app.clone(),
            process: process.to_string(),
            release: release.version,
            port,
            started: Instant::now(),
            phase: Phase::Starting,
            running,
            backend,
            tcp_backend,
            kill_timeout: spec.kill_timeout,
            watcher,
            unhealthy_since: None,
            cold_since: self
                .cold_pending
                .remove(&(release.app.clone(), process.to_string())),
            network,
        };
        let port_text = port
            .map(|port| format!(" on port {port}"))
            .unwrap_or_default();
        self.berth_line(
            &instance,
            &format!("starting {id} (v{}): {command}{port_text}", release.version),
        );
        self.instances.insert(id, instance);
        Ok(())
    }
}

/// The checks an instance of `process` must pass, each with the port it
/// probes: those naming the group, or, for a group that serves HTTP on
/// `port`, those naming none (their port defaults to `port`).
fn checks_for(
    spec: &AppSpec,
    process: &str,
    port: Option<u16>,
) -> Vec<(u16, berth_spec::HealthCheck)> {
    let serves_http = port.is_some();
    let mut checks: Vec<(u16, berth_spec::HealthCheck)> = std::iter::once(&spec.http.check)
        .chain(&spec.http.extra_checks)
        .filter(|check| match &check.processes {
            Some(groups) => groups.iter().any(|group| group == process),
            None => serves_http,
        })
        .filter_map(|check| Some((check.port.or(port)?, check.clone())))
        .collect();
    // The router sends requests to the HTTP port: it is always checked,
    // if only by a TCP connect, before the instance takes any.
    if let Some(port) = port
        && !checks.iter().any(|(checked, _)| *checked == port)
    {
        checks.insert(0, (port, berth_spec::HealthCheck::default()));
    }
    checks
}

async fn watch_health(
    probe: Arc<dyn HealthProbe>,
    id: String,
    netns: health::Namespace,
    checks: Vec<(u16, berth_spec::HealthCheck)>,
    startup: Duration,
    messages: mpsc::UnboundedSender<Message>,
) {
    if checks.is_empty() {
        // A process without HTTP or checks counts as up once it has run for a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = messages.send(Message::Healthy {
            id,
            after: Duration::from_secs(1),
        });
        std::future::pending::<()>().await;
        return;
    }
    let started = Instant::now();
    let checks: Vec<(SocketAddr, berth_spec::HealthCheck)> = checks
        .into_iter()
        .map(|(port, check)| (SocketAddr::from(([127, 0, 0, 1], port)), check))
        .collect();
    // Up once every check has passed, each before the same deadline.
    for (addr, check) in &checks {
        if let Err(reason) = probe
            .wait_until_healthy(*addr, &netns, check, started + startup)
            .await
        {
            let _ = messages.send(Message::StartFailed { id, reason });
            return;
        }
    }
    let _ = messages.send(Message::Healthy {
        id: id.clone(),
        after: started.elapsed(),
    });
    // Then each on its own interval; failures inside a check's grace period
    // after start do not count.
    let after = |interval: Duration| {
        Instant::now()
            .checked_add(interval)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365))
    };
    let mut next_due: Vec<Instant> = checks
        .iter()
        .map(|(_, check)| after(check.interval))
        .collect();
    let mut failed_in_a_row = vec![0u32; checks.len()];
    let mut unhealthy = false;
    loop {
        let Some(next) = next_due.iter().min().copied() else {
            return;
        };
        tokio::time::sleep_until(next).await;
        for (index, (addr, check)) in checks.iter().enumerate() {
            if next_due[index] > Instant::now() {
                continue;
            }
            next_due[index] = after(check.interval);
            match probe.probe(*addr, &netns, check).await {
                Ok(()) => failed_in_a_row[index] = 0,
                Err(_) if started.elapsed() < check.grace_period => {}
                Err(reason) => {
                    failed_in_a_row[index] += 1;
                    if failed_in_a_row[index] == UNHEALTHY_AFTER && !unhealthy {
                        unhealthy = true;
                        let _ = messages.send(Message::Unhealthy {
                            id: id.clone(),
                            reason,
                        });
                    }
                }
            }
        }
        if unhealthy && failed_in_a_row.iter().all(|failed| *failed == 0) {
            unhealthy = false;
            let _ = messages.send(Message::Recovered { id: id.clone() });
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
