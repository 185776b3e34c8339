//! `berth domains`: custom domains the router serves for an app; `berth
//! certs`: the certificates of its HTTPS.

use anyhow::Result;

use crate::args::resolve_app;
use crate::cli::{DomainsCommand, Global};
use crate::connect::connect;
use crate::output;

pub async fn domains(global: &Global, command: DomainsCommand) -> Result<()> {
    match command {
        DomainsCommand::Add { name, tls, app } => {
            let app = resolve_app(&app)?;
            let added = connect(global, false)
                .await?
                .add_domain(&app, &name, tls == "internal")
                .await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&added)?);
            } else {
                say!("{} → {}", added.name, added.app);
                eprintln!(
                    "==> the router serves it once the name resolves to this machine (a DNS A/AAAA record)"
                );
            }
            Ok(())
        }
        DomainsCommand::List { app } => {
            let domains = connect(global, false)
                .await?
                .domains(app.as_deref())
                .await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&domains)?);
            } else {
                let rows: Vec<Vec<String>> = domains
                    .into_iter()
                    .map(|domain| {
                        vec![
                            domain.name,
                            domain.app,
                            if domain.from_spec {
                                "berth.toml"
                            } else {
                                "berth domains add"
                            }
                            .to_string(),
                            if domain.tls_internal {
                                "internal"
                            } else {
                                "auto"
                            }
                            .to_string(),
                            domain.created_at,
                        ]
                    })
                    .collect();
                output::table(&["DOMAIN", "APP", "FROM", "TLS", "ADDED"], &rows);
            }
            Ok(())
        }
        DomainsCommand::Check { name } => {
            let check = connect(global, false).await?.check_domain(&name).await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&check)?);
                return Ok(());
            }
            say!("{} → app {}", check.name, check.app);
            let resolved = if check.resolves_to.is_empty() {
                "does not resolve".to_string()
            } else {
                check.resolves_to.join(", ")
            };
            let here = if check.points_here {
                "this machine"
            } else {
                "not this machine"
            };
            say!("  resolves to: {resolved} ({here})");
            say!("  certificate: {}", check.issuer);
            if let Some(expires) = &check.expires {
                say!("  expires:     {expires}");
            }
            if let Some(renews) = &check.renews {
                say!("  renews:      {renews}");
            }
            if let Some(problem) = &check.problem {
                say!("  problem:     {problem}");
            }
            if let Some(next) = &check.next_attempt {
                say!("  next try:    {next}");
            }
            Ok(())
        }
        DomainsCommand::Remove { name, app } => {
            let app = resolve_app(&app)?;
            connect(global, false)
                .await?
                .remove_domain(&app, &name)
                .await?;
            if !global.json {
                eprintln!("==> {name} is no longer served for {app}");
            }
            Ok(())
        }
    }
}

/// Prints berth's own CA certificate.
pub async fn certs_root(global: &Global) -> Result<()> {
    let pem = connect(global, false).await?.certs_root().await?;
    // On stderr: the PEM alone on stdout goes to a file or trust store.
    if let Some(fingerprint) = crate::contexts::root_fingerprint(&pem) {
        eprintln!("SHA-256 fingerprint: {fingerprint}");
    }
    say!("{}", pem.trim_end());
    Ok(())
}
