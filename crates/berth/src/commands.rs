//! Each command, carried out over the API client.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use berth_proto::EnvChange;

use crate::args::*;
use crate::cli::{AppArg, AppsCommand, Command, DeployArgs, EnvCommand, Global, ServerArgs};
use crate::connect::{connect, data_dir};
use crate::output;

/// Runs `berth server` in the foreground until SIGINT or SIGTERM.
pub fn server(global: &Global, args: ServerArgs) -> Result<()> {
    output::init_logging();
    let data = data_dir(global);
    let mut config = berth_server::ServerConfig::new(data.clone());
    config.api_addr = args.api_addr;
    config.metrics_addr = args.metrics_addr;
    let (router_addr, https_addr) = args.listeners();
    config.router_addr = router_addr;
    config.https_addr = https_addr;
    config.trusted_proxies = args.trusted_proxies;
    config.api_tls = args.api_tls;
    config.api_names = args.api_names;
    let token = match (&args.tunnel_token, &args.tunnel_token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the tunnel token in {}", path.display()))?;
            Some(berth_tunnel::TunnelToken::parse(&text)?)
        }
        (None, None) => None,
    };
    if args.tunnel.is_some() && token.is_none() {
        bail!(
            "--tunnel needs the relay's token: --tunnel-token T (or BERTH_TUNNEL_TOKEN, or --tunnel-token-file)"
        );
    }
    if let (Some(relay), Some(token)) = (args.tunnel, token) {
        // Tunnelled HTTPS is served with the router's certificates, which
        // need an HTTPS listener; without one asked for, a loopback one.
        if config.https_addr.is_none() {
            config.https_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        }
        config.tunnel = Some((relay, token));
    }
    if args.public && args.domain == "localhost" {
        eprintln!(
            "==> --public without --domain: apps are reachable from outside only at their custom domains (berth domains add)"
        );
    }
    if args.public || args.acme_directory.is_some() || args.acme_email.is_some() {
        config.acme = Some(berth_tls::AcmeSettings {
            directory: args
                .acme_directory
                .unwrap_or_else(|| berth_tls::LETS_ENCRYPT.to_string()),
            email: args.acme_email,
            ca_root: args.acme_ca_root,
        });
    }
    config.domain_suffix = args.domain;
    config.max_upload_bytes = args.max_upload_mib * 1024 * 1024;
    config.keep_releases = args.keep_releases;
    if args.meter_interval < std::time::Duration::from_secs(1) {
        anyhow::bail!("--meter-interval must be at least 1s");
    }
    config.meter_interval = (!args.no_meter).then_some(args.meter_interval);
    config.prices_dir = args.prices;
    config.registry_grace = args.registry_grace;
    if let Some(usd) = args.server_usd
        && !(usd.is_finite() && usd >= 0.0)
    {
        anyhow::bail!("--server-usd must be a price of zero or more, not {usd}");
    }
    config.server_usd = args.server_usd;
    config.isolation = !args.no_isolation;
    if args.runtime == crate::server_args::Runtime::Docker {
        let Some(socket) = args.docker_host.strip_prefix("unix://") else {
            anyhow::bail!(
                "--docker-host {}: berth reaches the Docker engine on a unix socket (unix:///var/run/docker.sock)",
                args.docker_host
            );
        };
        config.docker_socket = Some(socket.to_string());
    }
    config.build_limits.memory_mib = args.build_memory;
    config.disk_reserve_bytes = args.disk_reserve_mib * 1024 * 1024;
    config.build_limits.timeout = args.build_timeout;
    if let Some(cache) = args.build_cache {
        config.build_cache_dir = cache;
    }
    if config.isolation
        && berth_runtime::can_isolate()
        && std::env::var("BERTH_SPAWNER").map_or(true, |value| value != "off")
    {
        // Before any thread: sandboxed instances start from this small fork.
        if let Err(err) = berth_runtime::spawner::start() {
            tracing::warn!("cannot start the spawner ({err}); instances fork from the server");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = berth_server::CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            on_signal.cancel();
        });
        berth_server::run(config, shutdown, None).await
    })?;
    Ok(())
}

