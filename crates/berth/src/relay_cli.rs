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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
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
