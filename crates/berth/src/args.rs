//! Reading what the user gave: which app (from --app or the folder), KEY=VALUE
//! pairs, a typed confirmation; and following a deploy's progress to its end.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use berth_client::NdjsonStream;
use berth_proto::DeployProgress;
use berth_spec::{app_name_from_package, parse_cargo_manifest};

use crate::cli::AppArg;
use crate::output;

/// Asks the person at the terminal to type `expected` to go on; without a
/// terminal, refuses and says to pass --yes.
pub(crate) fn confirm(question: &str, expected: &str) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        bail!("this needs confirmation: pass --yes");
    }
    eprint!("{question} Type `{expected}` to confirm: ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != expected {
        bail!("not confirmed; nothing changed");
    }
    Ok(())
}

/// The app a folder holds: `app` in berth.toml or fly.toml, else the package name.
pub(crate) fn app_from_dir(dir: &Path) -> Result<String> {
    let tree = berth_spec::FolderTree::new(dir);
    let parsed = berth_spec::load_project(&tree).map_err(|err| anyhow!("{err}"))?;
    if let Some(app) = parsed.as_ref().and_then(|parsed| parsed.spec.app.clone()) {
        return Ok(app);
    }
    // A virtual workspace: named after the binary it deploys.
    if let Some(members) = berth_spec::workspace_members(&tree).map_err(|err| anyhow!("{err}"))? {
        let spec = parsed.map(|parsed| parsed.spec).unwrap_or_default();
        let chosen =
            berth_spec::choose_packages(&members, &spec).map_err(|err| anyhow!("{err}"))?;
        let name = chosen
            .bin
            .or_else(|| chosen.packages.first().cloned())
            .unwrap_or_default();
        return Ok(app_name_from_package(&name));
    }
    let manifest = dir.join("Cargo.toml");
    if manifest.is_file() {
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("cannot read {}", manifest.display()))?;
        let package = parse_cargo_manifest("Cargo.toml", &text).map_err(|err| anyhow!("{err}"))?;
        return Ok(app_name_from_package(&package.name));
    }
    bail!(
        "{} has no Cargo.toml, berth.toml or fly.toml: run berth in your app's folder, or pass --app",
        dir.display()
    )
}

pub(crate) fn resolve_app(arg: &AppArg) -> Result<String> {
    match &arg.app {
        Some(app) => Ok(app.clone()),
        None => {
            let cwd = std::env::current_dir().context("cannot read the current folder")?;
            app_from_dir(&cwd).context("which app? pass --app NAME")
        }
    }
}

pub(crate) fn parse_pairs(pairs: &[String], what: &str) -> Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(key, value)| (key.trim().to_string(), value.to_string()))
                .ok_or_else(|| anyhow!("`{pair}` is not {what}"))
        })
        .collect()
}

pub(crate) async fn finish_progress(
    mut stream: NdjsonStream<DeployProgress>,
    json: bool,
) -> Result<()> {
    // Build output shown as it streamed is not shown again in the failure.
    let mut shown = std::collections::HashSet::new();
    while let Some(line) = stream.next().await? {
        if let DeployProgress::Build { line } = &line
            && !json
        {
            shown.insert(line.clone());
        }
        match output::progress(&line, json) {
            None => {}
            Some(Ok((release, url))) => {
                if !json {
                    if release == 0 {
                        eprintln!("==> saved");
                    } else {
                        eprintln!("==> v{release} is live");
                        say!("{url}");
                    }
                }
                return Ok(());
            }
            Some(Err(message)) => bail!("{}", once(&message, &shown)),
        }
    }
    bail!("the server closed the deploy stream without a result; see `berth events`")
}

/// `message` without the lines already in `shown` (a build's errors,
/// streamed above it), saying where they are instead.
fn once(message: &str, shown: &std::collections::HashSet<String>) -> String {
    let kept: Vec<&str> = message
        .lines()
        .filter(|line| line.trim().is_empty() || !shown.contains(*line))
        .collect();
    if kept.len() == message.lines().count() {
        return message.to_string();
    }
    let mut text = kept.join("\n").trim_end().to_string();
    text.push_str("\n(the compiler's errors are shown above)");
    text
}
