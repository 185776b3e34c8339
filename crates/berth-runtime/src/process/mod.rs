//! The process driver: each instance is a child process group.

use std::ffi::OsString;
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

use crate::isolation;
use crate::{
    Driver, DriverError, ExitCause, InstanceControl, InstanceSpec, OutputSink, OutputStream,
    RunningInstance,
};
use on_terminal::start_on_terminal;
use started::Started;

/// The most of one line kept; the rest of a longer line is dropped. A
/// little over the log store's own cut (64 KiB), which masks secrets first
/// and then cuts: a secret near the cut is never kept in part.
pub(crate) const MAX_LINE_BYTES: usize = 68 * 1024;
/// Where an instance finds the system's programs, after its own.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long an exit waits for output still in the pipes, when a process
/// that escaped the instance's group holds them open.
const OUTPUT_AFTER_EXIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs instances as child processes: plain ones, or (as root) each in a
/// cgroup, namespaces and user of its own.
#[derive(Debug, Default, Clone)]
pub struct ProcessDriver {
    cgroups: Option<crate::cgroup::Cgroups>,
}

impl ProcessDriver {
    /// A driver that uses cgroups when it can (root, a cgroup hierarchy).
    pub fn detect() -> ProcessDriver {
        let cgroups = crate::cgroup::Cgroups::detect();
        if let Some(cgroups) = &cgroups {
            // The spawner's standbys wait in cgroups of their own.
            crate::spawner::use_cgroups(cgroups);
        }
        ProcessDriver { cgroups }
    }

    /// A driver without cgroups: limits are not enforced.
    pub fn plain() -> ProcessDriver {
        ProcessDriver { cgroups: None }
    }

    /// What it can enforce, for the server's start-up line.
    pub fn describe(&self) -> String {
        match (&self.cgroups, crate::can_isolate()) {
            (Some(cgroups), true) => format!(
                "instances run isolated: own user, mount and IPC namespaces, private /tmp, limits by {}",
                cgroups.describe()
            ),
            (None, true) => "instances run in their own user and namespaces; no cgroup hierarchy found, so sizes are not enforced".into(),
            (None, false) | (Some(_), false) => "not running as root: instances are plain processes of this user on $PORT; sizes, users and namespaces are not enforced".into(),
        }
    }
}

#[derive(Debug)]
struct ProcessGroup {
    pid: u32,
    stop_signal: i32,
    /// The session of a command run on a terminal, which leads a process
    /// group of its own (see [`crate::terminal`]).
    terminal_session: Option<crate::terminal::TerminalSession>,
    /// Its cgroup, when it has one: what it uses.
    cgroup: Option<Arc<crate::cgroup::InstanceCgroup>>,
}

impl InstanceControl for ProcessGroup {
    fn terminate(&self) {
        isolation::signal_group(self.pid, self.stop_signal);
        if let Some(session) = &self.terminal_session {
            session.signal(self.stop_signal, self.pid);
        }
    }

    fn usage(&self) -> crate::Usage {
        self.cgroup
            .as_ref()
            .map(|cgroup| cgroup.usage())
            .unwrap_or_default()
    }

    fn kill(&self) {
        if let Some(session) = &self.terminal_session {
            session.signal(libc::SIGKILL, self.pid);
        }
        isolation::signal_group(self.pid, libc::SIGKILL);
    }
}

