//! `berth secrets`, `berth postgres`, `berth redis`, `berth volumes`.

use anyhow::{Context, Result, anyhow, bail};
use berth_proto::EnvChange;

use crate::args::{confirm, finish_progress, parse_pairs, resolve_app};
use crate::cli::{AppArg, Global, PostgresCommand, RedisCommand, SecretsCommand, VolumesCommand};
use crate::connect::connect;
use crate::output;

pub async fn secrets(global: &Global, command: SecretsCommand) -> Result<()> {
    let (app, change) = match command {
        SecretsCommand::List(app) => {
            let app = resolve_app(&app)?;
            let client = connect(global, false).await?;
            let secrets = client.secrets(&app).await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&secrets)?);
            } else if secrets.is_empty() {
                eprintln!("app `{app}` has no secrets; `berth secrets set NAME=VALUE` adds one");
            } else {
                let rows = secrets
                    .into_iter()
                    .map(|secret| vec![secret.name, secret.digest, secret.updated_at])
                    .collect::<Vec<_>>();
                output::table(&["NAME", "DIGEST", "UPDATED"], &rows);
            }
            return Ok(());
        }
        SecretsCommand::Set { pairs, app } => (
            app,
            EnvChange {
                set: parse_pairs(&pairs, "NAME=VALUE")?.into_iter().collect(),
                unset: Vec::new(),
            },
        ),
        SecretsCommand::Unset { names, app } => (
            app,
            EnvChange {
                set: Default::default(),
                unset: names,
            },
        ),
        SecretsCommand::Import { file, app } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let name = file
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| file.display().to_string());
            let set =
                berth_spec::parse_secrets_file(&name, &text).map_err(|err| anyhow!("{err}"))?;
            if set.is_empty() {
                bail!("{} holds no secrets", file.display());
            }
            if !global.json {
                eprintln!(
                    "==> importing {} secrets from {}",
                    set.len(),
                    file.display()
                );
            }
            (
                app,
                EnvChange {
                    set,
                    unset: Vec::new(),
                },
            )
        }
    };
    let app = resolve_app(&app)?;
    let client = connect(global, false).await?;
    finish_progress(client.change_secrets(&app, &change).await?, global.json).await
}

pub async fn postgres(global: &Global, command: PostgresCommand) -> Result<()> {
    match command {
        PostgresCommand::Attach(app) => attach(global, &app, "postgres").await,
        PostgresCommand::Url(app) => {
            let app = resolve_app(&app)?;
            let info = connect(global, false).await?.postgres(&app).await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                say!("{}", info.url);
                eprintln!(
                    "{} of its {} connections in use",
                    info.connections, info.connection_limit
                );
            }
            Ok(())
        }
        PostgresCommand::Connect(app) => {
            let app = resolve_app(&app)?;
            let info = connect(global, false).await?.postgres(&app).await?;
            let status = std::process::Command::new("psql")
                .arg(&info.url)
                .status()
                .context("cannot run psql (install Debian's postgresql-client)")?;
            if !status.success() {
                bail!("psql exited with {status}");
            }
            Ok(())
        }
        PostgresCommand::Backup(app) => {
            let app = resolve_app(&app)?;
            let backup = connect(global, false).await?.backup(&app).await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&backup)?);
            } else {
                say!("{}  ({} KiB)", backup.id, backup.size_bytes.div_ceil(1024));
            }
            Ok(())
        }
        PostgresCommand::Migrate(app) => {
            let app = resolve_app(&app)?;
            let result = connect(global, false).await?.migrate(&app).await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&result)?);
            } else if result.applied.is_empty() {
                say!("nothing to apply ({} applied before)", result.already);
            } else {
                for migration in &result.applied {
                    say!("applied {migration}");
                }
            }
            Ok(())
        }
        PostgresCommand::Backups(app) => {
            let app = resolve_app(&app)?;
            let backups = connect(global, false).await?.backups(&app).await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&backups)?);
            } else {
                let rows = backups
                    .into_iter()
                    .map(|backup| {
                        vec![
                            backup.id,
                            format!("{} KiB", backup.size_bytes.div_ceil(1024)),
                            backup.created_at,
                        ]
                    })
                    .collect::<Vec<_>>();
                output::table(&["ID", "SIZE", "TAKEN"], &rows);
            }
            Ok(())
        }
        PostgresCommand::Restore { backup, yes, app } => {
            let app = resolve_app(&app)?;
            if !yes {
                confirm(
                    &format!(
                        "Replace the contents of `{app}`'s database with backup {}?",
                        backup.as_deref().unwrap_or("(the newest)")
                    ),
                    &app,
                )?;
            }
            let restored = connect(global, false)
                .await?
                .restore(&app, backup.as_deref())
                .await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&restored)?);
            } else {
                eprintln!("==> restored backup {}", restored.id);
            }
            Ok(())
        }
    }
}

pub async fn redis(global: &Global, command: RedisCommand) -> Result<()> {
    match command {
        RedisCommand::Attach(app) => attach(global, &app, "redis").await,
        RedisCommand::Url(app) => {
            let app = resolve_app(&app)?;
            let info = connect(global, false).await?.redis(&app).await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                say!("{}", info.url);
            }
            Ok(())
        }
    }
}

async fn attach(global: &Global, app: &AppArg, kind: &str) -> Result<()> {
    let app = resolve_app(app)?;
    let client = connect(global, false).await?;
    finish_progress(client.attach(&app, kind).await?, global.json).await
}

pub async fn volumes(global: &Global, command: VolumesCommand) -> Result<()> {
    match command {
        VolumesCommand::List(app) => {
            let app = resolve_app(&app)?;
            let volumes = connect(global, false).await?.volumes(&app).await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&volumes)?);
            } else {
                let rows = volumes
                    .into_iter()
                    .map(|volume| {
                        vec![
                            volume.name,
                            volume.destination.unwrap_or_else(|| "-".into()),
                            match volume.limit_bytes {
                                Some(limit) => format!(
                                    "{} KiB of {} MiB",
                                    volume.size_bytes.div_ceil(1024),
                                    limit / (1024 * 1024)
                                ),
                                None => format!("{} KiB", volume.size_bytes.div_ceil(1024)),
                            },
                            volume.path,
                        ]
                    })
                    .collect::<Vec<_>>();
                output::table(&["NAME", "MOUNTED AT", "SIZE", "PATH"], &rows);
            }
            Ok(())
        }
        VolumesCommand::Destroy { name, yes, app } => {
            let app = resolve_app(&app)?;
            if !yes {
                confirm(
                    &format!("Delete volume `{name}` of `{app}` and every file in it?"),
                    &name,
                )?;
            }
            connect(global, false)
                .await?
                .destroy_volume(&app, &name)
                .await?;
            if !global.json {
                eprintln!("==> volume {name} destroyed");
            }
            Ok(())
        }
    }
}
