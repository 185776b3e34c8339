//! Validating the build, deploy and job sections.

use super::shapes::*;
use super::values::*;
use super::*;

pub(super) fn validate_build(
    file: &str,
    build: RawBuild,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> BuildSpec {
    let mut spec = BuildSpec {
        bin: build.bin,
        package: build.package,
        command: build.command.filter(|command| !command.trim().is_empty()),
        features: build.features,
        database: build.database.unwrap_or(false),
        ..BuildSpec::default()
    };
    let mut env = build.args;
    env.extend(build.env);
    spec.env = validate_env(env, "[build] env", problems, &mut Vec::new(), file);
    for host in build.hosts {
        let name = host.get_ref().trim_end_matches('.').to_ascii_lowercase();
        let bare = name.strip_prefix("*.").unwrap_or(&name);
        let valid = !bare.is_empty()
            && bare.len() <= 253
            && bare.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if valid {
            spec.hosts.push(name);
        } else {
            problems.at(
                &host,
                format!(
                    "[build] hosts: `{}` is not a host name (a name such as \"registry.example.com\", or \"*.example.com\")",
                    host.get_ref()
                ),
            );
        }
    }
    for package in build.packages {
        if crate::valid_debian_package(package.get_ref()) {
            if !spec.packages.contains(package.get_ref()) {
                spec.packages.push(package.into_inner());
            }
        } else {
            problems.at(
                &package,
                format!(
                    "[build] packages: `{}` is not a Debian package name (lowercase letters, digits, `+`, `-` and `.`, such as \"protobuf-compiler\")",
                    package.get_ref()
                ),
            );
        }
    }
    for name in build.secrets {
        match crate::check_env_key(name.get_ref()) {
            Ok(()) => spec.secrets.push(name.into_inner()),
            Err(why) => problems.at(&name, format!("[build] secrets: {why}")),
        }
    }
    if let Some(image) = build.image {
        spec.builder = BuilderKind::Image { image };
    } else if let Some(path) = build.dockerfile {
        spec.builder = BuilderKind::Dockerfile { path };
    }
    if let Some(builder) = &build.builder {
        match builder.get_ref().as_str() {
            "cargo" => spec.builder = BuilderKind::Cargo,
            "dockerfile" => {
                if !matches!(spec.builder, BuilderKind::Dockerfile { .. }) {
                    spec.builder = BuilderKind::Dockerfile {
                        path: "Dockerfile".into(),
                    };
                }
            }
            "image" => {
                if !matches!(spec.builder, BuilderKind::Image { .. }) {
                    problems.at(
                        builder,
                        "builder = \"image\" needs `image = \"…\"` in [build]".into(),
                    );
                }
            }
            other if other.contains('/') => warnings.push(format!(
                "{file}: buildpack builder `{other}` is ignored; berth builds with cargo"
            )),
            other => problems.at(
                builder,
                format!("unknown builder `{other}` (use \"cargo\", \"dockerfile\" or \"image\")"),
            ),
        }
    }
    for (key, present) in [
        ("buildpacks", build.buildpacks.is_some()),
        ("build-target", build.build_target.is_some()),
        ("ignorefile", build.ignorefile.is_some()),
    ] {
        if present {
            let why = if matches!(spec.builder, BuilderKind::Cargo) {
                "berth builds with cargo"
            } else {
                "berth does not build images yet"
            };
            warnings.push(format!("{file}: [build] {key} is ignored: {why}"));
        }
    }
    spec
}

pub(super) fn validate_deploy(
    file: &str,
    deploy: RawDeploy,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> DeploySpec {
    let mut spec = DeploySpec {
        release_command: deploy
            .release_command
            .filter(|command| !command.trim().is_empty()),
        post_deploy_command: deploy
            .post_deploy_command
            .filter(|command| !command.trim().is_empty()),
        ..DeploySpec::default()
    };
    if let Some(strategy) = &deploy.strategy {
        spec.strategy = match strategy.get_ref().as_str() {
            "rolling" => DeployStrategy::Rolling,
            "bluegreen" => DeployStrategy::Bluegreen,
            "immediate" => DeployStrategy::Immediate,
            "canary" => DeployStrategy::Canary,
            other => {
                problems.at(
                    strategy,
                    format!(
                        "unknown deploy strategy `{other}` (use \"rolling\", \"bluegreen\", \"canary\" or \"immediate\")"
                    ),
                );
                DeployStrategy::Rolling
            }
        };
    }
    if let Some(timeout) = &deploy.wait_timeout
        && let Some(duration) = duration_value(timeout, Unit::Seconds, "wait_timeout", problems)
    {
        spec.wait_timeout = duration;
    }
    if let Some(timeout) = &deploy.release_command_timeout
        && let Some(duration) =
            duration_value(timeout, Unit::Seconds, "release_command_timeout", problems)
    {
        spec.release_command_timeout = duration;
    }
    if deploy.max_unavailable.is_some() {
        warnings.push(format!("{file}: [deploy] max_unavailable is ignored"));
    }
    spec
}

pub(super) fn validate_jobs(raw_jobs: Vec<RawJob>, problems: &mut Problems<'_>) -> Vec<JobSpec> {
    let mut jobs: Vec<JobSpec> = Vec::new();
    for (index, raw) in raw_jobs.into_iter().enumerate() {
        let label = format!("[[jobs]] #{}", index + 1);
        let Some(name) = &raw.name else {
            problems.found.push(SpecProblem {
                location: None,
                message: format!("{label} needs a name"),
            });
            continue;
        };
        let name_text = name.get_ref().clone();
        if !valid_process_name(&name_text) {
            problems.at(
                name,
                format!("job name `{name_text}` must be lowercase letters, digits, `-` or `_`, starting with a letter"),
            );
        } else if jobs.iter().any(|job| job.name == name_text) {
            problems.at(name, format!("there are two jobs named `{name_text}`"));
        }
        let command = match &raw.command {
            Some(command) if !command.get_ref().trim().is_empty() => {
                command.get_ref().trim().to_string()
            }
            Some(command) => {
                problems.at(command, format!("job `{name_text}` has an empty command"));
                String::new()
            }
            None => {
                problems.at(name, format!("job `{name_text}` needs a command"));
                String::new()
            }
        };
        let time_zone = raw.time_zone.as_ref().map(|zone| zone.get_ref().clone());
        if let Some(schedule) = &raw.schedule
            && let Err(message) = Schedule::parse(schedule.get_ref(), time_zone.as_deref())
        {
            problems.at(schedule, message);
        } else if raw.schedule.is_none()
            && let Some(zone) = &raw.time_zone
        {
            problems.at(zone, "time_zone needs a schedule".into());
        }
        let count = |value: &Option<Spanned<i64>>,
                     key: &str,
                     default: u32,
                     min: i64,
                     max: i64,
                     problems: &mut Problems<'_>|
         -> u32 {
            match value {
                None => default,
                Some(spanned) if (min..=max).contains(spanned.get_ref()) => {
                    *spanned.get_ref() as u32
                }
                Some(spanned) => {
                    problems.at(spanned, format!("`{key}` must be from {min} to {max}"));
                    default
                }
            }
        };
        let tasks = count(&raw.tasks, "tasks", 1, 1, 10_000, problems);
        let parallelism = count(
            &raw.parallelism,
            "parallelism",
            tasks,
            1,
            i64::from(tasks),
            problems,
        );
        let max_retries = count(&raw.max_retries, "max_retries", 3, 0, 10, problems);
        let timeout = raw
            .timeout
            .as_ref()
            .and_then(|timeout| duration_value(timeout, Unit::Seconds, "timeout", problems))
            .unwrap_or(Duration::from_secs(600));
        let overlap = match raw
            .overlap
            .as_ref()
            .map(|overlap| (overlap, overlap.get_ref().as_str()))
        {
            None | Some((_, "skip")) => OverlapPolicy::Skip,
            Some((_, "allow")) => OverlapPolicy::Allow,
            Some((_, "replace")) => OverlapPolicy::Replace,
            Some((spanned, other)) => {
                problems.at(
                    spanned,
                    format!(
                        "unknown overlap policy `{other}` (use \"skip\", \"allow\" or \"replace\")"
                    ),
                );
                OverlapPolicy::Skip
            }
        };
        jobs.push(JobSpec {
            name: name_text,
            command,
            schedule: raw.schedule.map(Spanned::into_inner),
            time_zone,
            tasks,
            parallelism,
            max_retries,
            timeout,
            env: validate_env(raw.env, "the job's env", problems, &mut Vec::new(), ""),
            overlap,
        });
    }
    jobs
}