impl Driver for ProcessDriver {
    fn start(
        &self,
        spec: &InstanceSpec,
        output: OutputSink,
    ) -> Result<RunningInstance, DriverError> {
        // The release's binaries, then the system's: never the server's own
        // PATH (a root shell's may name directories an app has no business in).
        let root = isolation::is_root();
        if !root
            && spec
                .sandbox
                .as_ref()
                .is_some_and(|sandbox| sandbox.root.is_some())
        {
            // Never the image's command on the host's root instead.
            return Err(DriverError::Sandbox {
                command: spec.command.clone(),
                what: "entering its image's root".into(),
                source: std::io::Error::other("a root of its own needs berth running as root"),
            });
        }
        let sandbox_spec = spec.sandbox.as_ref().filter(|_| root);
        let own_root = sandbox_spec.and_then(|sandbox| sandbox.root.as_deref());
        let mut argv = command_line(&spec.command);
        let path = match own_root {
            // An image's own PATH, or the usual one: its files, not the host's.
            Some(image_root) => {
                // The last PATH wins, as in the instance's env.
                let path = spec
                    .env
                    .iter()
                    .rev()
                    .find(|(key, _)| key == "PATH")
                    .map_or(SYSTEM_PATH.to_string(), |(_, value)| value.clone());
                argv[0] = crate::spawner::resolve_in_root(
                    image_root,
                    &argv[0].to_string_lossy(),
                    &path,
                    &spec.workdir,
                )
                .into_os_string();
                path
            }
            None => format!("{}:{SYSTEM_PATH}", spec.bin_dir.display()),
        };
        let env = instance_env(spec, &path, sandbox_spec.is_some());
        let prepare_error = |what: &str, source: std::io::Error| DriverError::Sandbox {
            command: spec.command.clone(),
            what: what.to_string(),
            source,
        };
        let sandbox = if root && (!spec.binds.is_empty() || sandbox_spec.is_some()) {
            Some(
                isolation::PreparedSandbox::prepare(&spec.workdir, &spec.binds, sandbox_spec)
                    .map_err(|err| prepare_error("preparing its sandbox", err))?,
            )
        } else {
            None
        };
        let limits = sandbox_spec
            .and_then(|sandbox| sandbox.limits)
            .zip(self.cgroups.as_ref());
        // A terminal is set up by a fork of the server's own: the
        // spawner's protocol carries plain stdio only.
        let terminal = spec.terminal.as_deref().map(|terminal| &terminal.other_end);
        let terminal_session = spec
            .terminal
            .as_deref()
            .map(crate::InstanceTerminal::session)
            .transpose()
            .map_err(|err| prepare_error("finding its terminal", err))?;
        let through_spawner = sandbox.is_some()
            && sandbox_spec.is_some()
            && terminal.is_none()
            && crate::spawner::available();
        // A standby, when it is in a cgroup exactly if this instance needs one.
        // Not for an instance that writes to a mount point (a sized
        // volume): a standby's mount namespace is a copy made when it was,
        // and a volume mounted on the host after that is not in it — the
        // instance would write into the empty folder underneath. Writable
        // binds only: that is where a stale view loses data, and read-only
        // ones of mounts (package roots) would cost every start its standby.
        let binds_a_mount = spec
            .binds
            .iter()
            .any(|bind| bind.writable && is_mount_point(&bind.source));
        let standby = sandbox
            .as_ref()
            .filter(|prepared| through_spawner && prepared.fits_standby() && !binds_a_mount)
            .and_then(|_| crate::spawner::take_standby(limits.is_some()));
        // The server's pid keeps two servers' instances (a release command
        // is `release-vN` in each) apart.
        let cgroup_name = format!("{}-{}-{}", spec.app, spec.id, std::process::id());
        let make_cgroup = |standby: Option<&crate::spawner::Standby>| {
            limits
                .map(|(limits, cgroups)| match standby.and_then(|s| s.cgroup()) {
                    Some(ready) => cgroups.adopt(ready, &cgroup_name, limits),
                    None => cgroups.create(&cgroup_name, limits),
                })
                .transpose()
                .map_err(|err| prepare_error("making its cgroup", err))
        };
        let mut cgroup = make_cgroup(standby.as_ref())?;
        // The standby's process is in its cgroup already; others join after.
        let mut joined = standby.is_some();
        let started = match &sandbox {
            Some(prepared) if through_spawner => {
                let spawn = |standby| {
                    start_through_spawner(
                        argv.clone(),
                        &env,
                        // An image's program was found in its root above;
                        // the host's PATH must not find another.
                        if own_root.is_some() { "" } else { &path },
                        &spec.workdir,
                        prepared,
                        standby,
                    )
                };
                match spawn(standby) {
                    // Killed while it waited: without one, in a new cgroup.
                    Err(err) if crate::spawner::is_dead_standby(&err) => {
                        // Its cgroup goes first: the new one has the same name.
                        drop(cgroup.take());
                        cgroup = make_cgroup(None)?;
                        joined = false;
                        spawn(None)
                    }
                    // It died under us: this start, and later ones, fork.
                    Err(_) if !crate::spawner::available() => {
                        let join = cgroup.as_ref().map(crate::cgroup::InstanceCgroup::joiner);
                        joined = join.is_some();
                        start_forked(&argv, &env, &spec.workdir, sandbox, None, join)
                    }
                    started => started,
                }
            }
            // Forked here, the child joins its cgroup before it execs: a
            // process it forks at once is never outside the limits.
            _ => {
                let join = cgroup.as_ref().map(crate::cgroup::InstanceCgroup::joiner);
                joined = join.is_some();
                start_forked(&argv, &env, &spec.workdir, sandbox, terminal, join)
            }
        };
        let Started {
            pid,
            stdout,
            stderr,
            exit: status,
        } = started.map_err(|source| DriverError::Spawn {
            command: spec.command.clone(),
            source,
        })?;
        let cgroup = cgroup.map(Arc::new);
        let measured = cgroup.clone();
        if let Some(cgroup) = cgroup.as_ref().filter(|_| !joined) {
            let cgroup = cgroup.clone();
            let id = spec.id.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(err) = cgroup.attach(pid) {
                    // Without its cgroup it must not run: no limits.
                    tracing::error!(instance = %id, error = %err, "could not join its cgroup; stopping it");
                    isolation::signal_group(pid, libc::SIGKILL);
                }
            });
        }
        let forwarders = [
            tokio::spawn(forward_lines(stdout, OutputStream::Stdout, output.clone())),
            tokio::spawn(forward_lines(stderr, OutputStream::Stderr, output)),
        ];
        let (exit_sender, exit) = watch::channel(None);
        let limit_mib = sandbox_spec
            .and_then(|sandbox| sandbox.limits)
            .map(|limits| limits.memory_bytes / (1024 * 1024));
        tokio::spawn(async move {
            let mut cause = match status.await {
                Ok(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    match (status.code(), status.signal()) {
                        (Some(code), _) => ExitCause::Code(code),
                        (None, Some(signal)) => ExitCause::Signal(signal),
                        (None, None) => ExitCause::Unknown(status.to_string()),
                    }
                }
                Err(cause) => cause,
            };
            // What the main process left behind in its group was killed
            // before it was reaped (see spawner::wait_for_exit).
            if let Some(cgroup) = cgroup {
                cgroup.kill_all();
                if cgroup.oom_kills() > 0 {
                    cause = ExitCause::OutOfMemory {
                        limit_mib: limit_mib.unwrap_or(0),
                    };
                }
                let _ = tokio::task::spawn_blocking(move || cgroup.remove()).await;
            }
            // Its exit is reported after its last line: with the group and
            // cgroup killed, the pipes close. A process that left both (no
            // sandbox) and holds them open gets a bounded wait.
            for forwarder in forwarders {
                let _ = tokio::time::timeout(OUTPUT_AFTER_EXIT, forwarder).await;
            }
            let _ = exit_sender.send(Some(cause));
        });
        Ok(RunningInstance::new(
            pid,
            exit,
            Arc::new(ProcessGroup {
                pid,
                stop_signal: spec.stop_signal,
                terminal_session,
                cgroup: measured,
            }),
        ))
    }
}

