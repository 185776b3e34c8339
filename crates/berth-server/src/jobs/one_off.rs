//! One-off commands (`berth run`, `berth console`): executions of the job
//! [`ONE_OFF_JOB`] with one task and no retry.

use std::sync::Arc;
use std::time::Duration;

use super::{JobError, JobRunner, ONE_OFF_JOB, RunOptions, active_release};

impl JobRunner {
    /// Starts a one-off run of `command` in a task of the app's active
    /// release (`berth run`): an execution of the job [`ONE_OFF_JOB`], one
    /// task, no retry, killed after `timeout`. Returns its id at once.
    pub fn run_command(
        self: &Arc<Self>,
        app: &str,
        command: &str,
        timeout: Duration,
        options: RunOptions,
    ) -> Result<i64, JobError> {
        if command.trim().is_empty() {
            return Err(JobError::Invalid("the command is empty".into()));
        }
        let (release, spec) = active_release(&self.store, app)?;
        (self
            .launcher
            .ready_terminal(&release, options.terminal.as_deref()))
        .map_err(JobError::Invalid)?;
        let job = berth_spec::JobSpec {
            name: ONE_OFF_JOB.into(),
            command: command.to_string(),
            schedule: None,
            time_zone: None,
            tasks: 1,
            parallelism: 1,
            max_retries: 0,
            timeout,
            env: Default::default(),
            overlap: berth_spec::OverlapPolicy::Allow,
        };
        self.start(app, release, spec, job, options)
    }

    /// The command line a one-off request runs: its own, or with
    /// `console`, the spec's `console_command` (`berth console`).
    pub fn one_off_command(
        &self,
        app: &str,
        request: &berth_proto::RunCommand,
    ) -> Result<String, JobError> {
        if !request.console {
            return Ok(request.command.clone());
        }
        if !request.command.trim().is_empty() {
            return Err(JobError::Invalid(
                "a console request runs the spec's console_command: give no command".into(),
            ));
        }
        let (_, spec) = active_release(&self.store, app)?;
        spec.console_command.ok_or_else(|| {
            JobError::Invalid(format!(
                "{app} has no console_command in its spec; use `berth run -- COMMAND`"
            ))
        })
    }
}
