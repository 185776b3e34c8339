//! The command every instance's process starts from.

use std::ffi::OsString;

/// The command `argv` with exactly `env`, in `workdir` (or `/` for a
/// sandbox, which enters its working directory itself, last). std's
/// Command, not tokio's: tokio would reap the child itself, and the group
/// must be killed before the reap (see `spawner::wait_for_exit`).
pub(super) fn base_command(
    argv: &[OsString],
    env: &std::collections::BTreeMap<String, OsString>,
    workdir: &std::path::Path,
    sandboxed: bool,
) -> std::process::Command {
    let mut command = std::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .current_dir(if sandboxed {
            std::path::Path::new("/")
        } else {
            workdir
        })
        .env_clear()
        .envs(env);
    command
}
