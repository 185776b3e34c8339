//! `berth config validate`: what berth will do with a spec, before a deploy;
//! `berth export`: the same model written for another platform.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use berth_spec::{AppSpec, PROCFILE, PROJECT_FILE_NAMES, ParsedSpec};

/// Loads `path` (a spec file or a folder) and prints the model and warnings.
pub fn validate(path: &Path, json: bool) -> Result<()> {
    let (files, parsed, package) = load(path)?;
    let (spec, warnings) = match parsed {
        Some(parsed) => (parsed.spec, parsed.warnings),
        None => (AppSpec::default(), Vec::new()),
    };
    if json {
        let out = serde_json::json!({
            "files": files,
            "package": package,
            "spec": spec,
            "warnings": warnings,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    print_summary(&files, package.as_deref(), &spec);
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    eprintln!(
        "==> valid{}",
        if warnings.is_empty() {
            String::new()
        } else {
            format!(" ({} warnings)", warnings.len())
        }
    );
    Ok(())
}

/// Prints the model of the app in `dir` as `format` (`fly`, `dockerfile`).
pub fn export(format: &str, dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!(
            "{} is not a folder: export reads an app's folder",
            dir.display()
        );
    }
    let (_, parsed, package) = load(dir)?;
    let spec = parsed.map(|parsed| parsed.spec).unwrap_or_default();
    export_spec(format, spec, package.as_deref(), dir)
}

/// Prints `spec` as `format`; `name` is the app (or package) name that
/// names it and its binary when the spec does not.
pub fn export_spec(format: &str, spec: AppSpec, name: Option<&str>, dir: &Path) -> Result<()> {
    let package = name.map(str::to_string);
    match format {
        "fly" => {
            let mut spec = spec;
            if spec.app.is_none() {
                spec.app = package.as_deref().map(berth_spec::app_name_from_package);
            }
            print!("{}", berth_spec::to_fly_toml(&spec));
        }
        "dockerfile" => {
            let binary =
                spec.build.bin.clone().or(package).ok_or_else(|| {
                    anyhow!("{} has no Cargo.toml to name the binary", dir.display())
                })?;
            print!("{}", berth_spec::to_dockerfile(&spec, &binary));
        }
        other => bail!("unknown export format `{other}` (fly, dockerfile)"),
    }
    Ok(())
}

type Loaded = (Vec<String>, Option<ParsedSpec>, Option<String>);

fn load(path: &Path) -> Result<Loaded> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    if path.is_file() {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = read(path)?;
        let parsed = if name.starts_with(PROCFILE) {
            berth_spec::parse_procfile(&name, &text)
        } else if name.ends_with(".toml") {
            berth_spec::parse_spec(&name, &text)
        } else {
            bail!(
                "{name}: berth reads berth.toml, fly.toml (or any *.toml in their format) and Procfile"
            );
        }
        .map_err(|err| anyhow!("{err}"))?;
        return Ok((vec![name], Some(parsed), None));
    }
    if !path.is_dir() {
        bail!("{} is neither a file nor a folder", path.display());
    }
    let files: Vec<String> = PROJECT_FILE_NAMES
        .iter()
        .chain(&[berth_spec::SHUTTLE_TOML])
        .filter(|name| path.join(name).is_file())
        .map(|name| name.to_string())
        .collect();
    let package = match std::fs::read_to_string(path.join("Cargo.toml")) {
        Ok(text) => berth_spec::parse_cargo_manifest("Cargo.toml", &text)
            .ok()
            .map(|package| package.name),
        Err(_) => None,
    };
    if files.is_empty() && !path.join("Cargo.toml").is_file() {
        bail!(
            "{} has no berth.toml, fly.toml, Procfile or Cargo.toml",
            path.display()
        );
    }
    let parsed = berth_spec::load_project(&berth_spec::FolderTree::new(path))
        .map_err(|err| anyhow!("{err}"))?;
    Ok((files, parsed, package))
}

fn print_summary(files: &[String], package: Option<&str>, spec: &AppSpec) {
    let row = |key: &str, value: String| println!("{key:<11} {value}");
    row(
        "files",
        if files.is_empty() {
            "none: zero config".into()
        } else {
            files.join(", ")
        },
    );
    row(
        "app",
        match (&spec.app, package) {
            (Some(app), _) => app.clone(),
            (None, Some(package)) => format!("{package} (the Cargo package)"),
            (None, None) => "(named with --app)".into(),
        },
    );
    let features = if spec.build.features.is_empty() {
        String::new()
    } else {
        format!(", features {}", spec.build.features.join(","))
    };
    row(
        "build",
        match &spec.build.bin {
            Some(bin) => format!("{:?}, binary {bin}{features}", spec.build.builder),
            None => format!("{:?}{features}", spec.build.builder).to_lowercase(),
        },
    );
    if let Some(shuttle) = &spec.shuttle {
        let secrets = shuttle
            .secrets_file
            .as_deref()
            .map_or("no secrets file".to_string(), |file| {
                format!("{file} becomes berth secrets")
            });
        row(
            "shuttle",
            format!(
                "#[shuttle_runtime::main] in `{}` of package {}: SHUTTLE_* env and the runtime API from berth; {secrets}",
                shuttle.bin, shuttle.package
            ),
        );
        if !shuttle.resources.is_empty() {
            row("provides", shuttle.resources.join(", "));
        }
    }
    let default_binary = spec.build.bin.as_deref().or(package);
    let processes = spec.process_commands(default_binary.unwrap_or("<the package's binary>"));
    for (name, command) in &processes {
        let serves = if spec.serves_http(name) {
            match spec.http.internal_port {
                Some(port) => format!("HTTP on internal_port {port}"),
                None => "HTTP on $PORT".into(),
            }
        } else {
            "no HTTP".into()
        };
        let vm = spec.vm_for(name);
        row(
            "process",
            format!(
                "{name}: {command}  ({serves}; {} MiB, {} CPU)",
                vm.memory_mb, vm.cpus
            ),
        );
    }
    if let Some(command) = &spec.deploy.release_command {
        row("release", command.clone());
    }
    let check = match &spec.http.check.http_path {
        Some(path) => format!("GET {path}"),
        None => "TCP connect".into(),
    };
    let scaling = &spec.http.scaling;
    let scale = if scaling.is_active() {
        format!(
            "autoscaled {}..{}, soft {}, hard {}, to zero after {}",
            scaling.min,
            scaling
                .max
                .map_or("the `berth scale` count".to_string(), |max| max.to_string()),
            scaling
                .soft_limit
                .map_or("-".to_string(), |limit| limit.to_string()),
            scaling
                .hard_limit
                .map_or("-".to_string(), |limit| limit.to_string()),
            if scaling.auto_stop && scaling.min == 0 {
                berth_spec::format_duration(scaling.idle_timeout)
            } else {
                "never".into()
            }
        )
    } else {
        "manual (`berth scale`)".into()
    };
    row("http", format!("health check {check}; {scale}"));
    for job in &spec.jobs {
        let when = job
            .schedule
            .as_ref()
            .map_or("by hand".to_string(), |schedule| {
                format!("schedule `{schedule}`")
            });
        row("job", format!("{}: {} ({when})", job.name, job.command));
    }
    let mut resources = Vec::new();
    if spec.resources.postgres {
        resources.push("postgres (DATABASE_URL)");
    }
    if spec.resources.redis {
        resources.push("redis (REDIS_URL)");
    }
    if !resources.is_empty() {
        row("resources", resources.join(", "));
    }
    for mount in &spec.mounts {
        row(
            "volume",
            format!("{} at {}", mount.source, mount.destination),
        );
    }
}