/// A plain `program arg…` is executed directly: no shell to start (it
/// costs about a millisecond, which a cold start notices), and so is the
/// exec form `["program", "arg"]`; anything else runs under `/bin/sh -c`.
fn command_line(command: &str) -> Vec<OsString> {
    // Exec form, as a Dockerfile writes it: `["/app", "--flag", "a b"]`,
    // run as those words (an image may have no shell).
    if command.trim_start().starts_with('[')
        && let Ok(words) = serde_json::from_str::<Vec<String>>(command)
        && !words.is_empty()
    {
        return words.into_iter().map(OsString::from).collect();
    }
    match plain_words(command) {
        Some(words) => words.iter().map(OsString::from).collect(),
        None => vec!["/bin/sh".into(), "-c".into(), shell_line(command).into()],
    }
}

/// The whole env of an instance: `PATH` (its slug's bin first), `HOME`
/// (its slug, or `/tmp` in a sandbox), `LANG`, the spec's env (which may override them), and `TMPDIR` when it
/// has a private `/tmp`.
fn instance_env(
    spec: &InstanceSpec,
    path: &str,
    private_tmp: bool,
) -> std::collections::BTreeMap<String, OsString> {
    let mut env = std::collections::BTreeMap::new();
    env.insert("PATH".to_string(), OsString::from(path));
    // A sandboxed instance's working directory (its slug) is read-only:
    // its home is its own scratch space, lost when it stops.
    let home = if private_tmp {
        std::path::PathBuf::from("/tmp")
    } else {
        spec.workdir.clone()
    };
    env.insert("HOME".to_string(), home.into_os_string());
    env.insert("LANG".to_string(), OsString::from("C.UTF-8"));
    for (key, value) in &spec.env {
        env.insert(key.clone(), OsString::from(value));
    }
    if private_tmp {
        env.insert("TMPDIR".to_string(), OsString::from("/tmp"));
    }
    env
}

