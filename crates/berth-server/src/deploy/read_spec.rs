//! The spec of an upload: read from its berth.toml, fly.toml, Procfile,
//! Blueprint or Shuttle project (or a Dockerfile or image alone), and
//! checked against the bounds every format shares.

use std::path::Path;

use berth_proto::DeployProgress;
use berth_spec::{AppSpec, BuilderKind};

use super::failure::{DeployFailure, Progress, say};

/// Reads berth.toml or fly.toml (and a Procfile) from an unpacked tree;
/// none means defaults.
pub(super) fn read_spec(
    dir: &Path,
    app: &str,
    progress: &Progress,
    image: bool,
) -> Result<AppSpec, DeployFailure> {
    let tree = berth_spec::FolderTree::new(dir);
    let parsed = berth_spec::load_project_for(&tree, Some(app))
        .map_err(|err| DeployFailure::before_release(err.to_string()))?;
    if let Some(parsed) = parsed {
        for warning in parsed.warnings {
            let _ = progress.send(DeployProgress::Warning { message: warning });
        }
        let blueprint = berth_spec::find_blueprint(&tree).map(|(name, _)| name);
        let mut names: Vec<&str> = berth_spec::PROJECT_FILE_NAMES
            .iter()
            .copied()
            .filter(|name| dir.join(name).is_file())
            .chain(blueprint.as_deref())
            .collect();
        if let Some(shuttle) = &parsed.spec.shuttle {
            say(
                progress,
                format!(
                    "a Shuttle project: bin `{}` of package `{}`, run with Shuttle's runtime API",
                    shuttle.bin, shuttle.package
                ),
            );
            names.extend(
                [berth_spec::SHUTTLE_TOML]
                    .into_iter()
                    .filter(|name| dir.join(name).is_file()),
            );
        }
        if !names.is_empty() {
            say(progress, format!("using {}", names.join(" and ")));
        }
        return Ok(parsed.spec);
    }
    if image && !dir.join("Cargo.toml").is_file() {
        say(
            progress,
            "no berth.toml or fly.toml: the image's own command serves as `web`",
        );
        return Ok(AppSpec::default());
    }
    if !dir.join("Cargo.toml").is_file() && dir.join("Dockerfile").is_file() {
        say(
            progress,
            "no berth.toml or fly.toml: building the Dockerfile",
        );
        let mut spec = AppSpec::default();
        spec.build.builder = BuilderKind::Dockerfile {
            path: "Dockerfile".into(),
        };
        return Ok(spec);
    }
    if !dir.join("Cargo.toml").is_file() {
        return Err(DeployFailure::before_release(
            "the upload has no Cargo.toml, berth.toml or fly.toml; run berth in the app's folder",
        ));
    }
    say(
        progress,
        "no berth.toml or fly.toml: zero config (the package's binary serves as `web`)",
    );
    Ok(AppSpec::default())
}

/// Bounds every format's spec shares, whatever its own reader allows: a
/// group's scaling never goes past the instances a group may have, and its
/// env is one a process can be given.
pub(super) fn within_limits(spec: &AppSpec) -> Result<(), DeployFailure> {
    if spec.env.len() > berth_spec::MAX_ENV_VARS {
        return Err(DeployFailure::before_release(format!(
            "the spec sets {} env vars; at most {} fit",
            spec.env.len(),
            berth_spec::MAX_ENV_VARS
        )));
    }
    for (key, value) in &spec.env {
        berth_spec::check_env_key(key).map_err(DeployFailure::before_release)?;
        if value.contains('\0') || value.len() > berth_spec::MAX_ENV_VALUE_BYTES {
            return Err(DeployFailure::before_release(format!(
                "env var `{key}` holds a NUL byte or more than {} bytes",
                berth_spec::MAX_ENV_VALUE_BYTES
            )));
        }
    }
    let cap = berth_spec::MAX_INSTANCES_PER_GROUP;
    let scaling = &spec.http.scaling;
    for (what, count) in [("minimum", Some(scaling.min)), ("maximum", scaling.max)] {
        if let Some(count) = count.filter(|count| *count > cap) {
            return Err(DeployFailure::before_release(format!(
                "the spec's {what} of {count} instances is more than the {cap} a process group may have"
            )));
        }
    }
    Ok(())
}
