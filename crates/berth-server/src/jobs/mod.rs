//! Jobs and cron: executions of an app's jobs, run by hand, by API or on a
//! schedule, the way Cloud Run jobs run.
//!
//! An execution runs `tasks` tasks, at most `parallelism` at a time, each in a
//! process of the app's active release with `BERTH_TASK_INDEX`,
//! `BERTH_TASK_COUNT` and `BERTH_TASK_ATTEMPT` (and Cloud Run's names). A
//! failed task is retried up to `max_retries` times; an attempt over its
//! `timeout` is stopped and counts as failed. Every attempt is recorded in the
//! store as it starts and ends, so history survives restarts, and a server
//! that comes back marks what it was running as interrupted.
//!
//! The scheduler ([`run_scheduler`]) fires jobs with a `schedule`: once per due time, and once
//! (not once per missed slot) for a schedule missed while the server was down.

use berth_proto::Trigger;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_logs::{LogSource, LogStore};
use berth_proto::{ExecutionInfo, ExecutionStatus, JobInfo, TaskAttemptInfo};
use berth_runtime::ExitCause;
use berth_spec::{AppSpec, JobSpec, OverlapPolicy, Schedule};
use berth_store::{ExecutionRow, ReleaseRow, Store, StoreError};
use chrono::Utc;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::launch;
use crate::reconciler::ReconcilerHandle;

mod one_off;
mod scheduler;
mod suspend;

/// The job name one-off commands (`berth run`) run under: their history
/// is `berth jobs history berth-run`.
pub const ONE_OFF_JOB: &str = "berth-run";

pub use scheduler::run_scheduler;

/// A due time this far in the past was missed, not just reached late.
const MISSED_AFTER: Duration = Duration::from_secs(3);

/// Why a job could not be run or found.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No such app, job or execution.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How one execution was started.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// What started it.
    pub trigger: Trigger,
    /// Override of the job's task count.
    pub tasks: Option<u32>,
    /// Extra env vars.
    pub env: Vec<(String, String)>,
    /// The terminal its one task runs on (`berth run` with a terminal):
    /// the other end of [`berth_runtime::open_terminal`].
    pub terminal: Option<Arc<berth_runtime::InstanceTerminal>>,
}

/// What every task of an execution gets beyond its job's spec.
#[derive(Debug, Clone, Default)]
struct TaskExtras {
    env: Vec<(String, String)>,
    terminal: Option<Arc<berth_runtime::InstanceTerminal>>,
}

struct RunningExecution {
    app: String,
    job: String,
    cancel: CancellationToken,
    done: watch::Receiver<bool>,
}

/// Runs job executions.
pub struct JobRunner {
    store: Arc<Store>,
    logs: Arc<LogStore>,
    /// Starts each task (the reconciler owns every start).
    reconciler: ReconcilerHandle,
    launcher: launch::Launcher,
    running: Mutex<HashMap<i64, RunningExecution>>,
}

/// The app's active release and its spec.
fn active_release(store: &Store, app: &str) -> Result<(ReleaseRow, AppSpec), JobError> {
    let release = store.active_release(app)?.ok_or_else(|| {
        JobError::Invalid(format!(
            "app `{app}` has no active release; deploy it first"
        ))
    })?;
    let spec =
        crate::stored_spec::spec_of(&release).map_err(|err| JobError::Invalid(err.to_string()))?;
    Ok((release, spec))
}

fn find_job<'a>(spec: &'a AppSpec, app: &str, name: &str) -> Result<&'a JobSpec, JobError> {
    spec.jobs
        .iter()
        .find(|job| job.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = spec.jobs.iter().map(|job| job.name.as_str()).collect();
            JobError::NotFound(format!(
                "app `{app}` has no job `{name}` ({})",
                if names.is_empty() {
                    "it has no [[jobs]]".to_string()
                } else {
                    format!("jobs: {}", names.join(", "))
                }
            ))
        })
}

