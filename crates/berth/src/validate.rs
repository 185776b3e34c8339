//! `berth config validate`: what berth will do with a spec, before a deploy;
//! `berth export`: the same model written for another platform.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use berth_spec::{AppSpec, PROCFILE, PROJECT_FILE_NAMES, ParsedSpec};

/// Loads `path` (a spec file or a folder) and prints the model and warnings.
pub fn validate(path: &Path, json: bool) -> Result<()> {
    if let Some((files, blueprint)) = load_several(path)? {
        return validate_blueprint(&files, blueprint, json);
    }
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
        say!("{}", serde_json::to_string_pretty(&out)?);
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

/// A `render.yaml` (the file, or a folder where berth uses it) with
/// several services: each becomes an app.
fn load_several(path: &Path) -> Result<Option<(Vec<String>, berth_spec::Blueprint)>> {
    let (name, blueprint) = if path.is_file() {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if !yaml {
            return Ok(None);
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if name != berth_spec::RENDER_YAML && !berth_spec::is_blueprint(&text) {
            return Ok(None);
        }
        let default_binary = path.parent().and_then(package_name);
        let blueprint = berth_spec::parse_render(&name, &text, default_binary.as_deref())
            .map_err(|err| anyhow!("{err}"))?;
        (name, blueprint)
    } else {
        let tree = berth_spec::FolderTree::new(path);
        let Some((name, _)) = berth_spec::find_blueprint(&tree) else {
            return Ok(None);
        };
        match berth_spec::load_blueprint(&tree).map_err(|err| anyhow!("{err}"))? {
            Some(blueprint) => (name, blueprint),
            None => return Ok(None),
        }
    };
    Ok(Some((vec![name], blueprint)))
}

fn validate_blueprint(
    files: &[String],
    blueprint: berth_spec::Blueprint,
    json: bool,
) -> Result<()> {
    if json {
        let apps: Vec<_> = blueprint
            .apps
            .iter()
            .map(|(name, spec)| serde_json::json!({ "app": name, "spec": spec }))
            .collect();
        let out = serde_json::json!({
            "files": files,
            "apps": apps,
            "warnings": blueprint.warnings,
        });
        say!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for (index, (_, spec)) in blueprint.apps.iter().enumerate() {
        if index > 0 {
            say!();
        }
        print_summary(files, None, spec);
    }
    for warning in &blueprint.warnings {
        eprintln!("warning: {warning}");
    }
    eprintln!(
        "==> valid: {} apps{}",
        blueprint.apps.len(),
        if blueprint.warnings.is_empty() {
            String::new()
        } else {
            format!(" ({} warnings)", blueprint.warnings.len())
        }
    );
    Ok(())
}

/// Prints the model of the app in `dir` as `format` (see [`export_apps`]).
pub fn export(format: &str, dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!(
            "{} is not a folder: export reads an app's folder",
            dir.display()
        );
    }
    let package = package_name(dir);
    if let Some((_, blueprint)) = load_several(dir)? {
        return export_apps(format, blueprint.apps, package.as_deref(), dir);
    }
    let (_, parsed, _) = load(dir)?;
    let spec = parsed.map(|parsed| parsed.spec).unwrap_or_default();
    let name = spec
        .app
        .clone()
        .or(package.as_deref().map(berth_spec::app_name_from_package))
        .ok_or_else(|| anyhow!("{} has no app name: pass --app", dir.display()))?;
    export_apps(format, vec![(name, spec)], package.as_deref(), dir)
}

/// Prints `apps` as `format`: `fly` (a fly.toml), `dockerfile` (a
/// cargo-chef Dockerfile), `render` (one Blueprint for all), `cloudrun` or
/// `k8s` (manifests, one set per app). `binary` is the package's binary
/// (the app's name when unknown).
pub fn export_apps(
    format: &str,
    apps: Vec<(String, AppSpec)>,
    binary: Option<&str>,
    dir: &Path,
) -> Result<()> {
    let binary_of = |app: &str, spec: &AppSpec| {
        spec.build
            .bin
            .clone()
            .or(binary.map(str::to_string))
            .unwrap_or_else(|| app.to_string())
    };
    let single = |what: &str| -> Result<(String, AppSpec)> {
        match <[(String, AppSpec); 1]>::try_from(apps.clone()) {
            Ok([app]) => Ok(app),
            Err(_) => {
                let names: Vec<&str> = apps.iter().map(|(name, _)| name.as_str()).collect();
                bail!(
                    "{} holds {} apps ({}); {what} describes one: export it with --app NAME from the server",
                    dir.display(),
                    names.len(),
                    names.join(", ")
                )
            }
        }
    };
    match format {
        "fly" => {
            let (name, mut spec) = single("a fly.toml")?;
            spec.app.get_or_insert(name);
            crate::output::write_stdout(format_args!("{}", berth_spec::to_fly_toml(&spec)));
        }
        "dockerfile" => {
            let (name, spec) = single("a Dockerfile")?;
            crate::output::write_stdout(format_args!(
                "{}",
                berth_spec::to_dockerfile(&spec, &binary_of(&name, &spec))
            ));
        }
        "render" => {
            let default_binary = apps
                .first()
                .map(|(name, spec)| binary_of(name, spec))
                .unwrap_or_default();
            crate::output::write_stdout(format_args!(
                "{}",
                berth_spec::to_render_yaml(&apps, &default_binary)
            ));
        }
        "cloudrun" | "k8s" => {
            let kind = if format == "k8s" {
                berth_spec::Manifests::Kubernetes
            } else {
                berth_spec::Manifests::CloudRun
            };
            for (name, spec) in &apps {
                crate::output::write_stdout(format_args!(
                    "{}",
                    berth_spec::to_manifests(kind, spec, name, &binary_of(name, spec))
                ));
            }
        }
        other => bail!("unknown export format `{other}` (fly, dockerfile, render, cloudrun, k8s)"),
    }
    Ok(())
}

/// The package named by `dir`'s Cargo.toml: its default binary.
fn package_name(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
    berth_spec::parse_cargo_manifest("Cargo.toml", &text)
        .ok()
        .map(|package| package.name)
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
        } else if name.ends_with(".toml") || berth_spec::SPEC_FILE_NAMES.contains(&name.as_str()) {
            berth_spec::parse_spec(&name, &text)
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            let default_binary = path.parent().and_then(package_name);
            berth_spec::parse_manifests(&name, &text, default_binary.as_deref()).map(|(app, mut spec)| {
                spec.app.get_or_insert(app);
                ParsedSpec {
                    spec,
                    warnings: Vec::new(),
                }
            })
        } else if name.ends_with(".toml") {
            berth_spec::parse_spec(&name, &text)
        } else {
            bail!(
                "{name}: berth reads berth.toml, fly.toml (or any *.toml in their format), Procfile, render.yaml and Cloud Run or Kubernetes manifests (*.yaml)"
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
    let package = package_name(path);
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
    let row = |key: &str, value: String| say!("{key:<11} {value}");
    row(
        "files",
        if files.is_empty() {
            "none: zero config".into()
        } else {
            files.join(", ")
        },
    );
    if spec.jobs_only {
        row("runs", "its jobs only (no long-running process)".into());
    }
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
    let builder = match &spec.build.builder {
        berth_spec::BuilderKind::Cargo if spec.build.command_only => format!(
            "its build command only, with this server's toolchain: {}",
            spec.build.command.as_deref().unwrap_or("(none)")
        ),
        berth_spec::BuilderKind::Cargo => "cargo".to_string(),
        berth_spec::BuilderKind::Dockerfile { path } => {
            format!("the Dockerfile {path} (berth does not build Dockerfiles yet)")
        }
        berth_spec::BuilderKind::Image { image } => {
            format!("the image {image} (berth does not run images yet)")
        }
    };
    row(
        "build",
        match &spec.build.bin {
            Some(bin) => format!("{builder}, binary {bin}{features}"),
            None => format!("{builder}{features}"),
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
    let check = std::iter::once(&spec.http.check)
        .chain(&spec.http.extra_checks)
        .map(|check| {
            let port = check
                .port
                .map(|port| format!(" on port {port}"))
                .unwrap_or_default();
            match &check.http_path {
                Some(path) => format!("{} {path}{port}", check.method()),
                None => format!("TCP connect{port}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
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
    if spec.http.force_https || !spec.http.domains.is_empty() {
        let mut edge = Vec::new();
        if spec.http.force_https {
            edge.push("plain HTTP redirects to HTTPS".to_string());
        }
        if !spec.http.domains.is_empty() {
            edge.push(format!("domains {}", spec.http.domains.join(", ")));
        }
        row("https", edge.join("; "));
    }
    if let Some(site) = &spec.site {
        row(
            "site",
            format!(
                "a static site: {} served by the router at / ({} rewrites and redirects, {} headers), no process",
                site.dir,
                site.rules.len(),
                site.headers.len()
            ),
        );
    }
    for statics in &spec.statics {
        row(
            "statics",
            format!(
                "{} served by the router from {}",
                statics.url_prefix, statics.guest_path
            ),
        );
    }
    for service in &spec.tcp_services {
        let ports: Vec<String> = service
            .ports
            .iter()
            .map(|port| {
                let mut text = port.port.to_string();
                if port.tls {
                    text.push_str(" (TLS)");
                }
                text
            })
            .collect();
        row(
            "tcp",
            format!(
                "public ports {} forwarded to internal_port {}",
                ports.join(", "),
                service.internal_port
            ),
        );
    }
    if let Some(signal) = spec.kill_signal {
        row(
            "stop",
            format!(
                "{} then SIGKILL after {}",
                signal.name(),
                berth_spec::format_duration(spec.kill_timeout)
            ),
        );
    }
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
    let shared_postgres = spec
        .resources
        .postgres_from
        .as_ref()
        .map(|owner| format!("the database of {owner} (DATABASE_URL)"));
    let shared_redis = spec
        .resources
        .redis_from
        .as_ref()
        .map(|owner| format!("the Redis of {owner} (REDIS_URL)"));
    resources.extend(shared_postgres.as_deref());
    resources.extend(shared_redis.as_deref());
    if !spec.resources.shared_with.is_empty() {
        row(
            "shares",
            format!(
                "its database/Redis with {}",
                spec.resources.shared_with.join(", ")
            ),
        );
    }
    for from in &spec.env_from {
        let source = match &from.source {
            berth_spec::EnvSource::Generated => "generated once, kept as a secret".to_string(),
            berth_spec::EnvSource::AskOnce => "a secret you set once (berth secrets set)".into(),
            berth_spec::EnvSource::Postgres { property } => format!("database {property}"),
            berth_spec::EnvSource::Redis { property } => format!("Redis {property}"),
            berth_spec::EnvSource::AppAddress { app, property } => {
                format!("{property} of app {app}")
            }
        };
        row("env", format!("{}: {source}", from.key));
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
