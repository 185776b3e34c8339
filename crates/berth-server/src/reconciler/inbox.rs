//! What instances and the router tell the loop: healthy, failed, exited,
//! a count set ahead of the store, a wake.

use berth_runtime::ExitCause;
use berth_store::EventKind;
use tokio::time::Instant;

use super::Reconciler;
use super::handle::{EndedInstance, Message, StartFailure};
use super::state::{Override, Phase};

impl Reconciler {
    pub(super) fn apply(&mut self, message: Message) {
        match message {
            Message::Wake { app } => self.wake(&app),
            Message::RunOnce {
                spec,
                output,
                reply,
            } => self.run_once(&spec, output, reply),
            Message::OneOffExited { id } => self.one_off_exited(&id),
            Message::SetCount { app, group, count } => {
                self.overrides.insert(
                    (app, group),
                    Override {
                        count,
                        at: Instant::now(),
                        stored_then: None,
                    },
                );
            }
            Message::Healthy { id, after } => {
                tracing::debug!(instance = %id, ?after, "healthy");
                let Some(instance) = self.instances.get_mut(&id) else {
                    return;
                };
                if instance.phase != Phase::Starting {
                    return;
                }
                instance.phase = Phase::Running;
                if let Some(since) = instance.cold_since.take() {
                    let key = (instance.app.clone(), instance.process.clone());
                    self.lifecycles
                        .entry(key)
                        .or_default()
                        .cold_start(since.elapsed());
                }
                let text = format!(
                    "{id} (v{}) is up after {:.1} ms",
                    instance.release,
                    after.as_secs_f64() * 1000.0
                );
                let app = instance.app.clone();
                self.event(&app, EventKind::InstanceStarted, &text);
            }
            Message::StartFailed { id, reason } => {
                let Some(instance) = self.instances.get(&id) else {
                    return;
                };
                if instance.phase != Phase::Starting {
                    return;
                }
                let (app, process, release) = (
                    instance.app.clone(),
                    instance.process.clone(),
                    instance.release,
                );
                let hint = crate::health::listening_hint(instance.running.pid, instance.port);
                let text = format!(
                    "{id} (v{release}) did not pass its health check in time: {reason}{hint}"
                );
                self.event(&app, EventKind::HealthTimeout, &text);
                self.record_failure(&app, &process, &text);
                let _ = self.failures.send(StartFailure {
                    app,
                    release,
                    instance: id.clone(),
                    reason: text,
                });
                self.begin_stop(&id, "its health check never passed");
            }
            Message::Unhealthy { id, reason } => {
                let Some(instance) = self.instances.get_mut(&id) else {
                    return;
                };
                if instance.phase != Phase::Running {
                    return;
                }
                instance.phase = Phase::Unhealthy;
                instance.unhealthy_since = Some(Instant::now());
                let app = instance.app.clone();
                self.event(
                    &app,
                    EventKind::HealthFailed,
                    &format!("{id} is unhealthy and out of rotation: {reason}"),
                );
            }
            Message::Recovered { id } => {
                let Some(instance) = self.instances.get_mut(&id) else {
                    return;
                };
                if instance.phase != Phase::Unhealthy {
                    return;
                }
                instance.phase = Phase::Running;
                instance.unhealthy_since = None;
                let app = instance.app.clone();
                self.event(
                    &app,
                    EventKind::HealthRecovered,
                    &format!("{id} is healthy again"),
                );
            }
            Message::Exited { id, cause } => {
                let Some(instance) = self.instances.remove(&id) else {
                    return;
                };
                instance.watcher.abort();
                self.ended.push_back((
                    Instant::now(),
                    EndedInstance {
                        id: id.clone(),
                        app: instance.app.clone(),
                        process: instance.process.clone(),
                        release: instance.release,
                        ran: instance.started.elapsed(),
                    },
                ));
                if let Err(err) = self.parts.store.forget_instance(&id) {
                    tracing::warn!(error = %err, "cannot forget instance");
                }
                let release = instance.release;
                match instance.phase {
                    Phase::Draining | Phase::Stopping => {
                        self.berth_line(&instance, &format!("{id} stopped ({cause})"));
                    }
                    phase => {
                        let counts = self
                            .lifecycles
                            .entry((instance.app.clone(), instance.process.clone()))
                            .or_default();
                        counts.restarts += 1;
                        if matches!(cause, ExitCause::OutOfMemory { .. }) {
                            counts.oom_kills += 1;
                        }
                        let uptime = instance.started.elapsed();
                        let delay = self.record_failure(
                            &instance.app,
                            &instance.process,
                            &cause.to_string(),
                        );
                        let text = format!(
                            "{id} (v{release}) exited unexpectedly after {:.1}s: {cause}; restarting in {:.1}s",
                            uptime.as_secs_f64(),
                            delay.as_secs_f64()
                        );
                        self.berth_line(&instance, &text);
                        self.event(&instance.app, EventKind::InstanceExited, &text);
                        if phase == Phase::Starting {
                            let _ = self.failures.send(StartFailure {
                                app: instance.app.clone(),
                                release,
                                instance: id.clone(),
                                reason: format!("{id} exited during start-up: {cause}"),
                            });
                        }
                    }
                }
            }
        }
    }
}
