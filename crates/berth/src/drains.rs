//! `berth logs drain`: add, list and remove log drains.

use anyhow::{Context, Result};

use crate::args::resolve_app;
use crate::cli::Global;
use crate::connect::connect;
use crate::log_args::DrainCommand;
use crate::output;

pub(crate) async fn drain(global: &Global, command: DrainCommand) -> Result<()> {
    match command {
        DrainCommand::Add {
            url,
            ca,
            buffer,
            app,
        } => {
            let app = resolve_app(&app)?;
            // Checked here too, so a typo is caught before any connection.
            berth_proto::DrainTarget::parse(&url).map_err(anyhow::Error::msg)?;
            let ca_pem = match &ca {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                ),
                None => None,
            };
            let client = connect(global, false).await?;
            let added = client
                .add_drain(
                    &app,
                    &berth_proto::AddDrain {
                        url,
                        ca_pem,
                        buffer_lines: buffer,
                    },
                )
                .await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&added)?);
            } else {
                say!(
                    "drain {} added: {}'s lines from now on go to {} ({})",
                    added.id,
                    app,
                    added.url,
                    added.kind.as_str()
                );
            }
        }
        DrainCommand::List(app) => {
            let app = resolve_app(&app)?;
            let client = connect(global, false).await?;
            let drains = client.drains(&app).await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&drains)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = drains
                .iter()
                .map(|drain| {
                    vec![
                        drain.id.to_string(),
                        drain.kind.as_str().to_string(),
                        drain.url.clone(),
                        drain.delivered.to_string(),
                        drain.dropped.to_string(),
                        drain.last_error.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            output::table(
                &["ID", "KIND", "URL", "DELIVERED", "DROPPED", "LAST ERROR"],
                &rows,
            );
        }
        DrainCommand::Remove { id, app } => {
            let app = resolve_app(&app)?;
            let client = connect(global, false).await?;
            client.remove_drain(&app, id).await?;
            say!("drain {id} removed");
        }
    }
    Ok(())
}