impl JobRunner {
    /// A runner; marks executions a crashed server left running as interrupted.
    pub fn new(
        store: Arc<Store>,
        logs: Arc<LogStore>,
        reconciler: ReconcilerHandle,
        launcher: launch::Launcher,
    ) -> Result<Arc<Self>, StoreError> {
        let interrupted = store.interrupt_running_executions()?;
        if !interrupted.is_empty() {
            tracing::warn!(executions = ?interrupted, "marked job executions interrupted by the last server stop");
        }
        Ok(Arc::new(JobRunner {
            store,
            logs,
            reconciler,
            launcher,
            running: Mutex::new(HashMap::new()),
        }))
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<i64, RunningExecution>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ids of the executions of `job` that still run.
    pub fn running_executions(&self, app: &str, job: &str) -> Vec<i64> {
        self.running()
            .iter()
            .filter(|(_, running)| running.app == app && running.job == job)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether execution `id` is still running: a receiver that turns true
    /// when it ends, or `None` when it has ended already.
    pub fn watch_execution(&self, id: i64) -> Option<watch::Receiver<bool>> {
        self.running().get(&id).map(|running| running.done.clone())
    }

    /// Starts an execution of `job`; returns its id at once.
    pub fn run(
        self: &Arc<Self>,
        app: &str,
        job_name: &str,
        options: RunOptions,
    ) -> Result<i64, JobError> {
        let (release, spec) = active_release(&self.store, app)?;
        let job = find_job(&spec, app, job_name)?.clone();
        self.start(app, release, spec, job, options)
    }

    fn start(
        self: &Arc<Self>,
        app: &str,
        release: ReleaseRow,
        spec: AppSpec,
        job: berth_spec::JobSpec,
        options: RunOptions,
    ) -> Result<i64, JobError> {
        if let Some(resume) = self.suspended(app) {
            return Err(JobError::Invalid(format!(
                "{app} is suspended: its budget was reached; run `{resume}` or raise the budget"
            )));
        }
        let tasks = options.tasks.unwrap_or(job.tasks);
        if !(1..=10_000).contains(&tasks) {
            return Err(JobError::Invalid(format!(
                "tasks must be from 1 to 10000, not {tasks}"
            )));
        }
        for (key, _) in &options.env {
            crate::launch::validate_env_key(key).map_err(JobError::Invalid)?;
        }
        let parallelism = job.parallelism.min(tasks).max(1);
        let id = self.store.start_execution(
            app,
            &job.name,
            release.version,
            &options.trigger,
            tasks,
            parallelism,
        )?;
        let cancel = CancellationToken::new();
        let (done_sender, done) = watch::channel(false);
        self.running().insert(
            id,
            RunningExecution {
                app: app.to_string(),
                job: job.name.clone(),
                cancel: cancel.clone(),
                done,
            },
        );
        let runner = self.clone();
        tokio::spawn(async move {
            let (status, message) = runner
                .execute(
                    id,
                    &release,
                    &spec,
                    &job,
                    tasks,
                    parallelism,
                    &TaskExtras {
                        env: options.env,
                        terminal: options.terminal,
                    },
                    &cancel,
                )
                .await;
            if let Err(err) = runner.store.finish_execution(id, status, &message) {
                tracing::error!(error = %err, execution = id, "cannot record the end of an execution");
            }
            runner.running().remove(&id);
            let _ = done_sender.send(true);
        });
        Ok(id)
    }

    #[allow(clippy::too_many_arguments)]
    async fn execute(
        self: &Arc<Self>,
        id: i64,
        release: &ReleaseRow,
        spec: &AppSpec,
        job: &JobSpec,
        tasks: u32,
        parallelism: u32,
        extras: &TaskExtras,
        cancel: &CancellationToken,
    ) -> (&'static str, String) {
        let permits = Arc::new(Semaphore::new(parallelism as usize));
        let mut handles = Vec::with_capacity(tasks as usize);
        for index in 0..tasks {
            let permits = permits.clone();
            let runner = self.clone();
            let (release, spec, job, cancel) =
                (release.clone(), spec.clone(), job.clone(), cancel.clone());
            let extras = extras.clone();
            handles.push(tokio::spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return false;
                };
                runner
                    .run_task(id, &release, &spec, &job, index, tasks, &extras, &cancel)
                    .await
            }));
        }
        let mut succeeded = 0u32;
        for handle in handles {
            if handle.await.unwrap_or(false) {
                succeeded += 1;
            }
        }
        if cancel.is_cancelled() {
            (
                "cancelled",
                format!("cancelled; {succeeded} of {tasks} task(s) had succeeded"),
            )
        } else if succeeded == tasks {
            ("succeeded", format!("{tasks} of {tasks} task(s) succeeded"))
        } else {
            (
                "failed",
                format!(
                    "{} of {tasks} task(s) failed after their retries",
                    tasks - succeeded
                ),
            )
        }
    }

    /// Runs one task with its retries; returns whether it succeeded.
    #[allow(clippy::too_many_arguments)]
    async fn run_task(
        &self,
        id: i64,
        release: &ReleaseRow,
        spec: &AppSpec,
        job: &JobSpec,
        index: u32,
        count: u32,
        extras: &TaskExtras,
        cancel: &CancellationToken,
    ) -> bool {
        for attempt in 0..=job.max_retries {
            if cancel.is_cancelled() {
                return false;
            }
            let instance = format!("exec-{id}-task-{index}-attempt-{attempt}");
            let mut env: Vec<(String, String)> = job
                .env
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            env.extend(extras.env.iter().cloned());
            for (prefix, names) in [
                ("BERTH_TASK", ["INDEX", "COUNT", "ATTEMPT"]),
                ("CLOUD_RUN_TASK", ["INDEX", "COUNT", "ATTEMPT"]),
            ] {
                let values = [index, count, attempt];
                for (name, value) in names.iter().zip(values) {
                    env.push((format!("{prefix}_{name}"), value.to_string()));
                }
            }
            env.push(("BERTH_JOB".into(), job.name.clone()));
            env.push(("BERTH_EXECUTION".into(), id.to_string()));
            let process = format!("job-{}", job.name);
            if let Err(err) = self.store.start_task_attempt(id, index, attempt) {
                tracing::error!(error = %err, "cannot record a task attempt");
            }
            let began = std::time::Instant::now();
            let attempted = self
                .attempt(
                    release,
                    spec,
                    &process,
                    &instance,
                    &job.command,
                    env,
                    extras.terminal.clone(),
                    job.timeout,
                    spec.kill_timeout,
                    cancel,
                )
                .await;
            let vm = spec.vm_for(&process);
            crate::app_usage::record_job(
                &self.store,
                &release.app,
                &process,
                (vm.cpus, vm.memory_mb),
                began.elapsed(),
            );
            let (status, exit_code, reason) = match attempted {
                Ok(ExitCause::Code(0)) => ("succeeded", Some(0), None),
                Ok(ExitCause::Code(code)) => {
                    ("failed", Some(code), Some(format!("exit code {code}")))
                }
                // A shell's code for a death by signal: 128 + its number
                // (130 after Ctrl-C, 137 after SIGKILL).
                Ok(cause @ ExitCause::Signal(signal)) => {
                    ("failed", Some(128 + signal), Some(cause.to_string()))
                }
                Ok(other) => ("failed", None, Some(other.to_string())),
                Err(reason) => (
                    if cancel.is_cancelled() {
                        "cancelled"
                    } else {
                        "failed"
                    },
                    None,
                    Some(reason),
                ),
            };
            if let Err(err) = self.store.finish_task_attempt(
                id,
                index,
                attempt,
                status,
                exit_code,
                reason.as_deref(),
            ) {
                tracing::error!(error = %err, "cannot record a task attempt's end");
            }
            if status == "succeeded" {
                return true;
            }
        }
        false
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        release: &ReleaseRow,
        app_spec: &AppSpec,
        process: &str,
        instance: &str,
        command: &str,
        env: Vec<(String, String)>,
        terminal: Option<Arc<berth_runtime::InstanceTerminal>>,
        timeout: Duration,
        kill_timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<ExitCause, String> {
        let mut spec = self
            .launcher
            .instance_spec(release, app_spec, process, instance, command, &env)
            .map_err(|err| err.to_string())?;
        launch::give_terminal(&mut spec, terminal)?;
        let _network = self
            .launcher
            .attach_network(release, app_spec, &mut spec, None)
            .map_err(|err| err.to_string())?;
        let source = LogSource {
            app: release.app.clone(),
            process: process.to_string(),
            instance: instance.to_string(),
            release: release.version,
        };
        let sink = launch::log_sink(self.logs.clone(), source, None);
        let running = self
            .reconciler
            .run_once(spec, sink)
            .await
            .map_err(|err| err.to_string())?;
        tokio::select! {
            cause = running.exited() => Ok(cause),
            () = tokio::time::sleep(timeout) => {
                running.stop(kill_timeout).await;
                Err(format!("timed out after {}s and was stopped", timeout.as_secs_f64()))
            }
            () = cancel.cancelled() => {
                running.stop(kill_timeout).await;
                Err("cancelled".into())
            }
        }
    }

    /// Cancels a running execution and waits until its tasks have stopped.
    pub async fn cancel(&self, app: &str, id: i64) -> Result<(), JobError> {
        let execution = self.store.execution(app, id)?;
        let done = {
            let running = self.running();
            match running.get(&id) {
                Some(running) => {
                    running.cancel.cancel();
                    Some(running.done.clone())
                }
                None => None,
            }
        };
        match done {
            Some(mut done) => {
                let _ = done.wait_for(|done| *done).await;
                Ok(())
            }
            None => Err(JobError::Invalid(format!(
                "execution {id} is not running (it {})",
                execution.status
            ))),
        }
    }

    /// The jobs of an app's active release, with their next runs and last executions.
    pub fn jobs(&self, app: &str) -> Result<Vec<JobInfo>, JobError> {
        let (_, spec) = active_release(&self.store, app)?;
        let now = Utc::now();
        spec.jobs
            .iter()
            .map(|job| {
                let next_run = job
                    .schedule
                    .as_deref()
                    .and_then(|schedule| Schedule::parse(schedule, job.time_zone.as_deref()).ok())
                    .and_then(|schedule| schedule.next_after(now))
                    .map(|next| next.to_rfc3339());
                let last_execution = self
                    .store
                    .executions(app, Some(&job.name), 1)?
                    .into_iter()
                    .next()
                    .map(|row| execution_info(&row));
                Ok(JobInfo {
                    name: job.name.clone(),
                    command: job.command.clone(),
                    schedule: job.schedule.clone(),
                    time_zone: job.time_zone.clone(),
                    next_run,
                    tasks: job.tasks,
                    parallelism: job.parallelism,
                    max_retries: job.max_retries,
                    timeout_secs: job.timeout.as_secs(),
                    overlap: match job.overlap {
                        OverlapPolicy::Skip => "skip",
                        OverlapPolicy::Allow => "allow",
                        OverlapPolicy::Replace => "replace",
                    }
                    .into(),
                    last_execution,
                })
            })
            .collect()
    }
}

/// The wire form of an execution.
pub fn execution_info(row: &ExecutionRow) -> ExecutionInfo {
    ExecutionInfo {
        id: row.id,
        app: row.app.clone(),
        job: row.job.clone(),
        release: row.release,
        trigger: row.trigger.clone(),
        status: ExecutionStatus::from(row.status.as_str()),
        started_at: row.started_at.clone(),
        finished_at: row.finished_at.clone(),
        tasks: row.tasks,
        parallelism: row.parallelism,
        succeeded: row.succeeded(),
        failed: row.failed(),
        message: row.message.clone(),
        attempts: row
            .attempts
            .iter()
            .map(|attempt| TaskAttemptInfo {
                task_index: attempt.task_index,
                attempt: attempt.attempt,
                status: ExecutionStatus::from(attempt.status.as_str()),
                exit_code: attempt.exit_code,
                reason: attempt.reason.clone(),
                started_at: attempt.started_at.clone(),
                finished_at: attempt.finished_at.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
