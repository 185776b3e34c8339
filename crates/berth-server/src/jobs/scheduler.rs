//! The scheduler: fires jobs with a `schedule` once per due time, and once
//! (not once per missed slot) for a schedule missed while the server was
//! down; an overlap policy decides what a fire does while a run is going.

use berth_proto::Trigger;
use berth_store::EventKind;
use std::sync::Arc;
use std::time::Duration;

use berth_spec::{JobSpec, OverlapPolicy, Schedule};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{JobRunner, MISSED_AFTER, RunOptions, active_release};

impl JobRunner {
    /// Fires every scheduled job that is due; returns how long until one may be due next.
    pub fn fire_due(self: &Arc<Self>, now: DateTime<Utc>) -> Duration {
        let mut next_wake = Duration::from_secs(1);
        let apps = match self.store.apps() {
            Ok(apps) => apps,
            Err(err) => {
                tracing::error!(error = %err, "scheduler cannot read apps");
                return next_wake;
            }
        };
        for app in apps {
            let Ok((release, spec)) = active_release(&self.store, &app.name) else {
                continue;
            };
            if spec.jobs.iter().any(|job| job.schedule.is_some())
                && self.suspended(&app.name).is_some()
            {
                continue;
            }
            // A schedule is in force from when its release was made, so one
            // that first falls due while the server is down still runs.
            let in_force_since = DateTime::parse_from_rfc3339(&release.created_at)
                .map(|at| at.with_timezone(&Utc))
                .unwrap_or(now)
                .min(now);
            for job in spec.jobs.iter().filter(|job| job.schedule.is_some()) {
                let Some(schedule) = job.schedule.as_deref().and_then(|expression| {
                    Schedule::parse(expression, job.time_zone.as_deref()).ok()
                }) else {
                    continue;
                };
                let last = match self.store.schedule_last_fired(&app.name, &job.name) {
                    Ok(Some(last)) => DateTime::parse_from_rfc3339(&last)
                        .map(|at| at.with_timezone(&Utc))
                        .unwrap_or(now),
                    Ok(None) => {
                        // First sight: it fires from its release on, not for older slots.
                        let since = in_force_since.to_rfc3339();
                        let _ = self.store.set_schedule_fired(&app.name, &job.name, &since);
                        in_force_since
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "scheduler cannot read a schedule");
                        continue;
                    }
                };
                let Some(due) = schedule.next_after(last) else {
                    continue;
                };
                if due > now {
                    if let Ok(wait) = (due - now).to_std() {
                        next_wake = next_wake.min(wait);
                    }
                    continue;
                }
                // Due (once, however many slots were missed).
                if let Err(err) =
                    self.store
                        .set_schedule_fired(&app.name, &job.name, &now.to_rfc3339())
                {
                    tracing::error!(error = %err, "scheduler cannot record a firing");
                    continue;
                }
                // A slot long past was missed (the server was down): say so.
                let missed = (now - due).to_std().is_ok_and(|late| late > MISSED_AFTER);
                self.fire(
                    &app.name,
                    job,
                    if missed {
                        Trigger::CatchUp
                    } else {
                        Trigger::Schedule
                    },
                );
                if let Some(next) = schedule
                    .next_after(now)
                    .and_then(|next| (next - now).to_std().ok())
                {
                    next_wake = next_wake.min(next);
                }
            }
        }
        next_wake
    }

    pub(crate) fn fire(self: &Arc<Self>, app: &str, job: &JobSpec, trigger: Trigger) {
        let running = self.running_executions(app, &job.name);
        if !running.is_empty() {
            match job.overlap {
                OverlapPolicy::Skip => {
                    let _ = self.store.record_event(
                        app,
                        EventKind::JobSkipped,
                        &format!(
                            "job {} was due but execution {} still runs (overlap = skip)",
                            job.name, running[0]
                        ),
                    );
                    return;
                }
                OverlapPolicy::Replace => {
                    for id in &running {
                        if let Some(execution) = self.running().get(id) {
                            execution.cancel.cancel();
                        }
                    }
                }
                OverlapPolicy::Allow => {}
            }
        }
        let runner = self.clone();
        let app = app.to_string();
        let job_name = job.name.clone();
        let replaced = if job.overlap == OverlapPolicy::Replace {
            running
        } else {
            Vec::new()
        };
        tokio::spawn(async move {
            // A replaced execution stops first, so the two never overlap.
            for id in replaced {
                let done = runner
                    .running()
                    .get(&id)
                    .map(|execution| execution.done.clone());
                if let Some(mut done) = done {
                    let _ = done.wait_for(|done| *done).await;
                }
            }
            let options = RunOptions {
                trigger,
                tasks: None,
                env: Vec::new(),
                terminal: None,
            };
            if let Err(err) = runner.run(&app, &job_name, options) {
                let _ = runner.store.record_event(
                    &app,
                    EventKind::JobFailed,
                    &format!("scheduled job {job_name} could not start: {err}"),
                );
            }
        });
    }
}

/// Runs the scheduler until `shutdown` is cancelled.
pub async fn run_scheduler(runner: Arc<JobRunner>, shutdown: CancellationToken) {
    loop {
        let wait = runner
            .fire_due(Utc::now())
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