/// Runs every command but `server`.
pub async fn run(global: Global, command: Command) -> Result<()> {
    match command {
        Command::Up(args) => deploy(&global, args, true).await,
        Command::Deploy(args) => deploy(&global, args, false).await,
        Command::Server(args) => match args.action {
            Some(action) => crate::server_control::run(&global, action).await,
            None => unreachable!("running a server is handled in main"),
        },
        Command::Apps { command } => apps(&global, command.unwrap_or(AppsCommand::List)).await,
        Command::Status(app) => crate::status::status(&global, &app).await,
        Command::Releases(app) => releases(&global, &app).await,
        Command::Rollback {
            target: version,
            app,
        } => {
            let app = resolve_app(&app)?;
            let client = connect(&global, false).await?;
            let stream = client.rollback(&app, version).await?;
            finish_progress(stream, global.json).await
        }
        Command::Scale {
            counts,
            min,
            max,
            process,
            app,
        } => {
            let request = berth_proto::ScaleRequest {
                counts: BTreeMap::new(),
                min,
                max,
                process,
            };
            scale(&global, &app, &counts, request).await
        }
        Command::Env { command } => env(&global, command).await,
        Command::Logs(args) => crate::logs::logs(&global, args).await,
        Command::Events { follow, limit, app } => {
            crate::logs::events(&global, &app, follow, limit).await
        }
        Command::Jobs { command } => crate::jobs::jobs(&global, command).await,
        Command::Run(args) => crate::one_off::run(&global, args).await,
        Command::Console(args) => crate::one_off::console(&global, args).await,
        Command::Secrets { command } => crate::resources::secrets(&global, command).await,
        Command::Postgres { command } => crate::resources::postgres(&global, command).await,
        Command::Redis { command } => crate::resources::redis(&global, command).await,
        Command::Volumes { command } => crate::resources::volumes(&global, command).await,
        Command::Domains { command } => crate::domains::domains(&global, command).await,
        Command::Edge { command } => crate::edge::edge(&global, command).await,
        Command::Usage(args) => crate::usage_cli::usage(&global, args).await,
        Command::Cost(args) => crate::usage_cli::cost(&global, args).await,
        Command::Budget { command } => crate::usage_cli::budget(&global, command).await,
        Command::Notify { command } => crate::usage_cli::notify(&global, command).await,
        Command::Registry { command } => crate::registry_cli::registry(&global, command).await,
        Command::Image { command } => crate::registry_cli::image(&global, command).await,
        Command::Login {
            url,
            name,
            fingerprint,
            replace_pin,
        } => {
            let pin = crate::contexts::PinCheck {
                fingerprint,
                replace: replace_pin,
            };
            crate::contexts::login(&global, &url, global.token.clone(), name, pin).await
        }
        Command::Relay(args) => match args.action.clone() {
            Some(crate::relay_cli::RelayAction::Token { command }) => {
                crate::relay_cli::tokens(&args, command, global.json)
            }
            Some(crate::relay_cli::RelayAction::Install { print, binary }) => {
                crate::relay_cli::install(&args, print, binary)
            }
            None => unreachable!("running the relay is handled in main"),
        },
        Command::Context { command } => match command {
            crate::cli::ContextCommand::List => crate::contexts::list(&global),
            crate::cli::ContextCommand::Use { name } => crate::contexts::use_context(&name),
            crate::cli::ContextCommand::Remove { name } => crate::contexts::remove(&name),
        },
        Command::Certs {
            command: crate::cli::CertsCommand::Root,
        } => crate::domains::certs_root(&global).await,
        Command::Config {
            command: crate::cli::ConfigCommand::Validate { path },
        } => crate::validate::validate(&path, global.json),
        Command::Export {
            format,
            dir,
            app: Some(app),
        } => {
            let client = connect(&global, false).await?;
            let spec: berth_spec::AppSpec = serde_json::from_value(client.spec(&app).await?)
                .context("the server's model of the app is not one this berth reads")?;
            crate::validate::export_apps(&format, vec![(app.clone(), spec)], None, &dir)
        }
        Command::Export {
            format,
            dir,
            app: None,
        } => crate::validate::export(&format, &dir),
        Command::Open(app) => {
            let app = resolve_app(&app)?;
            let client = connect(&global, false).await?;
            let url = client.status(&app).await?.url;
            say!("{url}");
            open_in_browser(&url);
            Ok(())
        }
        Command::Dashboard => {
            let client = connect(&global, false).await?;
            let url = format!("{}/ui", client.base_url());
            say!(
                "{url}  (sign in with the API token, {})",
                crate::connect::data_dir(&global).join("token").display()
            );
            open_in_browser(&url);
            Ok(())
        }
    }
}

/// Opens `url` in the desktop's browser, when there is a desktop.
fn open_in_browser(url: &str) {
    if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some() {
        let _ = std::process::Command::new("xdg-open").arg(url).spawn();
    }
}

