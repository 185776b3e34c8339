//! From a release to a release that serves: release command, roll-out
//! through the reconciler, post-deploy command, or a failure that leaves
//! the old release serving.

use std::sync::Arc;

use berth_logs::LogQuery;
use berth_proto::DeployProgress;
use berth_spec::AppSpec;
use berth_store::{NewRelease, ReleaseRow};
use tokio::time::Instant;

use super::Deployer;
use super::failure::{DeployFailure, Progress, say};
use crate::reconciler::{Replacement, replacement};

impl Deployer {
    /// Makes a release and, when the spec has a release command, runs it in a
    /// temporary instance of the new release before the release becomes the
    /// app's target. If the command fails, the release fails and nothing
    /// that serves is touched.
    pub(super) async fn make_release(
        &self,
        spec: &AppSpec,
        new: NewRelease,
        app: &str,
        progress: &Progress,
    ) -> Result<ReleaseRow, DeployFailure> {
        let Some(command) = spec.deploy.release_command.clone() else {
            return Ok(self.store.begin_release(app, new)?);
        };
        let release = self.store.create_release(app, new)?;
        say(
            progress,
            format!(
                "running the release command of v{}: {command}",
                release.version
            ),
        );
        if let Err((reason, instance)) = self
            .run_once(
                spec,
                &release,
                "release",
                &command,
                spec.deploy.release_command_timeout,
                progress,
            )
            .await
        {
            return Err(self
                .fail(app, release.version, &reason, instance.as_deref())
                .await);
        }
        say(progress, "the release command succeeded");
        self.store.target_release(app, release.version)?;
        Ok(release)
    }

    /// Runs `command` once in a temporary instance of `release` (process
    /// `what`: the release command, a post-deploy command), its output going
    /// to the log store and to the client. Fails with the reason and, when
    /// it started, the instance's name.
    pub(super) async fn run_once(
        &self,
        spec: &AppSpec,
        release: &ReleaseRow,
        what: &str,
        command: &str,
        timeout: std::time::Duration,
        progress: &Progress,
    ) -> Result<(), (String, Option<String>)> {
        let app = &release.app;
        let instance = format!("{what}-v{}", release.version);
        let mut instance_spec = self
            .launcher
            .instance_spec(release, spec, what, &instance, command, &[])
            .map_err(|err| (err.to_string(), None))?;
        let _network = self
            .launcher
            .attach_network(release, spec, &mut instance_spec, None)
            .map_err(|err| (err.to_string(), None))?;
        let source = berth_logs::LogSource {
            app: app.to_string(),
            process: what.into(),
            instance: instance.clone(),
            release: release.version,
        };
        let to_client = progress.clone();
        let also: Arc<dyn Fn(String) + Send + Sync> = Arc::new(move |line| {
            let _ = to_client.send(DeployProgress::ReleaseOutput { line });
        });
        let sink = crate::launch::log_sink(self.logs.clone(), source, Some(also));
        let running = self
            .reconciler
            .run_once(instance_spec, sink)
            .await
            .map_err(|err| (format!("the {what} command could not start: {err}"), None))?;
        let outcome = tokio::select! {
            cause = running.exited() => cause,
            () = tokio::time::sleep(timeout) => {
                running.stop(spec.kill_timeout).await;
                return Err((
                    format!("the {what} command `{command}` did not finish within {}s and was stopped", timeout.as_secs()),
                    Some(instance),
                ));
            }
        };
        if !outcome.success() {
            return Err((
                format!("the {what} command `{command}` failed ({outcome})"),
                Some(instance),
            ));
        }
        Ok(())
    }

