//! Starting an instance on a terminal (see [`crate::terminal`]): its stdio
//! is the terminal, and it leads a session whose controlling terminal it
//! is, so Ctrl-C and window sizes reach it the usual way.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::process::Stdio;

use super::started::Started;
use crate::isolation;

/// [`super::start_forked`] with `terminal` as stdin, stdout and stderr.
/// Its output is the terminal's: the caller reads it from the master end,
/// so none comes through [`Started`].
pub(super) fn start_on_terminal(
    argv: &[OsString],
    env: &std::collections::BTreeMap<String, OsString>,
    workdir: &std::path::Path,
    sandbox: Option<isolation::PreparedSandbox>,
    terminal: &OwnedFd,
    join: Option<crate::cgroup::CgroupJoin>,
) -> std::io::Result<Started> {
    use std::os::unix::process::CommandExt;
    // In a pid namespace the app is a fork of the init, free to start a
    // session; the process forked here stays the leader of the group the
    // server signals. Without one, the app itself is that process: its
    // session is the group (a session leader leads its group too).
    let app_is_forked = sandbox
        .as_ref()
        .is_some_and(isolation::PreparedSandbox::uses_pid_namespace);
    let mut command = super::command::base_command(argv, env, workdir, sandbox.is_some());
    command
        .stdin(Stdio::from(terminal.try_clone()?))
        .stdout(Stdio::from(terminal.try_clone()?))
        .stderr(Stdio::from(terminal.try_clone()?));
    if app_is_forked {
        command.process_group(0);
    }
    // The hook makes only async-signal-safe system calls, with strings
    // and files prepared before the fork.
    #[allow(unsafe_code)]
    // SAFETY: see isolation::die_with_parent, PreparedSandbox::enter and
    // crate::terminal::take_terminal.
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
            crate::terminal::take_terminal()?;
            isolation::die_with_parent()?;
            Ok(())
        });
    }
    let child = command.spawn()?;
    let pid = child.id();
    // Reaped by wait_for_exit; std's Child reaps nothing when dropped.
    drop(child);
    Ok(Started {
        pid,
        stdout: Box::new(tokio::io::empty()),
        stderr: Box::new(tokio::io::empty()),
        exit: Box::pin(async move {
            crate::spawner::wait_for_exit(pid)
                .await
                .map_err(|err| crate::ExitCause::Unknown(err.to_string()))
        }),
    })
}
