//! A driver for unit tests of the code above the driver (the reconciler,
//! deploys, jobs): instances are tasks on the test's runtime that behave as
//! a script says — serve, exit after a while, fail to start, ignore
//! SIGTERM — and every start and stop is recorded. Everything waits on
//! tokio's clock, so a test with a paused clock runs a minute of restarts
//! and drains in milliseconds.
//!
//! Only with the `test-util` feature: production code never sees it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::{
    Driver, DriverError, ExitCause, InstanceControl, InstanceSpec, OutputSink, OutputStream,
    RunningInstance,
};

/// How a fake instance behaves.
#[derive(Debug, Clone)]
pub struct Script {
    /// The driver refuses to start it, with this reason.
    pub start_error: Option<String>,
    /// The driver refuses to start it with this OS error (`EAGAIN`, say).
    pub start_errno: Option<i32>,
    /// It exits on its own this long after it starts, with `exit_code`.
    pub exit_after: Option<Duration>,
    /// Its exit code when it exits on its own.
    pub exit_code: i32,
    /// It answers its health check (once it has started).
    pub healthy: bool,
    /// It takes this long to answer its first health check.
    pub ready_after: Duration,
    /// Lines it writes to stdout as it starts (all delivered before its exit).
    pub lines: Vec<String>,
    /// It ignores SIGTERM, so a stop waits for the kill timeout.
    pub ignores_sigterm: bool,
}

impl Default for Script {
    /// An app that starts at once, serves and stops when asked.
    fn default() -> Script {
        Script {
            start_error: None,
            start_errno: None,
            exit_after: None,
            exit_code: 0,
            healthy: true,
            ready_after: Duration::ZERO,
            lines: Vec::new(),
            ignores_sigterm: false,
        }
    }
}

impl Script {
    /// Exits with `code` `after` it starts.
    pub fn exits(code: i32, after: Duration) -> Script {
        Script {
            exit_after: Some(after),
            exit_code: code,
            ..Script::default()
        }
    }

    /// The driver cannot start it.
    pub fn cannot_start(reason: &str) -> Script {
        Script {
            start_error: Some(reason.to_string()),
            ..Script::default()
        }
    }

    /// The driver cannot start it: the host is out of `errno` (`EAGAIN`).
    pub fn host_short_of(errno: i32) -> Script {
        Script {
            start_errno: Some(errno),
            ..Script::default()
        }
    }

    /// Runs but never answers its health check.
    pub fn never_healthy() -> Script {
        Script {
            healthy: false,
            ..Script::default()
        }
    }
}

/// One start the driver was asked for.
#[derive(Debug, Clone)]
pub struct Started {
    /// The instance id.
    pub id: String,
    /// Its app.
    pub app: String,
    /// Its command.
    pub command: String,
    /// Its environment.
    pub env: Vec<(String, String)>,
    /// Its pid (made up).
    pub pid: u32,
    /// When it started, on tokio's clock.
    pub at: Instant,
    /// When it was sent SIGTERM, if it was.
    pub terminated_at: Option<Instant>,
    /// How it ended, once it has.
    pub exit: Option<ExitCause>,
    /// When it ended.
    pub ended_at: Option<Instant>,
}

impl Started {
    /// A variable of its environment.
    pub fn env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// Whether it is still running.
    pub fn is_running(&self) -> bool {
        self.exit.is_none()
    }
}

type Chooser = Box<dyn Fn(&InstanceSpec) -> Option<Script> + Send + Sync>;

#[derive(Default)]
struct State {
    /// Scripts by who they are for, newest first; the default otherwise.
    rules: Vec<Chooser>,
    started: Vec<Started>,
    /// When starts were refused (by a script's start error).
    refused: Vec<Instant>,
    /// Exit senders and scripts of running instances, by id.
    live: BTreeMap<String, (watch::Sender<Option<ExitCause>>, Script)>,
    next_pid: u32,
}

/// The fake driver (see the module docs). Cheap to clone: clones share
/// their instances.
#[derive(Clone, Default)]
pub struct FakeDriver {
    state: Arc<Mutex<State>>,
}

