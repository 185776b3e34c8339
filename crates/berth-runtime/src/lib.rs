//! Runtime drivers: how an instance of a release is started, watched and stopped.
//!
//! [`Driver`] is the one trait the reconciler knows; [`ProcessDriver`] is the
//! embedded default, running each instance as a child process in its own
//! process group, with its output captured line by line and its exit observed.
//! Drivers never decide *what* runs or restart anything: that is the
//! reconciler's job. They start, report and stop.

mod beneath;
pub mod cgroup;
pub mod docker;
#[cfg(feature = "test-util")]
pub mod fake;
mod isolation;
pub mod net;
mod process;
mod sockets;
pub mod spawner;
mod terminal;
pub mod users;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use beneath::{list_in_root, open_beneath, open_in_root, read_in_root};
pub use isolation::{run_instance_init_if_asked, with_exact_sleeps};
pub use net::{netns, uplink};
pub use process::ProcessDriver;
pub use sockets::listening_ports;
pub use terminal::{InstanceTerminal, TerminalMaster, open_terminal};

/// What to run.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// Unique instance id.
    pub id: String,
    /// The app it belongs to.
    pub app: String,
    /// A command line, run by `/bin/sh -c` so `$VARS` expand (a simple
    /// command is `exec`ed, so signals reach it directly).
    pub command: String,
    /// Working directory: the release's slug.
    pub workdir: PathBuf,
    /// Directory put first on `PATH` (the slug's binaries).
    pub bin_dir: PathBuf,
    /// Environment on top of a minimal base (`PATH`, `HOME`, `LANG`).
    pub env: Vec<(String, String)>,
    /// Directories bind-mounted into the instance's own mount namespace
    /// (volumes). Applied only when [`can_isolate`]; otherwise the caller
    /// tells the app the source paths through its environment.
    pub binds: Vec<BindMount>,
    /// Its sandbox: its own user, limits, private `/tmp`. Applied only
    /// when [`can_isolate`].
    pub sandbox: Option<Sandbox>,
    /// The signal a stop sends first (`libc::SIGTERM` unless the app asks
    /// for another, fly's `kill_signal`); SIGKILL follows after the grace.
    pub stop_signal: i32,
    /// A terminal (the other end of [`open_terminal`]) to run it on, as
    /// its stdin, stdout, stderr and controlling terminal, instead of
    /// capturing its output as lines. Only for one-off commands.
    pub terminal: Option<Arc<InstanceTerminal>>,
    /// The image a container engine runs it from (`--runtime docker`),
    /// instead of berth's own sandbox over the image's root.
    pub container: Option<ContainerImage>,
}

/// An image a container engine pulls and runs an instance from.
#[derive(Clone, PartialEq, Eq)]
pub struct ContainerImage {
    /// The reference the engine pulls, pinned by digest
    /// (`127.0.0.1:8079/shop@sha256:…`).
    pub reference: String,
    /// The user it signs in to the registry as.
    pub username: String,
    /// Its password (berth's token): never printed.
    pub password: String,
}

impl fmt::Debug for ContainerImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerImage")
            .field("reference", &self.reference)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// How an instance is fenced in when berth runs as root.
#[derive(Debug, Clone, PartialEq)]
pub struct Sandbox {
    /// The app's own user id (no name needed).
    pub uid: u32,
    /// Its group id.
    pub gid: u32,
    /// Memory and CPU limits (a cgroup of its own).
    pub limits: Option<cgroup::Limits>,
    /// A fresh, private `/tmp`.
    pub private_tmp: bool,
    /// A network namespace of its own (its own loopback), joined before exec.
    pub network: Option<std::sync::Arc<net::netns::NetNs>>,
    /// A root file system of its own (an image's, on the host), made its
    /// `/` with `pivot_root`: nothing of the host's file system is seen but
    /// the bind mounts. The working directory and mount destinations are
    /// paths inside it. `None`: the host's root, read-only.
    pub root: Option<PathBuf>,
}

