//! The server's process: whether it runs, starting it detached, stopping
//! it gracefully, and systemd's part when systemd runs it.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_proto::ServerInfo;

/// The systemd unit's name.
pub(crate) const UNIT: &str = "berth.service";

/// The server the data dir names, if its process runs.
pub(crate) fn running(data: &Path) -> Option<ServerInfo> {
    let path = data.join("server.json");
    let text = std::fs::read(&path).ok()?;
    let info: ServerInfo = serde_json::from_slice(&text).ok()?;
    let written = std::fs::metadata(&path).ok()?.modified().ok()?;
    is_server(info.pid, written).then_some(info)
}

/// Whether `pid` is a `berth server` that has not exited (a zombie has)
/// and started before `written` (when it wrote server.json): a process
/// that got the pid of a server that died started after.
fn is_server(pid: u32, written: std::time::SystemTime) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z" | &"X") | None) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut argv = cmdline.split(|byte| *byte == 0);
    let berth = argv
        .next()
        .is_some_and(|program| String::from_utf8_lossy(program).contains("berth"));
    if !berth || argv.next() != Some(b"server".as_slice()) {
        return false;
    }
    let started = fields
        .get(19)
        .and_then(|ticks| ticks.parse::<u64>().ok())
        .zip(boot_time())
        .map(|(ticks, boot)| boot + Duration::from_millis(ticks * 10));
    started.is_none_or(|started| started <= written + Duration::from_secs(2))
}

/// When the machine booted (`btime` in /proc/stat).
fn boot_time() -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let seconds: u64 = stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(seconds))
}

/// Whether `pid` has not exited.
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| matches!(state, "Z" | "X"))
    })
}

/// How long process `pid` has run.
pub(crate) fn uptime(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Field 22 of the whole line: the start, in clock ticks after boot
    // (100 a second on Linux).
    let started: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let booted: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Duration::from_secs_f64((booted - started / 100.0).max(0.0)))
}

/// Whether systemd manages this machine's services.
pub(crate) fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Whether the systemd unit runs the server `pid` (its main process).
pub(crate) fn unit_runs(pid: u32) -> bool {
    if !systemd_runs() {
        return false;
    }
    std::process::Command::new("systemctl")
        .args(systemctl_scope())
        .args(["show", "--property", "MainPID", "--value", UNIT])
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == pid.to_string())
}

/// Runs `systemctl ARGS` for berth's unit's scope; an error when it fails.
pub(crate) fn systemctl(args: &[&str]) -> Result<()> {
    let status = std::process::Command::new("systemctl")
        .args(systemctl_scope())
        .args(args)
        .status()
        .context("cannot run systemctl")?;
    if !status.success() {
        bail!("systemctl {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// `--user` for a user's own unit; the system's for root.
fn systemctl_scope() -> Vec<&'static str> {
    if berth_runtime::can_isolate() {
        Vec::new()
    } else {
        vec!["--user"]
    }
}

pub(crate) async fn stop(data: &Path, timeout: Duration) -> Result<()> {
    let Some(info) = running(data) else {
        eprintln!(
            "==> no berth server is running for {} (nothing to stop)",
            data.display()
        );
        return Ok(());
    };
    if unit_runs(info.pid) {
        // systemd would start it again after a plain SIGTERM.
        systemctl(&["stop", UNIT])?;
    } else {
        berth_runtime::signal_process(info.pid, 15);
    }
    eprintln!(
        "==> stopping the berth server (pid {}): its instances get SIGTERM",
        info.pid
    );
    let deadline = Instant::now() + timeout;
    while alive(info.pid) {
        if Instant::now() >= deadline {
            bail!(
                "the server (pid {}) is still stopping after {}s; its log: {}",
                info.pid,
                timeout.as_secs(),
                data.join("server.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("==> stopped");
    Ok(())
}

/// Starts `binary ARGS` in a process group of its own, its output appended
/// to `DATA/server.log`, with `environment` instead of this process's
/// when given.
pub(crate) fn spawn_detached(
    binary: &Path,
    args: &[OsString],
    environment: Option<&[(OsString, OsString)]>,
    data: &Path,
) -> Result<u32> {
    std::fs::create_dir_all(data)
        .with_context(|| format!("cannot create the data dir {}", data.display()))?;
    let log_path = data.join("server.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(binary);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("cannot duplicate the log file")?)
        .stderr(log)
        .process_group(0);
    if let Some(environment) = environment {
        command.env_clear().envs(environment.iter().cloned());
    }
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    Ok(child.id())
}
