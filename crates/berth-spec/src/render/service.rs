//! One Blueprint service as a berth app: runtime, commands, cron, health,
//! scaling, disk and plan (its env vars are [`super::env`]'s).

use std::collections::BTreeMap;
use std::time::Duration;

use super::context::RENDER_PLANS;
use super::context::{Problems, Shared};
use super::env;
use super::raw::{RawEnvVar, RawService};
use crate::{AppSpec, BuilderKind, HealthCheck, JobSpec, MountSpec, OverlapPolicy, VmSpec};

/// Converts `service` (with its env vars, groups expanded) into an app;
/// `None` when a problem leaves nothing to convert.
pub(super) fn convert(
    shared: &Shared<'_>,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
    service: &RawService,
    vars: Vec<RawEnvVar>,
) -> Option<(String, AppSpec)> {
    let file = shared.file;
    let default_binary = shared.default_binary;
    let app_of = crate::app_name_from_package;
    let app = app_of(&service.name);
    let mut spec = AppSpec {
        app: Some(app.clone()),
        ..AppSpec::default()
    };
    let mut ignored = Vec::new();
    let is_web = match service.kind.as_str() {
        "web" => true,
        "pserv" => {
            warnings.push(format!(
                "{file}: private service `{}` is served like a web service (berth's router answers only on this machine)",
                service.name
            ));
            true
        }
        "worker" | "cron" => false,
        other => {
            problems.at(
                &service.name,
                Some("type"),
                format!(
                    "service `{}` has type `{other}`; berth knows web, pserv, worker, cron and keyvalue",
                    service.name
                ),
            );
            return None;
        }
    };

    let runtime = service
        .runtime
        .as_deref()
        .or(service.env.as_deref())
        .unwrap_or(if service.image.is_some() {
            "image"
        } else {
            "rust"
        });
    match runtime {
        "rust" => {}
        "docker" => {
            spec.build.builder = BuilderKind::Dockerfile {
                path: service
                    .dockerfile_path
                    .clone()
                    .unwrap_or_else(|| "./Dockerfile".into()),
            };
        }
        "image" => match &service.image {
            Some(image) => {
                spec.build.builder = BuilderKind::Image {
                    image: image.url.clone(),
                }
            }
            None => problems.at(
                &service.name,
                Some("runtime"),
                format!("service `{}` has runtime image but no image.url", service.name),
            ),
        },
        "static" => {
            spec.site = super::site::static_site(problems, service);
            spec.build.command_only = true;
        }
        other if super::site::COMMAND_RUNTIMES.contains(&other) => {
            spec.build.command_only = true;
            if service.start_command.is_none() {
                problems.at(
                    &service.name,
                    Some("runtime"),
                    format!(
                        "service `{}` (runtime {other}) has no startCommand: berth runs {other} services by their commands",
                        service.name
                    ),
                );
            }
        }
        other => problems.at(
            &service.name,
            Some("runtime"),
            format!(
                "service `{}` has runtime `{other}`; berth deploys rust, static, {}, docker and image services",
                service.name,
                super::site::COMMAND_RUNTIMES.join(", ")
            ),
        ),
    }
    if service.docker_context.is_some() {
        ignored.push("dockerContext");
    }
    if let Some(build) = &service.build_command
        && spec.build.command_only
    {
        spec.build.command = Some(super::site::in_root_dir(service, build));
    } else if let Some(build) = &service.build_command {
        let words: Vec<&str> = build.split_whitespace().collect();
        if words.starts_with(&["cargo", "build"]) {
            if let Some(bin) = flag_value(&words, "--bin") {
                spec.build.bin = Some(bin.to_string());
            }
            if let Some(features) = flag_value(&words, "--features") {
                spec.build.features = features.split(',').map(str::to_string).collect();
            }
        } else {
            warnings.push(format!(
                "{file}: service `{}`: buildCommand `{build}` is not run; berth builds with cargo build --release",
                service.name
            ));
        }
    }

    let command = service
        .start_command
        .as_deref()
        .or(service.docker_command.as_deref())
        .map(|command| match spec.build.command_only {
            true => Some(super::site::in_root_dir(service, command)),
            false => start_command(command, default_binary),
        });
    let group = match service.kind.as_str() {
        "worker" => "worker",
        _ => crate::DEFAULT_PROCESS,
    };
    if service.kind == "cron" {
        let Some(schedule) = &service.schedule else {
            problems.at(
                &service.name,
                None,
                format!("cron job `{}` has no schedule", service.name),
            );
            return None;
        };
        if let Err(message) = crate::Schedule::parse(schedule, None) {
            problems.at(&service.name, Some("schedule"), message);
        }
        let from_image = !matches!(spec.build.builder, BuilderKind::Cargo);
        let command = match command.flatten() {
            Some(command) => command,
            // A Docker or image service without one runs the image's CMD.
            None if from_image => String::new(),
            None => match default_binary {
                Some(binary) => binary.to_string(),
                None => {
                    problems.at(
                        &service.name,
                        None,
                        format!("cron job `{}` has no startCommand", service.name),
                    );
                    return None;
                }
            },
        };
        spec.jobs_only = true;
        spec.jobs.push(JobSpec {
            name: service.name.clone(),
            command,
            schedule: Some(schedule.clone()),
            time_zone: None,
            tasks: 1,
            parallelism: 1,
            max_retries: 0,
            timeout: Duration::from_secs(12 * 3600),
            env: BTreeMap::new(),
            overlap: OverlapPolicy::Skip,
        });
    } else {
        if service.schedule.is_some() {
            ignored.push("schedule");
        }
        match command.flatten() {
            // The package's own binary as `web` is berth's default.
            Some(command)
                if group == crate::DEFAULT_PROCESS && Some(command.as_str()) == default_binary => {}
            Some(command) => {
                spec.processes.insert(group.to_string(), command);
            }
            // A Docker or image worker without one runs the image's CMD.
            None if group != crate::DEFAULT_PROCESS
                && !matches!(spec.build.builder, BuilderKind::Cargo) =>
            {
                spec.processes.insert(group.to_string(), String::new());
            }
            None if group != crate::DEFAULT_PROCESS => match default_binary {
                Some(binary) => {
                    spec.processes.insert(group.to_string(), binary.to_string());
                }
                None => problems.at(
                    &service.name,
                    None,
                    format!("worker `{}` has no startCommand", service.name),
                ),
            },
            None => {}
        }
        if !is_web {
            spec.http.processes = Some(Vec::new());
        }
    }

    if let Some(command) = &service.pre_deploy_command {
        spec.deploy.release_command = Some(match spec.build.command_only {
            true => super::site::in_root_dir(service, command),
            false => start_command(command, default_binary).unwrap_or_else(|| command.clone()),
        });
    }
    if let Some(path) = &service.health_check_path {
        if is_web {
            spec.http.check = HealthCheck {
                http_path: Some(path.clone()),
                ..spec.http.check.clone()
            };
        } else {
            ignored.push("healthCheckPath");
        }
    }
    if let Some(seconds) = service.max_shutdown_delay_seconds {
        spec.kill_timeout = Duration::from_secs(seconds.clamp(1, 300));
    }
    match (&service.scaling, service.num_instances) {
        (Some(scaling), _) => {
            let min = scaling.min_instances.unwrap_or(1);
            let max = scaling.max_instances.unwrap_or(min.max(1));
            if min > max {
                problems.at(
                    &service.name,
                    Some("scaling"),
                    format!(
                        "service `{}`: minInstances {min} is above maxInstances {max}",
                        service.name
                    ),
                );
            }
            spec.http.scaling.min = min;
            spec.http.scaling.max = Some(max);
            if is_web {
                spec.http.scaling.soft_limit = Some(DEFAULT_SOFT_LIMIT);
            }
            if scaling.target_cpu_percent.is_some() || scaling.target_memory_percent.is_some() {
                warnings.push(format!(
                    "{file}: service `{}`: targetCPUPercent/targetMemoryPercent are not measured; berth scales on in-flight requests ({DEFAULT_SOFT_LIMIT} per instance)",
                    service.name
                ));
            }
        }
        (None, Some(count)) => {
            spec.http.scaling.min = count;
            spec.http.scaling.max = Some(count);
        }
        (None, None) => {}
    }
    if let Some(disk) = &service.disk {
        let source = disk_name(&disk.name);
        if !crate::raw::valid_volume_name(&source) {
            problems.at(
                &service.name,
                Some("disk"),
                format!(
                    "disk name `{}` must have letters or digits (at most 30)",
                    disk.name
                ),
            );
        } else if let Err(why) = crate::raw::valid_mount_destination(&disk.mount_path) {
            problems.at(
                &service.name,
                Some("mountPath"),
                format!("disk mountPath `{}` {why}", disk.mount_path),
            );
        }
        spec.mounts.push(MountSpec {
            source,
            destination: disk.mount_path.clone(),
            processes: None,
            shared: false,
            size_mib: disk.size_gb.map(|gb| u64::from(gb) * 1024),
        });
    }
    if let Some(plan) = &service.plan {
        let normal = normal_plan(plan);
        match RENDER_PLANS.iter().find(|(name, _, _)| *name == normal) {
            Some((name, cpus, memory_mb)) => spec.vms.push(VmSpec {
                memory_mb: *memory_mb,
                cpus: *cpus,
                size: Some(format!("render-{}", name.replace(' ', "-"))),
                processes: None,
                pids: None,
            }),
            None => {
                let known: Vec<&str> = RENDER_PLANS.iter().map(|plan| plan.0).collect();
                problems.at(
                    &service.name,
                    Some("plan"),
                    format!("unknown plan `{plan}` (use one of {})", known.join(", ")),
                );
            }
        }
    }

    env::apply(
        shared,
        problems,
        service,
        &app,
        &mut spec,
        &mut ignored,
        vars,
    );
    for (key, present) in [
        ("region", service.region.is_some()),
        ("repo", service.repo.is_some()),
        ("branch", service.branch.is_some()),
        ("autoDeploy", service.auto_deploy.is_some()),
        ("autoDeployTrigger", service.auto_deploy_trigger.is_some()),
        ("domains", service.domains.is_some()),
        ("buildFilter", service.build_filter.is_some()),
        (
            "pullRequestPreviewsEnabled",
            service.pull_request_previews_enabled.is_some(),
        ),
        ("previews", service.previews.is_some()),
        ("ipAllowList", service.ip_allow_list.is_some()),
        ("maxmemoryPolicy", service.maxmemory_policy.is_some()),
        ("registryCredential", service.registry_credential.is_some()),
        (
            "staticPublishPath",
            service.static_publish_path.is_some() && spec.site.is_none(),
        ),
        ("headers", service.headers.is_some() && spec.site.is_none()),
        ("routes", service.routes.is_some() && spec.site.is_none()),
    ] {
        if present {
            ignored.push(key);
        }
    }
    if let Some(root) = &service.root_dir
        && !matches!(root.as_str(), "" | "." | "./")
        && !spec.build.command_only
    {
        warnings.push(format!(
            "{file}: service `{}`: rootDir `{root}` is ignored; run berth in that folder",
            service.name
        ));
    }
    ignored.sort_unstable();
    ignored.dedup();
    if !ignored.is_empty() {
        warnings.push(format!(
            "{file}: service `{}`: {} accepted and ignored on one machine",
            service.name,
            ignored.join(", ")
        ));
    }
    Some((app, spec))
}