/// A host directory (or file) the instance sees at another path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// The directory on the host.
    pub source: PathBuf,
    /// Where the instance sees it (an absolute path).
    pub destination: PathBuf,
    /// Whether a sandboxed instance may write to it. Everything else it
    /// sees of the file system is read-only, but for its `/tmp` and
    /// `/dev/shm`.
    pub writable: bool,
}

/// Whether this process may give instances namespaces and mounts of their
/// own (it runs as root).
pub fn can_isolate() -> bool {
    isolation::is_root()
}

/// A user of this machine, from /etc/passwd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemUser {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// Looks up `name` in /etc/passwd.
pub fn system_user(name: &str) -> Option<SystemUser> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let login = fields.next()?;
        if login != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(SystemUser {
            name: login.to_string(),
            uid,
            gid,
        })
    })
}

/// Makes `command`'s process receive `signal` when the thread that spawns it
/// dies (a crashed server), for services berth runs beside instances:
/// PostgreSQL gets SIGINT (its fast, clean shutdown), Redis SIGTERM.
pub fn die_with_parent(command: &mut tokio::process::Command, signal: i32) {
    // The hook only makes one async-signal-safe system call.
    #[allow(unsafe_code)]
    // SAFETY: see isolation::die_with_parent_by.
    unsafe {
        command.pre_exec(move || isolation::die_with_parent_by(signal));
    }
}

/// Makes files this process creates private to its user (umask 077); the
/// server sets it at start, so its data dir holds nothing others can read.
/// Instances get the usual 022 back.
pub fn private_umask() {
    isolation::set_umask(0o077);
}

/// Bytes still free (for users other than root) on the file system that
/// holds `path`.
pub fn free_disk_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    isolation::free_disk_bytes(path)
}

/// Runs `command` to its end; a failure says "cannot `what`" and what the
/// program wrote to stderr. For the host tools berth drives (mkfs, mount,
/// openssl, …).
pub fn run_command(command: &mut std::process::Command, what: &str) -> Result<(), String> {
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|err| format!("cannot {what}: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cannot {what}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Sends `signal` to process `pid`.
pub fn signal_process(pid: u32, signal: i32) {
    isolation::signal_process(pid, signal);
}

/// Which stream a line of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Receives each line an instance writes.
pub type OutputSink = Arc<dyn Fn(OutputStream, String) + Send + Sync>;

/// Says whether the instances' output is coming faster than it is stored.
pub type Backlog = Arc<dyn Fn() -> bool + Send + Sync>;

static OUTPUT_BACKLOG: std::sync::OnceLock<Backlog> = std::sync::OnceLock::new();

/// Makes instances' output wait while `backlogged` says so: their pipes
/// fill and they block on their writes, as on a slow disk, instead of
/// their lines being dropped. Set once, by the server.
pub fn set_output_backlog(backlogged: Backlog) {
    let _ = OUTPUT_BACKLOG.set(backlogged);
}

fn output_backlogged() -> bool {
    OUTPUT_BACKLOG.get().is_some_and(|backlogged| backlogged())
}

/// How an instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitCause {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// Its status could not be read.
    Unknown(String),
    /// It never ran its program: this says why (`cannot start `cmd`: …`).
    CannotStart(String),
    /// The kernel killed it for using more memory than its limit.
    OutOfMemory {
        /// The limit, in MiB.
        limit_mib: u64,
    },
}

impl ExitCause {
    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        matches!(self, ExitCause::Code(0))
    }
}

impl fmt::Display for ExitCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitCause::Code(code) => write!(f, "exit code {code}"),
            ExitCause::Signal(signal) => {
                let name = match *signal {
                    1 => "SIGHUP",
                    2 => "SIGINT",
                    6 => "SIGABRT",
                    9 => "SIGKILL",
                    11 => "SIGSEGV",
                    15 => "SIGTERM",
                    _ => "",
                };
                if name.is_empty() {
                    write!(f, "killed by signal {signal}")
                } else {
                    write!(f, "killed by {name}")
                }
            }
            ExitCause::Unknown(why) => write!(f, "exit status unknown: {why}"),
            ExitCause::CannotStart(why) => f.write_str(why),
            ExitCause::OutOfMemory { limit_mib } => write!(
                f,
                "out of memory: killed by the kernel over its {limit_mib} MiB limit"
            ),
        }
    }
}