    /// Makes `release` (already the app's target) serve, or fails it.
    pub(super) async fn roll_out(
        &self,
        spec: &AppSpec,
        release: ReleaseRow,
        progress: &Progress,
    ) -> Result<u64, DeployFailure> {
        let app = release.app.clone();
        let version = release.version;
        let counts = self.store.counts(&app)?;
        let plan: Vec<String> = release
            .processes
            .keys()
            .map(|process| format!("{process} ×{}", counts.get(process).copied().unwrap_or(0)))
            .collect();
        say(
            progress,
            format!("starting v{version}: {}", plan.join(", ")),
        );
        let replaces = self.store.active_release(&app)?.is_some();
        for process in release.processes.keys().filter(|_| replaces) {
            if let Replacement::StopFirst(because) =
                replacement(spec, process, self.resources.isolated())
            {
                say(
                    progress,
                    format!(
                        "{process}: the old instances stop before the new ones start, because {because} (a short gap in service)"
                    ),
                );
            }
        }
        let mut failures = self.reconciler.start_failures();
        let mut snapshots = self.reconciler.watch_snapshot();
        self.reconciler.nudge();
        let deadline =
            Instant::now() + spec.deploy.wait_timeout + std::time::Duration::from_secs(2);
        loop {
            if self.release_is_up(&release) {
                self.store.finish_release(&app, version)?;
                // Its `[logs]` retention holds from now, not at the next pass.
                let _ = self
                    .logs
                    .retain(&app, crate::log_retention::retention_of(&spec.logs));
                self.collect_slugs();
                self.reconciler.nudge();
                let url = (self.url_for)(&app);
                say(
                    progress,
                    format!("v{version} is healthy; older instances drain and stop"),
                );
                self.post_deploy(spec, &release, progress).await?;
                let _ = progress.send(DeployProgress::Done {
                    release: version,
                    url,
                });
                return Ok(version);
            }
            tokio::select! {
                failure = failures.recv() => {
                    if let Ok(failure) = failure
                        && failure.app == app && failure.release == version {
                            return Err(self.fail(&app, version, &failure.reason, Some(&failure.instance)).await);
                        }
                }
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return Err(self.fail(&app, version, "the server is shutting down", None).await);
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    let reason = format!("its instances did not become healthy within {}s", spec.deploy.wait_timeout.as_secs());
                    return Err(self.fail(&app, version, &reason, None).await);
                }
            }
        }
    }

    /// Whether every instance of `release` the reconciler wants runs and
    /// passes its health check: its own count, read from its snapshot each
    /// time (a scale during the deploy changes it).
    pub(super) fn release_is_up(&self, release: &ReleaseRow) -> bool {
        let snapshot = self.reconciler.snapshot();
        let Some(actual) = snapshot.apps.get(&release.app) else {
            return false;
        };
        actual.release == Some(release.version)
            && release.processes.keys().all(|process| {
                actual
                    .groups
                    .iter()
                    .any(|group| &group.name == process && group.running >= group.desired)
            })
    }

    pub(super) async fn fail(
        &self,
        app: &str,
        version: u64,
        reason: &str,
        instance: Option<&str>,
    ) -> DeployFailure {
        let failed = self.store.fail_release(app, version, reason);
        self.collect_slugs();
        let previous = match failed {
            Ok(previous) => previous,
            Err(err) => {
                tracing::error!(error = %err, "cannot mark the release failed");
                None
            }
        };
        self.reconciler.nudge();
        let mut message = match previous {
            Some(previous) => format!("v{version} failed: {reason}. v{previous} keeps serving."),
            None => format!("v{version} failed: {reason}."),
        };
        if let Some(instance) = instance {
            // Its exit was reported after its last line: show the last ones.
            let _ = self.logs.flush().await;
            let query = LogQuery {
                app: app.to_string(),
                instance: Some(instance.to_string()),
                limit: 20,
                ..LogQuery::default()
            };
            if let Ok(lines) = self.logs.query(&query)
                && !lines.is_empty()
            {
                message.push_str(&format!("\nlast output of {instance}:"));
                for stored in lines {
                    message.push_str("\n  ");
                    message.push_str(&stored.line.message);
                }
            }
        }
        DeployFailure {
            message,
            release: Some(version),
        }
    }

    /// Runs the spec's post-deploy command once the release serves (after
    /// each roll-out: deploys, env changes and rollbacks alike, as Dokku
    /// runs `postdeploy` after each deploy).
    pub(super) async fn post_deploy(
        &self,
        spec: &AppSpec,
        release: &ReleaseRow,
        progress: &Progress,
    ) -> Result<(), DeployFailure> {
        let Some(command) = &spec.deploy.post_deploy_command else {
            return Ok(());
        };
        say(
            progress,
            format!("running the post-deploy command: {command}"),
        );
        self.run_once(
            spec,
            release,
            "postdeploy",
            command,
            spec.deploy.release_command_timeout,
            progress,
        )
        .await
        .map_err(|(reason, _)| DeployFailure {
            message: format!("v{} is live, but {reason}", release.version),
            release: Some(release.version),
        })?;
        say(progress, "the post-deploy command succeeded");
        Ok(())
    }
}
