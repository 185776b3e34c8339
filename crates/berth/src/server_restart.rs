//! Starting a server that outlives the command that starts it, and
//! `berth server upgrade`: the binary replaced, the server restarted with
//! the same arguments and environment, every app coming back the way it
//! does after any restart.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::server_process;

/// Variables and their values.
type Environment = Vec<(OsString, OsString)>;

/// The arguments (without the program) and environment of process `pid`.
fn command_line(pid: u32) -> Result<(Vec<OsString>, Environment)> {
    let split = |bytes: Vec<u8>| -> Vec<OsString> {
        bytes
            .split(|byte| *byte == 0)
            .filter(|part| !part.is_empty())
            .map(|part| OsString::from_vec(part.to_vec()))
            .collect()
    };
    let argv = std::fs::read(format!("/proc/{pid}/cmdline"))
        .with_context(|| format!("cannot read the server's command line (pid {pid})"))?;
    let environ = std::fs::read(format!("/proc/{pid}/environ"))
        .with_context(|| format!("cannot read the server's environment (pid {pid})"))?;
    let args = split(argv).into_iter().skip(1).collect();
    let environment = split(environ)
        .into_iter()
        .filter_map(|pair| {
            let bytes = pair.into_vec();
            let at = bytes.iter().position(|byte| *byte == b'=')?;
            Some((
                OsString::from_vec(bytes[..at].to_vec()),
                OsString::from_vec(bytes[at + 1..].to_vec()),
            ))
        })
        .collect();
    Ok((args, environment))
}

/// The binary process `pid` runs (as it was named when started).
fn running_binary(pid: u32) -> Option<PathBuf> {
    let target = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let text = target.to_string_lossy();
    Some(PathBuf::from(
        text.strip_suffix(" (deleted)").unwrap_or(&text).to_string(),
    ))
}

/// Puts this binary at `target` (beside it, then renamed over it: a
/// running binary cannot be written to, but it can be replaced).
pub fn install_binary(target: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the berth binary")?;
    if exe == target {
        return Ok(());
    }
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let fresh = target.with_file_name(".berth.new");
    std::fs::copy(&exe, &fresh)
        .and_then(|_| std::fs::rename(&fresh, target))
        .with_context(|| format!("cannot install berth at {}", target.display()))
}

/// `berth server upgrade` on the server's own machine: this binary goes
/// where the running server's is (or `binary`), and the server restarts
/// on it with the arguments and environment it had.
pub async fn upgrade(data: &Path, binary: Option<PathBuf>, timeout: Duration) -> Result<()> {
    let Some(info) = server_process::running(data) else {
        let target = binary.unwrap_or_else(|| PathBuf::from("/usr/local/bin/berth"));
        install_binary(&target)?;
        eprintln!(
            "==> no berth server runs for {}: installed {} (version {}), nothing to restart",
            data.display(),
            target.display(),
            env!("CARGO_PKG_VERSION")
        );
        return Ok(());
    };
    let before = match crate::connect::local_client(None, data).await {
        Some(client) => client.health().await.ok().map(|health| health.version),
        None => None,
    };
    let target = binary
        .or_else(|| running_binary(info.pid))
        .context("cannot tell which binary the server runs: pass --binary PATH")?;
    let (args, environment) = command_line(info.pid)?;
    install_binary(&target)?;
    if server_process::unit_runs(info.pid) {
        server_process::systemctl(&["restart", server_process::UNIT])?;
    } else {
        // The binary is already replaced: whatever happens, a server must
        // start on it. One that does not stop in time is killed.
        if let Err(err) = server_process::stop(data, timeout).await {
            eprintln!("warning: {err}; killing it");
            berth_runtime::signal_process(info.pid, 9);
            while server_process::alive(info.pid) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        server_process::spawn_detached(&target, &args, Some(&environment), data)?;
    }
    // The old server's server.json goes when it exits; the new one writes
    // its own once it listens.
    let client = crate::connect::wait_until_answering(data, Duration::from_secs(60)).await?;
    let after = client.health().await?.version;
    eprintln!(
        "==> upgraded the berth server: {} -> {after}; its apps come back as after any restart",
        before.as_deref().unwrap_or("unknown")
    );
    Ok(())
}
