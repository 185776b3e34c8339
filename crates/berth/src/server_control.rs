//! `berth server status|stop|logs|install|uninstall`: the server of a data
//! dir as a service, whether `berth up` started it in the background, a
//! person in a terminal, or systemd.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_proto::ServerInfo;

use crate::cli::Global;
use crate::connect::{connect, data_dir};
use crate::server_args::ServerAction;

/// The systemd unit's name.
const UNIT: &str = "berth.service";

pub async fn run(global: &Global, action: ServerAction) -> Result<()> {
    let data = data_dir(global);
    match action {
        ServerAction::Status => status(global, &data).await,
        ServerAction::Stop { timeout } => stop(&data, timeout).await,
        ServerAction::Logs { follow, lines } => logs(&data, follow, lines).await,
        ServerAction::Install { print, flags } => install(&data, &flags, print),
        ServerAction::Uninstall => uninstall(),
    }
}

/// The server the data dir names, if its process runs.
fn running(data: &Path) -> Option<ServerInfo> {
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
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| matches!(state, "Z" | "X"))
    })
}

/// How long process `pid` has run.
fn uptime(pid: u32) -> Option<Duration> {
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

fn human(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {}s", seconds / 60, seconds % 60),
        3600..86400 => format!("{}h {}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d {}h", seconds / 86400, seconds % 86400 / 3600),
    }
}

/// Whether systemd manages this machine's services.
fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Whether the systemd unit runs the server `pid` (its main process).
fn unit_runs(pid: u32) -> bool {
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
fn systemctl(args: &[&str]) -> Result<()> {
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

async fn status(global: &Global, data: &Path) -> Result<()> {
    let Some(info) = running(data) else {
        if global.json {
            say!(
                "{}",
                serde_json::json!({"running": false, "data": data.display().to_string()})
            );
        } else {
            say!("berth server: stopped (data: {})", data.display());
            say!("  start it with `berth server`, `berth up` or `berth server install`");
        }
        return Ok(());
    };
    let client = connect(global, false).await.ok();
    let health = match &client {
        Some(client) => client.health().await.ok(),
        None => None,
    };
    let apps = match &client {
        Some(client) => client.apps().await.ok(),
        None => None,
    };
    let up = uptime(info.pid).unwrap_or_default();
    let manager = if unit_runs(info.pid) {
        format!("systemd ({UNIT})")
    } else {
        "a process of its own (berth server, or berth up in the background)".into()
    };
    if global.json {
        let running: u32 = apps.iter().flatten().map(|app| app.running).sum();
        say!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "running": true,
                "pid": info.pid,
                "version": health.as_ref().map(|health| health.version.clone()),
                "uptime_seconds": up.as_secs(),
                "api_url": info.api_url,
                "router_url": info.router_url,
                "https_url": info.https_url,
                "data": data.display().to_string(),
                "apps": apps.as_ref().map(Vec::len),
                "instances_running": running,
                "managed_by": manager,
            }))?
        );
        return Ok(());
    }
    let version = health
        .map(|health| health.version)
        .unwrap_or_else(|| "not answering".into());
    say!(
        "berth server: running (pid {}, version {version}, up {})",
        info.pid,
        human(up)
    );
    say!("  api:      {}", info.api_url);
    say!("  router:   {}", info.router_url);
    if let Some(https) = &info.https_url {
        say!("  https:    {https}");
    }
    say!("  data:     {}", data.display());
    if let Some(apps) = &apps {
        let running: u32 = apps.iter().map(|app| app.running).sum();
        say!("  apps:     {} ({running} instances running)", apps.len());
    }
    say!("  run by:   {manager}");
    Ok(())
}

async fn stop(data: &Path, timeout: Duration) -> Result<()> {
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

async fn logs(data: &Path, follow: bool, lines: usize) -> Result<()> {
    let path = data.join("server.log");
    let mut file = std::fs::File::open(&path).with_context(|| {
        format!(
            "no server log at {} (a server started in a terminal writes to it instead)",
            path.display()
        )
    })?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let all: Vec<&str> = text.lines().collect();
    let mut out = std::io::stdout().lock();
    for line in &all[all.len().saturating_sub(lines)..] {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    drop(out);
    if !follow {
        return Ok(());
    }
    let mut offset = file.stream_position()?;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let length = std::fs::metadata(&path)?.len();
        if length < offset {
            // Truncated or replaced: start from its beginning.
            file = std::fs::File::open(&path)?;
            offset = 0;
        }
        file.seek(SeekFrom::Start(offset))?;
        let mut fresh = Vec::new();
        file.read_to_end(&mut fresh)?;
        offset += fresh.len() as u64;
        std::io::stdout().write_all(&fresh)?;
        std::io::stdout().flush()?;
    }
}

/// Where the unit goes: the system's for root, the user's otherwise.
fn unit_path() -> Result<PathBuf> {
    if berth_runtime::can_isolate() {
        return Ok(PathBuf::from("/etc/systemd/system").join(UNIT));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".config/systemd/user").join(UNIT))
}