/// Ignored files that are uploaded anyway: a Shuttle project's secrets
/// files (the server seals them and drops the files) and its `Shuttle.toml`
/// `[deploy] include`.
fn upload_includes(dir: &Path) -> Result<Vec<String>> {
    let shuttle = berth_spec::detect_shuttle(&berth_spec::FolderTree::new(dir))
        .map_err(|err| anyhow!("{err}"))?
        .and_then(|parsed| parsed.spec.shuttle);
    Ok(match shuttle {
        Some(shuttle) => berth_spec::SHUTTLE_SECRETS_FILES
            .iter()
            .map(|file| file.to_string())
            .chain(shuttle.include)
            .collect(),
        None => Vec::new(),
    })
}

async fn deploy(global: &Global, args: DeployArgs, autostart: bool) -> Result<()> {
    let dir: PathBuf = args
        .dir
        .canonicalize()
        .with_context(|| format!("cannot open the folder {}", args.dir.display()))?;
    let tree = berth_spec::FolderTree::new(&dir);
    // A render.yaml with several services deploys each as its own app.
    let apps: Vec<String> = match &args.app.app {
        Some(app) => vec![app.clone()],
        None => match berth_spec::load_blueprint(&tree).map_err(|err| anyhow!("{err}"))? {
            Some(blueprint) if blueprint.apps.len() > 1 => {
                blueprint.apps.into_iter().map(|(app, _)| app).collect()
            }
            _ => vec![match (app_from_dir(&dir), &args.image) {
                (Ok(app), _) => app,
                // An image alone: the app is named after its repository.
                (Err(_), Some(image)) => image_app_name(image)?,
                (Err(err), None) => return Err(err),
            }],
        },
    };
    let client = connect(global, autostart).await?;
    let pack_dir = dir.clone();
    let include = upload_includes(&dir)?;
    let tarball = tokio::task::spawn_blocking(move || berth_build::pack_with(&pack_dir, &include))
        .await
        .context("packing stopped")??;
    for app in &apps {
        match client.status(app).await {
            Ok(_) => {}
            Err(err) if err.is_not_found() => {
                client
                    .create_app(app)
                    .await
                    .with_context(|| format!("cannot create the app `{app}`"))?;
                if !global.json {
                    eprintln!("==> created app {app}");
                }
            }
            Err(err) => return Err(err.into()),
        }
        if let Ok(Some(parsed)) = berth_spec::load_project_for(&tree, Some(app)) {
            ask_for_secrets(global, &client, app, &parsed.spec).await?;
        }
        if !global.json {
            eprintln!(
                "==> uploading {} ({} KiB){}",
                dir.display(),
                tarball.len() / 1024,
                if apps.len() > 1 {
                    format!(" as app {app}")
                } else {
                    String::new()
                }
            );
        }
        let stream = client
            .deploy(app, tarball.clone(), args.image.as_deref())
            .await?;
        finish_progress(stream, global.json).await?;
    }
    Ok(())
}

/// The app an image deploys as when nothing else names one: the last
/// part of its repository (`127.0.0.1:8079/team/shop:v1` is `shop`).
fn image_app_name(image: &str) -> Result<String> {
    let path = image.split('@').next().unwrap_or(image);
    let last = path.rsplit('/').next().unwrap_or(path);
    let name = last.split(':').next().unwrap_or(last);
    berth_proto::validate_app_name(name)
        .map(|()| name.to_string())
        .map_err(|err| {
            anyhow!("cannot name an app after the image {image}: {err}; pass --app NAME")
        })
}

/// Asks, on a terminal, for the secrets the spec wants set once
/// (render.yaml's `sync: false`) and the app does not have yet. Without a
/// terminal the deploy says which are missing and how to set them.
async fn ask_for_secrets(
    global: &Global,
    client: &berth_client::Client,
    app: &str,
    spec: &berth_spec::AppSpec,
) -> Result<()> {
    use std::io::IsTerminal;
    let wanted: Vec<&str> = spec
        .env_from
        .iter()
        .filter(|from| from.source == berth_spec::EnvSource::AskOnce)
        .map(|from| from.key.as_str())
        .collect();
    if wanted.is_empty() || global.json || !std::io::stdin().is_terminal() {
        return Ok(());
    }
    let have: Vec<String> = client
        .secrets(app)
        .await?
        .into_iter()
        .map(|secret| secret.name)
        .collect();
    let mut set = std::collections::BTreeMap::new();
    for key in wanted
        .into_iter()
        .filter(|key| !have.iter().any(|name| name == key))
    {
        // Read without echo: the value must not stay on the screen.
        let value = rpassword::prompt_password(format!(
            "{app} needs {key} (set once, kept sealed; not shown): "
        ))
        .context("cannot read the value")?;
        if value.is_empty() {
            bail!("no value for {key}: set it with `berth secrets set --app {app} {key}=…`");
        }
        set.insert(key.to_string(), value);
    }
    if set.is_empty() {
        return Ok(());
    }
    let change = berth_proto::EnvChange {
        set,
        unset: Vec::new(),
    };
    finish_progress(client.change_secrets(app, &change).await?, global.json).await
}

