//! `berth registry list|gc`: the built-in OCI registry (at `/v2/` of the
//! API address) — what it holds and its garbage collection.

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