impl FakeDriver {
    /// A driver whose instances all follow [`Script::default`].
    pub fn new() -> FakeDriver {
        FakeDriver::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// From now on, instances `choose` returns a script for follow it (the
    /// latest rule that answers wins); others follow the earlier rules or
    /// the default.
    pub fn script(&self, choose: impl Fn(&InstanceSpec) -> Option<Script> + Send + Sync + 'static) {
        self.lock().rules.insert(0, Box::new(choose));
    }

    /// From now on, instances of `app` whose `BERTH_RELEASE` is `release`
    /// follow `script`.
    pub fn script_release(&self, app: &str, release: u64, script: Script) {
        let app = app.to_string();
        let release = release.to_string();
        self.script(move |spec| {
            let ours = spec.app == app
                && spec
                    .env
                    .iter()
                    .any(|(key, value)| key == "BERTH_RELEASE" && *value == release);
            ours.then(|| script.clone())
        });
    }

    /// Every start so far, oldest first.
    pub fn started(&self) -> Vec<Started> {
        self.lock().started.clone()
    }

    /// When the driver refused a start, oldest first.
    pub fn refused(&self) -> Vec<Instant> {
        self.lock().refused.clone()
    }

    /// The starts of `app` still running.
    pub fn running(&self, app: &str) -> Vec<Started> {
        self.lock()
            .started
            .iter()
            .filter(|started| started.app == app && started.is_running())
            .cloned()
            .collect()
    }

    /// Whether the instance listening on `port` (its `PORT`) answers its
    /// health check now: for a fake health probe.
    pub fn answers_on(&self, port: u16) -> bool {
        let state = self.lock();
        let port = port.to_string();
        state.started.iter().any(|started| {
            started.is_running()
                && started.env("PORT") == Some(port.as_str())
                && state.live.get(&started.id).is_some_and(|(_, script)| {
                    script.healthy && Instant::now() >= started.at + script.ready_after
                })
        })
    }

    /// Makes a running instance exit now, as if it crashed.
    pub fn crash(&self, id: &str, cause: ExitCause) {
        finish(&self.state, id, cause);
    }
}

/// Records `id`'s end and tells whoever waits on it.
fn finish(state: &Mutex<State>, id: &str, cause: ExitCause) {
    let mut state = state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some((exit, _)) = state.live.remove(id) else {
        return;
    };
    if let Some(started) = state.started.iter_mut().find(|started| started.id == id) {
        started.exit = Some(cause.clone());
        started.ended_at = Some(Instant::now());
    }
    let _ = exit.send(Some(cause));
}

impl Driver for FakeDriver {
    fn start(
        &self,
        spec: &InstanceSpec,
        output: OutputSink,
    ) -> Result<RunningInstance, DriverError> {
        let mut state = self.lock();
        let script = state
            .rules
            .iter()
            .find_map(|choose| choose(spec))
            .unwrap_or_default();
        let refusal = match (&script.start_error, script.start_errno) {
            (_, Some(errno)) => Some(std::io::Error::from_raw_os_error(errno)),
            (Some(reason), None) => Some(std::io::Error::other(reason.clone())),
            (None, None) => None,
        };
        if let Some(source) = refusal {
            state.refused.push(Instant::now());
            return Err(DriverError::Spawn {
                command: spec.command.clone(),
                source,
            });
        }
        state.next_pid += 1;
        let pid = 100_000 + state.next_pid;
        let (exit, exit_receiver) = watch::channel(None);
        state.started.push(Started {
            id: spec.id.clone(),
            app: spec.app.clone(),
            command: spec.command.clone(),
            env: spec.env.clone(),
            pid,
            at: Instant::now(),
            terminated_at: None,
            exit: None,
            ended_at: None,
        });
        state.live.insert(spec.id.clone(), (exit, script.clone()));
        drop(state);
        // Its output comes before its exit, as a real process's does.
        for line in &script.lines {
            output(OutputStream::Stdout, line.clone());
        }
        if let Some(after) = script.exit_after {
            let state = self.state.clone();
            let id = spec.id.clone();
            let code = script.exit_code;
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                finish(&state, &id, ExitCause::Code(code));
            });
        }
        let control = Arc::new(FakeControl {
            id: spec.id.clone(),
            state: self.state.clone(),
        });
        Ok(RunningInstance::new(pid, exit_receiver, control))
    }
}

/// Signals a fake instance.
struct FakeControl {
    id: String,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeControl").field("id", &self.id).finish()
    }
}

impl InstanceControl for FakeControl {
    fn terminate(&self) {
        let ignores = {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(started) = state.started.iter_mut().find(|s| s.id == self.id) {
                started.terminated_at.get_or_insert_with(Instant::now);
            }
            state
                .live
                .get(&self.id)
                .is_some_and(|(_, script)| script.ignores_sigterm)
        };
        if !ignores {
            finish(&self.state, &self.id, ExitCause::Signal(libc::SIGTERM));
        }
    }

    fn kill(&self) {
        finish(&self.state, &self.id, ExitCause::Signal(libc::SIGKILL));
    }
}