/// The server's own variables, written into the unit when set now.
const SERVER_ENV: &[&str] = &[
    "BERTH_API_ADDR",
    "BERTH_ROUTER_ADDR",
    "BERTH_HTTPS_ADDR",
    "BERTH_PUBLIC",
    "BERTH_ACME_DIRECTORY",
    "BERTH_ACME_EMAIL",
    "BERTH_ACME_CA_ROOT",
    "BERTH_BUILD_CACHE",
    "BERTH_DOMAIN",
    "BERTH_NO_ISOLATION",
    "BERTH_EGRESS",
    "BERTH_RESOLV_CONF",
    "BERTH_SPAWNER",
    "BERTH_STANDBY",
    "BERTH_POSTGRES_BIN",
    "BERTH_REDIS_SERVER",
];

/// The environment the unit gives the server: the toolchain's (builds
/// run `cargo`, which a service's bare PATH would not find) and the
/// server's own variables set now.
fn unit_environment() -> Vec<(String, String)> {
    let toolchain = ["PATH", "HOME", "CARGO_HOME", "RUSTUP_HOME"];
    toolchain
        .iter()
        .chain(SERVER_ENV)
        .filter_map(|name| {
            let value = std::env::var(name).ok().filter(|value| !value.is_empty())?;
            Some((name.to_string(), value))
        })
        .collect()
}

/// The flags, checked: ones `berth server` takes, no subcommand, nothing a
/// unit file cannot hold. (`--data` is the CLI's own flag wherever it is
/// written, so it never reaches these.)
fn checked_flags(flags: &[String]) -> Result<()> {
    if flags.iter().any(|flag| flag.chars().any(char::is_control)) {
        bail!("a flag holds a control character, which a unit file cannot");
    }
    let mut argv = vec!["berth".to_string(), "server".to_string()];
    argv.extend(flags.iter().cloned());
    match <crate::cli::Cli as clap::Parser>::try_parse_from(&argv) {
        Err(err) => bail!("not flags `berth server` takes:\n{err}"),
        Ok(cli) => match cli.command {
            crate::cli::Command::Server(args) if args.action.is_none() => Ok(()),
            _ => bail!("`berth server install` takes the flags of `berth server`, not a command"),
        },
    }
}

fn install(data: &Path, flags: &[String], print: bool) -> Result<()> {
    checked_flags(flags)?;
    let data = std::path::absolute(data)
        .with_context(|| format!("cannot make {} absolute", data.display()))?;
    if data.display().to_string().chars().any(char::is_whitespace) {
        bail!(
            "the data dir {} has a space in its path, which systemd's log setting cannot hold; choose another with --data",
            data.display()
        );
    }
    let installed = PathBuf::from("/usr/local/bin/berth");
    let exe = std::env::current_exe().context("cannot find the berth binary")?;
    let binary = if berth_runtime::can_isolate() && !print {
        &installed
    } else {
        &exe
    };
    let unit = crate::server_unit::render(
        binary,
        &data,
        flags,
        &unit_environment(),
        berth_runtime::can_isolate(),
    );
    if print {
        print!("{unit}");
        return Ok(());
    }
    if !systemd_runs() {
        print!("{unit}");
        bail!(
            "systemd is not running on this machine (no /run/systemd/system): nothing was installed. \
             The unit above is what it would install; run `berth server` under this machine's own service manager instead"
        );
    }
    if binary == &installed && exe != installed {
        // Beside it, then renamed over it: a running binary cannot be
        // written to, but it can be replaced.
        let fresh = installed.with_file_name(".berth.new");
        std::fs::copy(&exe, &fresh)
            .and_then(|_| std::fs::rename(&fresh, &installed))
            .with_context(|| format!("cannot install berth at {}", installed.display()))?;
    }
    let path = unit_path()?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&path, &unit).with_context(|| format!("cannot write {}", path.display()))?;
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", "--now", UNIT])?;
    systemctl(&["restart", UNIT])?;
    eprintln!(
        "==> installed {} and started it: berth now runs at boot and is restarted if it stops",
        path.display()
    );
    Ok(())
}

fn uninstall() -> Result<()> {
    let path = unit_path()?;
    if !path.exists() {
        eprintln!("==> no berth unit at {}: nothing to remove", path.display());
        return Ok(());
    }
    if systemd_runs() {
        systemctl(&["disable", "--now", UNIT])?;
    }
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    if systemd_runs() {
        systemctl(&["daemon-reload"])?;
    }
    eprintln!(
        "==> removed {}; the data dir and its apps stay",
        path.display()
    );
    Ok(())
}
