//! `berth registry list|gc|login|logout|logins`: the built-in OCI
//! registry (at `/v2/` of the API address) — what it holds, its garbage
//! collection — and the other registries images are pulled from.

use anyhow::Result;

use crate::args::resolve_app;
use crate::cli::Global;
use crate::connect::connect;
use crate::output;
use crate::registry_args::{ImageCommand, RegistryCommand};

pub(crate) async fn registry(global: &Global, command: RegistryCommand) -> Result<()> {
    let client = connect(global, false).await?;
    match command {
        RegistryCommand::List => {
            let listing = client.registry_listing().await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&listing)?);
                return Ok(());
            }
            let mut rows = Vec::new();
            for repo in &listing.repositories {
                if repo.tags.is_empty() {
                    rows.push(vec![repo.name.clone(), "-".into(), "-".into()]);
                }
                for tag in &repo.tags {
                    rows.push(vec![repo.name.clone(), tag.tag.clone(), tag.digest.clone()]);
                }
            }
            output::table(&["REPOSITORY", "TAG", "DIGEST"], &rows);
            say!(
                "{} repositories, {} on disk",
                listing.repositories.len(),
                output::bytes(listing.disk_bytes)
            );
        }
        RegistryCommand::Login {
            host,
            username,
            password_stdin,
            plain_http,
        } => {
            if !password_stdin {
                anyhow::bail!(
                    "pass the password on standard input: echo \"$TOKEN\" | berth registry login {host} -u {username} --password-stdin"
                );
            }
            let mut password = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut password)?;
            let password = password.trim_end_matches(['\r', '\n']).to_string();
            client
                .registry_login(&berth_proto::RegistryLogin {
                    host: host.clone(),
                    username: username.clone(),
                    password,
                    plain_http,
                })
                .await?;
            say!(
                "signed in to {host} as {username}: `berth deploy --image {host}/NAME:TAG` pulls from it"
            );
        }
        RegistryCommand::Logout { host } => {
            client.registry_logout(&host).await?;
            say!("berth no longer signs in to {host}");
        }
        RegistryCommand::Logins => {
            let logins = client.registry_logins().await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&logins)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = logins
                .iter()
                .map(|login| {
                    vec![
                        login.host.clone(),
                        login.username.clone(),
                        if login.plain_http { "http" } else { "https" }.to_string(),
                    ]
                })
                .collect();
            output::table(&["HOST", "USER", "OVER"], &rows);
        }
        RegistryCommand::Gc => {
            let report = client.registry_gc().await?;
            if global.json {
                say!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            say!(
                "removed {} manifests, {} blobs ({}) and {} stopped uploads; {} blobs kept, {} on disk",
                report.manifests_removed,
                report.blobs_removed,
                output::bytes(report.bytes_freed),
                report.uploads_removed,
                report.blobs_kept,
                output::bytes(report.disk_bytes)
            );
        }
    }
    Ok(())
}

pub(crate) async fn image(global: &Global, command: ImageCommand) -> Result<()> {
    let ImageCommand::Build { tag, app } = command;
    let app = resolve_app(&app)?;
    let client = connect(global, false).await?;
    let built = client.build_image(&app, tag.as_deref()).await?;
    if global.json {
        say!("{}", serde_json::to_string_pretty(&built)?);
        return Ok(());
    }
    say!(
        "stored {}:{} ({}) in berth's registry",
        built.repository,
        built.tag,
        built.digest
    );
    say!(
        "run it here with `berth deploy --image {}:{}`, or copy it out with skopeo copy docker://SERVER/{}:{} …",
        built.repository,
        built.tag,
        built.repository,
        built.tag
    );
    Ok(())
}