/// In-flight requests per instance before a Render-autoscaled service grows.
const DEFAULT_SOFT_LIMIT: u32 = 50;

/// `pro_plus`, `Pro Plus`, `pro-plus` → `pro plus`.
fn normal_plan(plan: &str) -> String {
    plan.trim()
        .to_ascii_lowercase()
        .replace(['_', '-'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Volume names are lowercase letters, digits and `_`.
fn disk_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn flag_value<'a>(words: &[&'a str], flag: &str) -> Option<&'a str> {
    words.iter().enumerate().find_map(|(index, word)| {
        if *word == flag {
            words.get(index + 1).copied()
        } else {
            word.strip_prefix(&format!("{flag}="))
        }
    })
}

/// A Render start command as a berth process command: the binary by name
/// (berth puts the release's binaries on `PATH`). `None` means "the
/// package's binary" and the caller knows none.
fn start_command(command: &str, default_binary: Option<&str>) -> Option<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    if words.starts_with(&["cargo", "run"]) {
        let binary = flag_value(&words, "--bin").or(default_binary)?;
        let args = words
            .iter()
            .position(|word| *word == "--")
            .map(|at| words[at + 1..].join(" "))
            .unwrap_or_default();
        return Some(if args.is_empty() {
            binary.to_string()
        } else {
            format!("{binary} {args}")
        });
    }
    let first = words.first()?;
    for prefix in [
        "./target/release/",
        "target/release/",
        "/app/target/release/",
    ] {
        if let Some(binary) = first.strip_prefix(prefix) {
            let rest = command.trim_start()[first.len()..].trim_start();
            return Some(if rest.is_empty() {
                binary.to_string()
            } else {
                format!("{binary} {rest}")
            });
        }
    }
    Some(command.trim().to_string())
}
