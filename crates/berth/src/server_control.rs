//! `berth server status|stop|logs|install|uninstall`: the server of a data
//! dir as a service, whether `berth up` started it in the background, a
//! person in a terminal, or systemd.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cli::Global;
use crate::connect::{data_dir, local_client};
use crate::server_args::{InstallArgs, ServerAction};
use crate::server_process::{UNIT, running, systemctl, systemd_runs, unit_runs, uptime};

pub async fn run(global: &Global, action: ServerAction) -> Result<()> {
    let data = data_dir(global);
    match action {
        ServerAction::Status => status(global, &data).await,
        ServerAction::Stop { timeout } => crate::server_process::stop(&data, timeout).await,
        ServerAction::Logs { follow, lines } => logs(&data, follow, lines).await,
        ServerAction::Install(install_args) => match install_args.ssh_target() {
            Some(target) => crate::remote::install(global, &target, &install_args).await,
            None => install(&data, &install_args).await,
        },
        ServerAction::Uninstall => uninstall(),
        ServerAction::Upgrade { binary, timeout } => {
            // `--binary` names a path on this machine: the upgrade is local
            // (as it is when berth runs it over SSH on a remote host).
            let context = global.context.clone().or_else(crate::contexts::current);
            match context {
                Some(name) if global.server.is_none() && binary.is_none() => {
                    crate::remote::upgrade(&name, timeout).await
                }
                _ => crate::server_restart::upgrade(&data, binary, timeout).await,
            }
        }
    }
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
    let client = local_client(global.token.as_deref(), data).await;
    let health = match &client {
        Some(client) => client.health().await.ok(),
        None => None,
    };
    let apps = match &client {
        Some(client) => client.apps().await.ok(),
        None => None,
    };
    let tunnel = match &client {
        Some(client) => client.tunnel().await.ok().flatten(),
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
                "tunnel": tunnel,
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
    if let Some(tunnel) = &tunnel {
        say!("  tunnel:   {}", crate::output::tunnel_line(tunnel));
    }
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
    "BERTH_TUNNEL",
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
/// run `cargo`, which a service's bare PATH would not find: `~/.cargo/bin`
/// joins it when cargo is there but not on it) and the server's own
/// variables set now.
fn unit_environment() -> Vec<(String, String)> {
    let toolchain = ["PATH", "HOME", "CARGO_HOME", "RUSTUP_HOME"];
    let mut environment: Vec<(String, String)> = toolchain
        .iter()
        .chain(SERVER_ENV)
        .filter_map(|name| {
            let value = std::env::var(name).ok().filter(|value| !value.is_empty())?;
            Some((name.to_string(), value))
        })
        .collect();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    if let Some(bin) = cargo_home.map(|home| home.join("bin"))
        && bin.join("cargo").is_file()
    {
        let path = std::env::var("PATH").unwrap_or_default();
        let on_path = std::env::split_paths(&path).any(|dir| dir.join("cargo").is_file());
        if !on_path {
            let joined = format!("{}:{path}", bin.display());
            environment.retain(|(name, _)| name != "PATH");
            environment.push(("PATH".into(), joined.trim_end_matches(':').to_string()));
        }
    }
    environment
}

async fn install(data: &Path, install: &InstallArgs) -> Result<()> {
    crate::cli::parse_server_flags(&install.flags)?;
    let data = std::path::absolute(data)
        .with_context(|| format!("cannot make {} absolute", data.display()))?;
    let flags = &token_to_file(&install.flags, &data, install.print)?;
    if data.display().to_string().chars().any(char::is_whitespace) {
        bail!(
            "the data dir {} has a space in its path, which systemd's log setting cannot hold; choose another with --data",
            data.display()
        );
    }
    let exe = std::env::current_exe().context("cannot find the berth binary")?;
    let installed = install
        .binary
        .clone()
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/berth"));
    let binary = if (berth_runtime::can_isolate() || install.binary.is_some()) && !install.print {
        &installed
    } else {
        &exe
    };
    let environment = unit_environment();
    let unit = crate::server_unit::render(
        binary,
        &data,
        flags,
        &environment,
        berth_runtime::can_isolate(),
    );
    if install.print {
        print!("{unit}");
        return Ok(());
    }
    if !systemd_runs() && !install.no_systemd {
        print!("{unit}");
        bail!(
            "systemd is not running on this machine (no /run/systemd/system): nothing was installed. \
             The unit above is what it would install; run `berth server` under this machine's own service manager, \
             or pass --no-systemd to start it in the background now (not restarted at boot)"
        );
    }
    crate::server_restart::install_binary(binary)?;
    if install.no_systemd {
        return start_without_systemd(&data, binary, flags, &environment, &unit).await;
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
    crate::connect::wait_until_answering(&data, Duration::from_secs(60)).await?;
    eprintln!(
        "==> installed {} and started it: berth now runs at boot and is restarted if it stops",
        path.display()
    );
    Ok(())
}

/// The flags with a tunnel token (`--tunnel-token T`, `BERTH_TUNNEL_TOKEN`,
/// or `--tunnel-token-file -`: a line on standard input, as `berth server
/// install ssh://…` sends it) moved into `DATA/tunnel-token` (0600) and
/// named by `--tunnel-token-file`: a unit file and a command line are
/// readable by every user.
fn token_to_file(flags: &[String], data: &Path, print: bool) -> Result<Vec<String>> {
    let mut kept = Vec::with_capacity(flags.len());
    let mut token = std::env::var("BERTH_TUNNEL_TOKEN")
        .ok()
        .filter(|token| !token.is_empty());
    let mut words = flags.iter();
    while let Some(flag) = words.next() {
        if let Some(value) = flag.strip_prefix("--tunnel-token=") {
            token = Some(value.to_string());
        } else if flag == "--tunnel-token" {
            token = words.next().cloned();
        } else if flag == "--tunnel-token-file=-"
            || (flag == "--tunnel-token-file"
                && words.clone().next().is_some_and(|next| next == "-"))
        {
            if flag == "--tunnel-token-file" {
                words.next();
            }
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the tunnel token on standard input")?;
            berth_tunnel::TunnelToken::parse(&line)?;
            token = Some(line.trim().to_string());
        } else {
            kept.push(flag.clone());
        }
    }
    let Some(token) = token else {
        return Ok(kept);
    };
    let path = data.join("tunnel-token");
    if !print {
        std::fs::create_dir_all(data)
            .with_context(|| format!("cannot create the data dir {}", data.display()))?;
        berth_tls::write_private(&path, &format!("{token}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    kept.extend(["--tunnel-token-file".into(), path.display().to_string()]);
    Ok(kept)
}

/// `--no-systemd`: the server started now, in the background, as the unit
/// would start it (same binary, flags and environment; the unit kept in
/// the data dir for reference); one already running for the data dir is
/// stopped first.
async fn start_without_systemd(
    data: &Path,
    binary: &Path,
    flags: &[String],
    environment: &[(String, String)],
    unit: &str,
) -> Result<()> {
    std::fs::create_dir_all(data)
        .with_context(|| format!("cannot create the data dir {}", data.display()))?;
    std::fs::write(data.join(UNIT), unit)
        .with_context(|| format!("cannot write {}", data.join(UNIT).display()))?;
    if running(data).is_some() {
        crate::server_process::stop(data, Duration::from_secs(180)).await?;
    }
    let mut args: Vec<std::ffi::OsString> = vec![
        "server".into(),
        "--data".into(),
        data.as_os_str().to_owned(),
    ];
    args.extend(flags.iter().map(Into::into));
    // (A token in the environment went to DATA/tunnel-token, and
    // `--tunnel-token-file` names it: both at once would be refused.)
    let mut full: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os()
        .filter(|(name, _)| !environment.iter().any(|(set, _)| name == set.as_str()))
        .filter(|(name, _)| name != "BERTH_TUNNEL_TOKEN")
        .collect();
    full.extend(
        environment
            .iter()
            .map(|(name, value)| (name.into(), value.into())),
    );
    full.push(("RUST_LOG".into(), "info".into()));
    crate::server_process::spawn_detached(binary, &args, Some(&full), data)?;
    crate::connect::wait_until_answering(data, Duration::from_secs(60)).await?;
    eprintln!(
        "==> started the berth server in the background from {} (no systemd here: it is not restarted at boot or if it stops; the unit it would use is {})",
        binary.display(),
        data.join(UNIT).display()
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
