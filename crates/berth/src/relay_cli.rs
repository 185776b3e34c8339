//! `berth relay`: the tunnel relay on a public host, and its tokens.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

/// `berth relay`'s flags.
#[derive(Debug, Args, Clone)]
pub struct RelayArgs {
    #[command(subcommand)]
    pub action: Option<RelayAction>,
    /// The relay's files: its CA and tokens (default: /var/lib/berth-relay
    /// as root, else ~/.local/share/berth-relay).
    #[arg(long, env = "BERTH_RELAY_DIR", global = true)]
    pub dir: Option<PathBuf>,
    /// Where the internet's plain HTTP arrives.
    #[arg(long, default_value = "0.0.0.0:80")]
    pub http: SocketAddr,
    /// Where the internet's HTTPS arrives (passed through undecrypted).
    #[arg(long, default_value = "0.0.0.0:443")]
    pub https: SocketAddr,
    /// Where home servers' tunnels arrive.
    #[arg(long, default_value = "0.0.0.0:7835")]
    pub tunnel: SocketAddr,
}

/// `berth relay token …`.
#[derive(Debug, Subcommand, Clone)]
pub enum RelayAction {
    /// Tokens: which home server may serve which domains.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run the relay as a systemd service with these flags (`berth relay
    /// --http … install`), restarted always and started at boot.
    Install {
        /// Only print the unit (running this binary where it is now).
        #[arg(long)]
        print: bool,
        /// Where the binary is installed (default: /usr/local/bin/berth).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
}

/// The relay's systemd unit.
const UNIT: &str = "berth-relay.service";

/// `berth relay install`: the unit, written and started (or printed).
pub fn install(args: &RelayArgs, print: bool, binary: Option<PathBuf>) -> Result<()> {
    let dir =
        std::path::absolute(relay_dir(args)).context("cannot make the relay's dir absolute")?;
    if dir.display().to_string().chars().any(char::is_whitespace) {
        bail!(
            "the relay's dir {} has a space in its path, which systemd's log setting cannot hold",
            dir.display()
        );
    }
    // Printed, the unit runs this binary where it is; installed, a copy
    // in /usr/local/bin.
    let binary = match binary {
        Some(binary) => binary,
        None if print => std::env::current_exe().context("cannot find the berth binary")?,
        None => PathBuf::from("/usr/local/bin/berth"),
    };
    let flags = [
        "--http".to_string(),
        args.http.to_string(),
        "--https".into(),
        args.https.to_string(),
        "--tunnel".into(),
        args.tunnel.to_string(),
    ];
    let unit = crate::server_unit::render_for(
        &crate::server_unit::Service {
            command: "relay",
            dir_flag: "--dir",
            description: "berth relay: forwards the internet to home servers' tunnels",
            log: "relay.log",
        },
        &binary,
        &dir,
        &flags,
        &[],
        berth_runtime::can_isolate(),
    );
    if print {
        print!("{unit}");
        return Ok(());
    }
    if !crate::server_process::systemd_runs() {
        print!("{unit}");
        bail!(
            "systemd is not running on this machine (no /run/systemd/system): nothing was installed. \
             The unit above is what it would install; run `berth relay` under this machine's own service manager instead"
        );
    }
    if !berth_runtime::can_isolate() {
        bail!("the relay listens on ports 80 and 443: install it as root");
    }
    crate::server_restart::install_binary(&binary)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = PathBuf::from("/etc/systemd/system").join(UNIT);
    std::fs::write(&path, &unit).with_context(|| format!("cannot write {}", path.display()))?;
    crate::server_process::systemctl(&["daemon-reload"])?;
    crate::server_process::systemctl(&["enable", "--now", UNIT])?;
    crate::server_process::systemctl(&["restart", UNIT])?;
    eprintln!("==> installed {} and started it", path.display());
    Ok(())
}

/// `berth relay token add|list|remove`.
#[derive(Debug, Subcommand, Clone)]
pub enum TokenCommand {
    /// A token for a home server, naming the domains it may serve
    /// (`--domain shop.example.com --domain '*.home.example.com'`).
    Add {
        /// A name for the home server.
        name: String,
        /// A domain it serves, or `*.SUFFIX` for every name under SUFFIX
        /// (repeatable).
        #[arg(long = "domain", required = true)]
        domains: Vec<String>,
        /// The address home servers dial, for the command it prints
        /// (`relay.example.com:7835`).
        #[arg(long)]
        address: Option<String>,
    },
    /// The tokens and their domains (never the secrets).
    List,
    /// Revoke a token: its home server is refused from its next dial.
    Remove { name: String },
}

fn relay_dir(args: &RelayArgs) -> PathBuf {
    if let Some(dir) = &args.dir {
        return dir.clone();
    }
    if berth_runtime::can_isolate() {
        return PathBuf::from("/var/lib/berth-relay");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/berth-relay"),
        None => PathBuf::from(".berth-relay"),
    }
}

/// Runs the relay in the foreground until SIGINT or SIGTERM.
pub fn run(args: RelayArgs) -> Result<()> {
    crate::output::init_logging();
    let config = berth_tunnel::RelayConfig {
        data: relay_dir(&args),
        http: args.http,
        https: args.https,
        tunnel: args.tunnel,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        berth_tunnel::relay::run(config, stop).await
    })?;
    Ok(())
}

/// `berth relay token …`.
pub fn tokens(args: &RelayArgs, command: TokenCommand, json: bool) -> Result<()> {
    let dir = relay_dir(args);
    let mut tokens = berth_tunnel::RelayTokens::load(&dir)?;
    match command {
        TokenCommand::Add {
            name,
            domains,
            address,
        } => {
            let secret = tokens.add(&name, &domains)?;
            let fingerprint = berth_tunnel::relay::fingerprint(&dir)?;
            tokens.save(&dir)?;
            let token = berth_tunnel::TunnelToken {
                secret,
                relay_ca: fingerprint,
            };
            let address = address.unwrap_or_else(|| "RELAY_HOST:7835".into());
            if json {
                say!(
                    "{}",
                    serde_json::json!({"name": name, "token": token.to_string(), "address": address})
                );
            } else {
                say!("{token}");
                eprintln!(
                    "==> the home server runs with:\n    berth server --tunnel {address} --tunnel-token {token}\n    (the token also pins this relay's certificate; it is shown only now)"
                );
            }
        }
        TokenCommand::List => {
            if json {
                let rows: Vec<_> = tokens
                    .tokens
                    .iter()
                    .map(|token| serde_json::json!({"name": token.name, "domains": token.domains}))
                    .collect();
                say!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for token in &tokens.tokens {
                    say!("{:<20} {}", token.name, token.domains.join(", "));
                }
            }
        }
        TokenCommand::Remove { name } => {
            if !tokens.remove(&name) {
                bail!("no token named `{name}` (`berth relay token list` shows them)");
            }
            tokens.save(&dir)?;
            eprintln!(
                "==> removed the token `{name}`: its home server is refused from its next dial"
            );
        }
    }
    Ok(())
}
