//! Finding the server: `--server`/`BERTH_SERVER`, or the local one whose
//! address and token are in the data dir — started in the background by
//! `berth up` when none runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use berth_client::Client;
use berth_proto::ServerInfo;

use crate::cli::Global;

/// The data dir: `--data`, `BERTH_DATA`, or `~/.local/share/berth`.
pub fn data_dir(global: &Global) -> PathBuf {
    if let Some(dir) = &global.data {
        return dir.clone();
    }
    // As root berth is a system service: its services (PostgreSQL, Redis)
    // run as their own users and must reach the data dir, which a home
    // directory such as /root (mode 0700) would not let them.
    if berth_runtime::can_isolate() {
        return PathBuf::from("/var/lib/berth");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|value| !value.is_empty()) {
        return PathBuf::from(xdg).join("berth");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/berth"),
        None => PathBuf::from(".berth"),
    }
}

fn read_token(data: &Path) -> Option<String> {
    std::fs::read_to_string(data.join("token"))
        .ok()
        .map(|token| token.trim().to_string())
}

fn read_info(data: &Path) -> Option<ServerInfo> {
    let text = std::fs::read(data.join("server.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// A client for the server the flags name, starting a local one when
/// `autostart` is set and none answers.
pub async fn connect(global: &Global, autostart: bool) -> Result<Client> {
    if let Some(name) = &global.context {
        return crate::contexts::client(name).await;
    }
    if global.server.is_none()
        && let Some(name) = crate::contexts::current()
    {
        return crate::contexts::client(&name).await;
    }
    let data = data_dir(global);
    if let Some(server) = &global.server {
        if server.starts_with("https://") {
            bail!(
                "{server} is served over TLS: log in once with `berth login {server} --token T --name NAME` (it pins the server's certificate), then use --context NAME"
            );
        }
        let token = global
            .token
            .clone()
            .or_else(|| read_token(&data))
            .ok_or_else(|| anyhow!("--server needs a token: pass --token or set BERTH_TOKEN"))?;
        return Ok(Client::new(server, &token));
    }
    if let Some(client) = local_client(global.token.as_deref(), &data).await {
        return Ok(client);
    }
    if !autostart {
        bail!(
            "no berth server is running for the data dir {}.\nStart one with `berth server`, or deploy with `berth up` (which starts one).",
            data.display()
        );
    }
    start_background_server(&data)?;
    wait_until_answering(&data, Duration::from_secs(15)).await
}

/// A client for the server of `data` once it answers, within `timeout`;
/// on failure the error holds the end of its log.
pub async fn wait_until_answering(data: &Path, timeout: Duration) -> Result<Client> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(client) = local_client(None, data).await {
            return Ok(client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(data.join("server.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
    bail!(
        "the berth server did not answer within {}s. Its log ({}):\n{tail}",
        timeout.as_secs(),
        data.join("server.log").display()
    )
}

/// A client for the server of `data` if it answers, with `token` or the
/// one in the data dir.
pub async fn local_client(token: Option<&str>, data: &Path) -> Option<Client> {
    let info = read_info(data)?;
    let token = token.map(str::to_string).or_else(|| read_token(data))?;
    let client = if info.api_url.starts_with("https://") {
        // The local server's own CA, read from its data dir.
        let root = std::fs::read_to_string(data.join("tls/ca.pem")).ok()?;
        Client::with_root(&info.api_url, &token, &root).ok()?
    } else {
        Client::new(&info.api_url, &token)
    };
    client.health().await.ok()?;
    Some(client)
}

fn start_background_server(data: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the berth binary to start a server")?;
    let args = [
        "server".into(),
        "--data".into(),
        data.as_os_str().to_owned(),
    ];
    crate::server_process::spawn_detached(&exe, &args, None, data)
        .context("cannot start a berth server in the background")?;
    eprintln!(
        "started a berth server in the background (data: {}, log: {})",
        data.display(),
        data.join("server.log").display()
    );
    Ok(())
}
