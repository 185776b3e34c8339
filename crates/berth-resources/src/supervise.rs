//! Keeps a server process (PostgreSQL, Redis) running.
//!
//! A [`Supervisor`] spawns the command, appends its output to a log file,
//! and when it exits without being asked to, spawns it again after a
//! backoff (0.5 s doubling to 30 s, reset after a minute of good running).
//! [`Supervisor::stop`] sends the service's own clean-shutdown signal and
//! waits, then kills it if it takes too long. The process also gets that
//! signal if the server itself dies, so no service outlives berth.

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use berth_runtime::SystemUser;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a service has to stop before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// A command line for a service.
#[derive(Debug, Clone)]
pub struct ServiceCommand {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Who it runs as (`None`: berth's own user).
    pub user: Option<SystemUser>,
    /// Where its output is appended.
    pub log: PathBuf,
    /// Its working directory.
    pub workdir: PathBuf,
    /// The signal that makes it shut down cleanly.
    pub stop_signal: i32,
    /// Limits of a cgroup of its own (as root, where cgroups are managed).
    pub limits: Option<berth_runtime::cgroup::Limits>,
}

impl ServiceCommand {
    fn command(&self) -> std::io::Result<tokio::process::Command> {
        // The log's directory may belong to the service's user: never
        // follow a link planted there.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.log)?;
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .current_dir(&self.workdir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if let Some(user) = &self.user {
            command.uid(user.uid).gid(user.gid);
        }
        berth_runtime::die_with_parent(&mut command, self.stop_signal);
        Ok(command)
    }
}

/// A running, supervised service.
pub struct Supervisor {
    name: String,
    pid: watch::Receiver<Option<u32>>,
    starts: Arc<AtomicU32>,
    stop: CancellationToken,
    stopped: watch::Receiver<bool>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("name", &self.name)
            .field("pid", &*self.pid.borrow())
            .finish()
    }
}

impl Supervisor {
    /// Starts `command` and keeps it running until [`Supervisor::stop`].
    /// Call from a long-lived runtime thread.
    pub fn start(name: impl Into<String>, command: ServiceCommand) -> Supervisor {
        let name = name.into();
        let (pid_sender, pid) = watch::channel(None);
        let (stopped_sender, stopped) = watch::channel(false);
        let starts = Arc::new(AtomicU32::new(0));
        let stop = CancellationToken::new();
        tokio::spawn(run(
            name.clone(),
            command,
            pid_sender,
            starts.clone(),
            stop.clone(),
            stopped_sender,
        ));
        Supervisor {
            name,
            pid,
            starts,
            stop,
            stopped,
        }
    }

    /// The process id now, if it runs.
    pub fn pid(&self) -> Option<u32> {
        *self.pid.borrow()
    }

    /// How many times it was started (1 + restarts).
    pub fn starts(&self) -> u32 {
        self.starts.load(Ordering::Relaxed)
    }

    /// Waits until a process runs (or the supervisor stopped).
    pub async fn running(&self) -> Option<u32> {
        let mut pid = self.pid.clone();
        let mut stopped = self.stopped.clone();
        loop {
            if let Some(pid) = *pid.borrow_and_update() {
                return Some(pid);
            }
            if *stopped.borrow_and_update() {
                return None;
            }
            tokio::select! {
                changed = pid.changed() => if changed.is_err() { return None },
                changed = stopped.changed() => if changed.is_err() { return None },
            }
        }
    }

    /// Stops it cleanly (killing it after a grace period) and waits.
    pub async fn stop(&self) {
        self.stop.cancel();
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }
}

async fn run(
    name: String,
    command: ServiceCommand,
    pid_sender: watch::Sender<Option<u32>>,
    starts: Arc<AtomicU32>,
    stop: CancellationToken,
    stopped: watch::Sender<bool>,
) {
    // One cgroup for the service's life, each start of it joins.
    let cgroup = command.limits.and_then(|limits| {
        let cgroups = berth_runtime::cgroup::Cgroups::detect()?;
        cgroups
            .create(&format!("{name}-{}", std::process::id()), limits)
            .inspect_err(|err| tracing::warn!(service = %name, error = %err, "no cgroup: its limits are not enforced"))
            .ok()
    });
    let mut backoff = Duration::from_millis(500);
    while !stop.is_cancelled() {
        let spawned = command.command().and_then(|mut command| command.spawn());
        let mut child = match spawned {
            Ok(child) => child,
            Err(err) => {
                tracing::error!(service = %name, error = %err, "cannot start");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        starts.fetch_add(1, Ordering::Relaxed);
        let pid = child.id();
        if let (Some(cgroup), Some(pid)) = (&cgroup, pid)
            && let Err(err) = cgroup.attach(pid)
        {
            tracing::warn!(service = %name, error = %err, "cannot join its cgroup: its limits are not enforced");
        }
        let _ = pid_sender.send(pid);
        let started = Instant::now();
        tokio::select! {
            status = child.wait() => {
                let _ = pid_sender.send(None);
                tracing::warn!(service = %name, status = ?status.ok(), "exited; restarting");
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_millis(500);
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            () = stop.cancelled() => {
                if let Some(pid) = pid {
                    berth_runtime::signal_process(pid, command.stop_signal);
                }
                if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                    tracing::warn!(service = %name, "did not stop in time; killing it");
                    let _ = child.kill().await;
                }
                let _ = pid_sender.send(None);
            }
        }
    }
    if let Some(cgroup) = cgroup {
        cgroup.remove();
    }
    let _ = stopped.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_service_that_dies_is_started_again_and_stops_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let supervisor = Supervisor::start(
            "sleeper",
            ServiceCommand {
                program: "/bin/sleep".into(),
                args: vec!["30".into()],
                user: None,
                log: dir.path().join("log"),
                workdir: dir.path().to_path_buf(),
                stop_signal: libc::SIGTERM,
                limits: None,
            },
        );
        let first = supervisor.running().await.unwrap();
        berth_runtime::signal_process(first, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        let second = loop {
            if let Some(pid) = supervisor.pid()
                && pid != first
            {
                break pid;
            }
            assert!(Instant::now() < deadline, "not restarted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(supervisor.starts(), 2);
        supervisor.stop().await;
        assert!(supervisor.pid().is_none());
        assert!(!std::path::Path::new(&format!("/proc/{second}")).exists());
    }
}