/// What can go wrong starting an instance.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The app's process could not be started (its program is missing or
    /// not executable, say).
    #[error("cannot start `{command}`")]
    Spawn {
        /// The command.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Its sandbox could not be made (namespaces, mounts, its cgroup).
    #[error("cannot make the sandbox of `{command}` ({what})")]
    Sandbox {
        /// The command.
        command: String,
        /// The step that failed.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl DriverError {
    /// Whether the host was short of something (memory, processes,
    /// descriptors, disk) that a later try may find: only then does
    /// retrying soon help.
    pub fn is_transient(&self) -> bool {
        let (DriverError::Spawn { source, .. } | DriverError::Sandbox { source, .. }) = self;
        matches!(
            source.raw_os_error(),
            Some(
                libc::EAGAIN
                    | libc::ENOMEM
                    | libc::ENOSPC
                    | libc::EMFILE
                    | libc::ENFILE
                    | libc::EBUSY
                    | libc::EINTR
            )
        )
    }
}

/// A started instance: its pid, a way to signal it, and its exit.
#[derive(Debug, Clone)]
pub struct RunningInstance {
    /// Operating-system process id of the instance's main process.
    pub pid: u32,
    exit: watch::Receiver<Option<ExitCause>>,
    control: Arc<dyn InstanceControl>,
}

impl RunningInstance {
    /// Builds a handle (for drivers).
    pub fn new(
        pid: u32,
        exit: watch::Receiver<Option<ExitCause>>,
        control: Arc<dyn InstanceControl>,
    ) -> Self {
        RunningInstance { pid, exit, control }
    }

    /// What it uses now (CPU time, memory), when it is measured.
    pub fn usage(&self) -> Usage {
        self.control.usage()
    }

    /// Waits until it has exited and every line it wrote has gone to its
    /// output sink.
    pub async fn exited(&self) -> ExitCause {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(cause) => cause
                .clone()
                .unwrap_or_else(|| ExitCause::Unknown("no status".into())),
            Err(_) => ExitCause::Unknown("the driver stopped watching it".into()),
        }
    }

    /// Whether it has exited.
    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Stops it: its stop signal (SIGTERM by default), then SIGKILL after
    /// `grace`. Returns how it ended.
    pub async fn stop(&self, grace: Duration) -> ExitCause {
        if self.has_exited() {
            return self.exited().await;
        }
        self.control.terminate();
        match tokio::time::timeout(grace, self.exited()).await {
            Ok(cause) => cause,
            Err(_) => {
                self.control.kill();
                self.exited().await
            }
        }
    }

    /// Kills it at once.
    pub fn kill(&self) {
        self.control.kill();
    }
}

/// Signals an instance; implemented by each driver.
pub trait InstanceControl: Send + Sync + fmt::Debug {
    /// Asks it to stop (SIGTERM).
    fn terminate(&self);
    /// Stops it now (SIGKILL).
    fn kill(&self);
    /// What it uses, when it is measured (a cgroup of its own, as root).
    fn usage(&self) -> Usage {
        Usage::default()
    }
}

/// What an instance uses, from its cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// CPU time used since it started, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Memory it holds now, in bytes (page cache included).
    pub memory_bytes: Option<u64>,
}

/// A runtime driver.
pub trait Driver: Send + Sync {
    /// Starts an instance; output lines go to `output`. Must be called from a
    /// long-lived runtime thread (the process driver ties children's lives to it).
    fn start(
        &self,
        spec: &InstanceSpec,
        output: OutputSink,
    ) -> Result<RunningInstance, DriverError>;
}

/// Kills every process (and its process group) whose `BERTH_INSTANCE` is one
/// of `instance_ids`: what a crashed server left running, children included.
/// Returns how many processes matched.
pub fn kill_orphans(instance_ids: &std::collections::HashSet<String>) -> usize {
    isolation::kill_orphans(instance_ids)
}