async fn apps(global: &Global, command: AppsCommand) -> Result<()> {
    let client = connect(global, false).await?;
    match command {
        AppsCommand::List => {
            let apps = client.apps().await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&apps)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = apps
                .iter()
                .map(|app| {
                    vec![
                        app.name.clone(),
                        app.release
                            .map(|version| format!("v{version}"))
                            .unwrap_or_else(|| "-".into()),
                        format!("{}/{}", app.running, app.desired),
                        app.url.clone(),
                    ]
                })
                .collect();
            output::table(&["NAME", "RELEASE", "RUNNING", "URL"], &rows);
        }
        AppsCommand::Create { name } => {
            let app = client.create_app(&name).await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&app)?);
            } else {
                say!("created {} ({})", app.name, app.url);
            }
        }
        AppsCommand::Destroy { name, yes } => {
            if !yes {
                confirm(
                    &format!(
                        "Destroy app `{name}`: its instances, releases, database, Redis and volumes?"
                    ),
                    &name,
                )?;
            }
            client.destroy_app(&name).await?;
            if !global.json {
                say!("destroyed {name}");
            }
        }
    }
    Ok(())
}

async fn releases(global: &Global, app: &AppArg) -> Result<()> {
    let app = resolve_app(app)?;
    let client = connect(global, false).await?;
    let releases = client.releases(&app).await?;
    if global.json {
        say!("{}", serde_json::to_string_pretty(&releases)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = releases
        .iter()
        .map(|release| {
            vec![
                format!("v{}", release.version),
                release.status.to_string(),
                release.cause.clone(),
                release.created_at.clone(),
                release.slug.clone(),
            ]
        })
        .collect();
    output::table(&["VERSION", "STATUS", "CAUSE", "CREATED", "SLUG"], &rows);
    Ok(())
}

async fn scale(
    global: &Global,
    app: &AppArg,
    counts: &[String],
    mut request: berth_proto::ScaleRequest,
) -> Result<()> {
    let app = resolve_app(app)?;
    if counts.is_empty() && request.min.is_none() && request.max.is_none() {
        bail!("give GROUP=COUNT (as in web=3), or --min/--max");
    }
    let mut wanted = BTreeMap::new();
    for (group, count) in parse_pairs(counts, "GROUP=COUNT, as in web=3")? {
        let count: u32 = count
            .parse()
            .map_err(|_| anyhow!("`{group}={count}`: the count must be a whole number"))?;
        wanted.insert(group, count);
    }
    request.counts = wanted.clone();
    let client = connect(global, false).await?;
    let status = client.scale_with(&app, &request).await?;
    if global.json {
        say!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        let mut text: Vec<String> = wanted
            .iter()
            .map(|(group, count)| format!("{group}={count}"))
            .collect();
        if let Some(min) = request.min {
            text.push(format!("min {min}"));
        }
        if let Some(max) = request.max {
            text.push(format!("max {max}"));
        }
        say!("scaled {app}: {}", text.join(" "));
    }
    Ok(())
}

async fn env(global: &Global, command: EnvCommand) -> Result<()> {
    match command {
        EnvCommand::List(app) => {
            let app = resolve_app(&app)?;
            let client = connect(global, false).await?;
            let env = client.env(&app).await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&env)?);
            } else {
                for (key, value) in env {
                    say!("{key}={value}");
                }
            }
            Ok(())
        }
        EnvCommand::Set { pairs, app } => {
            let app = resolve_app(&app)?;
            let change = EnvChange {
                set: parse_pairs(&pairs, "KEY=VALUE")?.into_iter().collect(),
                unset: Vec::new(),
            };
            let client = connect(global, false).await?;
            finish_progress(client.change_env(&app, &change).await?, global.json).await
        }
        EnvCommand::Unset { keys, app } => {
            let app = resolve_app(&app)?;
            let change = EnvChange {
                set: BTreeMap::new(),
                unset: keys,
            };
            let client = connect(global, false).await?;
            finish_progress(client.change_env(&app, &change).await?, global.json).await
        }
    }
}