/// Forks the caller to run `argv` with exactly `env` in `workdir`
/// (entering `sandbox` first, if any), on `terminal` if one is given.
/// Whether `path` is where a file system is mounted (its device is not
/// its parent's).
fn is_mount_point(path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) {
        (Ok(own), Some(Ok(parent))) => own.dev() != parent.dev(),
        _ => false,
    }
}

fn start_forked(
    argv: &[OsString],
    env: &std::collections::BTreeMap<String, OsString>,
    workdir: &std::path::Path,
    sandbox: Option<isolation::PreparedSandbox>,
    terminal: Option<&std::os::fd::OwnedFd>,
    join: Option<crate::cgroup::CgroupJoin>,
) -> std::io::Result<Started> {
    if let Some(terminal) = terminal {
        return start_on_terminal(argv, env, workdir, sandbox, terminal, join);
    }
    use std::os::unix::process::CommandExt;
    let mut command = command::base_command(argv, env, workdir, sandbox.is_some());
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // The hook makes only async-signal-safe system calls, with strings
    // and files prepared before the fork.
    #[allow(unsafe_code)]
    // SAFETY: see isolation::die_with_parent and PreparedSandbox::enter.
    unsafe {
        command.pre_exec(move || {
            // First, as root: the cgroup's files are root's.
            if let Some(join) = &join {
                join.join()?;
            }
            if let Some(sandbox) = &sandbox {
                sandbox.enter()?;
            } else {
                isolation::set_umask(0o022);
            }
            // After the user change, which would clear it.
            isolation::die_with_parent()?;
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let pid = child.id();
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(std::io::Error::other(
            "the child's output pipes are missing",
        ));
    };
    let stdout = tokio::process::ChildStdout::from_std(stdout)?;
    let stderr = tokio::process::ChildStderr::from_std(stderr)?;
    // Reaped by wait_for_exit; std's Child reaps nothing when dropped.
    drop(child);
    Ok(Started {
        pid,
        stdout: Box::new(stdout),
        stderr: Box::new(stderr),
        exit: Box::pin(async move {
            crate::spawner::wait_for_exit(pid)
                .await
                .map_err(|err| ExitCause::Unknown(err.to_string()))
        }),
    })
}

/// Runs `argv` with `env` in `workdir` and `sandbox` through the spawner
/// (see [`crate::spawner`]), or as `standby`, as [`start_forked`] would.
fn start_through_spawner(
    argv: Vec<OsString>,
    env: &std::collections::BTreeMap<String, OsString>,
    path: &str,
    workdir: &std::path::Path,
    sandbox: &isolation::PreparedSandbox,
    standby: Option<crate::spawner::Standby>,
) -> std::io::Result<Started> {
    let argv_text = argv
        .iter()
        .map(|arg| arg.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    // The spawner searches no PATH: find the program as the exec would.
    let program = crate::spawner::resolve(&argv[0].to_string_lossy(), path, workdir);
    let stdin = std::fs::File::open("/dev/null")?;
    let (stdout_read, stdout_write) = std::io::pipe()?;
    let (stderr_read, stderr_write) = std::io::pipe()?;
    use std::os::fd::AsRawFd;
    let spawned = crate::spawner::spawn(
        &crate::spawner::Request {
            program: &program,
            args: argv,
            env: env
                .iter()
                .map(|(key, value)| crate::spawner::env_entry(key, value))
                .collect(),
            workdir,
            sandbox,
            stdio: [
                stdin.as_raw_fd(),
                stdout_write.as_raw_fd(),
                stderr_write.as_raw_fd(),
            ],
        },
        standby,
    )?;
    drop((stdin, stdout_write, stderr_write));
    let stdout = tokio::net::unix::pipe::Receiver::from_owned_fd(stdout_read.into())?;
    let stderr = tokio::net::unix::pipe::Receiver::from_owned_fd(stderr_read.into())?;
    let crate::spawner::Spawned { pid, exec } = spawned;
    let command = argv_text;
    Ok(Started {
        pid,
        stdout: Box::new(stdout),
        stderr: Box::new(stderr),
        exit: Box::pin(async move {
            let failure = exec.failure().await;
            let status = crate::spawner::wait_for_exit(pid).await;
            match failure {
                Some(err) => Err(ExitCause::CannotStart(format!(
                    "cannot start `{command}`: {err}"
                ))),
                None => status.map_err(|err| ExitCause::Unknown(err.to_string())),
            }
        }),
    })
}

/// The words of a command that needs no shell: only letters, digits,
/// spaces and `_ . / : = , @ % + -` (no quotes, variables, globs,
/// redirections or operators).
fn plain_words(command: &str) -> Option<Vec<&str>> {
    let plain = command
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || "_./:=,@%+-".contains(c));
    let words: Vec<&str> = command.split_whitespace().collect();
    (plain && !words.is_empty() && !words[0].contains('=')).then_some(words)
}

/// A simple command is `exec`ed so that signals reach the app, not a shell;
/// a compound one (`a && b`, `x; y`) runs in the shell as written. What is
/// quoted does not count: `sh -c 'a; b'` is one simple command.
fn shell_line(command: &str) -> String {
    if is_compound(command) || command.trim_start().starts_with("exec ") {
        command.to_string()
    } else {
        format!("exec {command}")
    }
}

/// Whether `command` has an operator (`;` `&` `|` a newline, a subshell or
/// a command substitution) outside quotes.
fn is_compound(command: &str) -> bool {
    let mut quote = None;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None | Some('"'), '\\') => {
                chars.next();
            }
            (None, '\'' | '"') => quote = Some(c),
            (Some(open), c) if c == open => quote = None,
            // `$(…)` and backquotes run a command even inside double quotes.
            (None | Some('"'), '`') => return true,
            (None | Some('"'), '$') if chars.clone().next() == Some('(') => return true,
            (None, ';' | '&' | '|' | '\n' | '(' | ')') => return true,
            _ => {}
        }
    }
    false
}

async fn forward_lines(stream: impl AsyncRead + Unpin, which: OutputStream, output: OutputSink) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(256);
    let emit = |line: &mut Vec<u8>| {
        while line.last().is_some_and(|byte| *byte == b'\r') {
            line.pop();
        }
        output(which, String::from_utf8_lossy(line).into_owned());
        line.clear();
    };
    while let Ok(available) = reader.fill_buf().await {
        // Whoever stores the lines is behind: wait, so the pipe fills and
        // the app waits too, rather than lines being lost.
        while crate::output_backlogged() {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        if available.is_empty() {
            if !line.is_empty() {
                emit(&mut line);
            }
            break;
        }
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        match available.iter().position(|byte| *byte == b'\n') {
            Some(end) => {
                line.extend_from_slice(&available[..end.min(room)]);
                reader.consume(end + 1);
                emit(&mut line);
            }
            None => {
                let taken = available.len();
                line.extend_from_slice(&available[..taken.min(room)]);
                reader.consume(taken);
            }
        }
    }
}

mod command;
mod on_terminal;
#[cfg(test)]
mod root_tests;
mod started;
#[cfg(test)]
mod tests;
