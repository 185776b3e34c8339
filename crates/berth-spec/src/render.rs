//! Render Blueprints (`render.yaml`): each service becomes a berth app.
//!
//! - `web` and `pserv` services serve HTTP on `$PORT`; `worker`s run without
//!   HTTP; a `cron` service becomes an app that only runs its job on its
//!   `schedule`. `keyvalue` (and the older `redis`) services are not apps:
//!   they are the Redis of the services that use them.
//! - `runtime: rust` (or the older `env: rust`) builds with cargo;
//!   `startCommand` names the binary (`./target/release/api serve` runs `api
//!   serve`, `cargo run --release --bin api` runs `api`); `buildCommand` is
//!   read for `--bin`/`--features`. `docker` and `image` services keep their
//!   Dockerfile or image, reported at deploy as needing the Docker driver.
//! - `envVars`: `value`; `generateValue` (a secret made once);
//!   `fromDatabase` / `fromService` (parts of berth's PostgreSQL and Redis
//!   URLs, or another app's address); `sync: false` (a secret the user sets
//!   once); `fromGroup` (an `envVarGroups` entry).
//! - `databases`: berth's managed PostgreSQL. A database used by several
//!   services belongs to the first one that names it and is shared with the
//!   others (`shared_with`); the same goes for a key-value store.
//! - `healthCheckPath`, `numInstances`, `scaling`, `disk`,
//!   `preDeployCommand`, `maxShutdownDelaySeconds` and `plan` (in Render's
//!   spellings: `pro plus`, `pro_plus`, `Pro Plus`) map onto the model;
//!   keys one machine cannot honour (region, branch, domains…) are accepted
//!   and reported once.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Location, SpecError, SpecProblem};
use crate::{
    AppSpec, BuilderKind, EnvFrom, EnvSource, HealthCheck, JobSpec, MountSpec, OverlapPolicy,
    VmSpec,
};

/// The Blueprint file name.
pub const RENDER_YAML: &str = "render.yaml";

/// Render's instance types: plan, CPUs, memory in MiB.
pub const RENDER_PLANS: &[(&str, f64, u32)] = &[
    ("free", 0.1, 512),
    ("starter", 0.5, 512),
    ("starter plus", 1.0, 1024),
    ("standard", 1.0, 2048),
    ("standard plus", 1.5, 3072),
    ("pro", 2.0, 4096),
    ("pro plus", 4.0, 8192),
    ("pro max", 4.0, 16384),
    ("pro ultra", 8.0, 32768),
];

/// A Blueprint read into berth apps, in the order they should deploy
/// (owners of shared databases first).
#[derive(Debug, Clone)]
pub struct Blueprint {
    /// Each app's name and spec.
    pub apps: Vec<(String, AppSpec)>,
    /// What berth ignores or assumes.
    pub warnings: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBlueprint {
    #[serde(default)]
    services: Vec<RawService>,
    #[serde(default)]
    databases: Vec<RawDatabase>,
    #[serde(default)]
    env_var_groups: Vec<RawEnvGroup>,
    previews: Option<serde_norway::Value>,
    preview_environment: Option<serde_norway::Value>,
    projects: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawService {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    runtime: Option<String>,
    env: Option<String>,
    plan: Option<String>,
    build_command: Option<String>,
    start_command: Option<String>,
    pre_deploy_command: Option<String>,
    health_check_path: Option<String>,
    num_instances: Option<u32>,
    scaling: Option<RawScaling>,
    disk: Option<RawDisk>,
    #[serde(default)]
    env_vars: Vec<RawEnvVar>,
    schedule: Option<String>,
    dockerfile_path: Option<String>,
    docker_context: Option<String>,
    docker_command: Option<String>,
    image: Option<RawImage>,
    max_shutdown_delay_seconds: Option<u64>,
    // Accepted; one machine has no use for them.
    region: Option<serde_norway::Value>,
    repo: Option<serde_norway::Value>,
    branch: Option<serde_norway::Value>,
    auto_deploy: Option<serde_norway::Value>,
    auto_deploy_trigger: Option<serde_norway::Value>,
    root_dir: Option<String>,
    domains: Option<serde_norway::Value>,
    build_filter: Option<serde_norway::Value>,
    pull_request_previews_enabled: Option<serde_norway::Value>,
    previews: Option<serde_norway::Value>,
    ip_allow_list: Option<serde_norway::Value>,
    maxmemory_policy: Option<serde_norway::Value>,
    registry_credential: Option<serde_norway::Value>,
    static_publish_path: Option<String>,
    headers: Option<serde_norway::Value>,
    routes: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawScaling {
    min_instances: Option<u32>,
    max_instances: Option<u32>,
    target_memory_percent: Option<u32>,
    #[serde(rename = "targetCPUPercent")]
    target_cpu_percent: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDisk {
    name: String,
    mount_path: String,
    #[serde(rename = "sizeGB")]
    size_gb: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct RawImage {
    url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnvVar {
    key: Option<String>,
    value: Option<serde_norway::Value>,
    generate_value: Option<bool>,
    from_database: Option<RawFromDatabase>,
    from_service: Option<RawFromService>,
    sync: Option<bool>,
    from_group: Option<String>,
    preview_value: Option<serde_norway::Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawFromDatabase {
    name: String,
    property: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFromService {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    property: Option<String>,
    env_var_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDatabase {
    name: String,
    database_name: Option<String>,
    user: Option<String>,
    plan: Option<String>,
    postgres_major_version: Option<serde_norway::Value>,
    region: Option<serde_norway::Value>,
    ip_allow_list: Option<serde_norway::Value>,
    read_replicas: Option<serde_norway::Value>,
    disk_size_gb: Option<serde_norway::Value>,
    high_availability: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnvGroup {
    name: String,
    #[serde(default)]
    env_vars: Vec<RawEnvVar>,
}

/// Problems, located by the service they belong to.
struct Problems<'a> {
    file: &'a str,
    text: &'a str,
    found: Vec<SpecProblem>,
}

impl Problems<'_> {
    /// Reports `message` at the line that names `name` (`name: api`), or
    /// at `key` after it when given.
    fn at(&mut self, name: &str, key: Option<&str>, message: String) {
        let location = locate(self.text, name, key);
        self.found.push(SpecProblem { location, message });
    }
}

/// Finds `name: <name>` in `text`, then the first `key:` after it.
fn locate(text: &str, name: &str, key: Option<&str>) -> Option<Location> {
    let mut offset = 0;
    let mut start = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start().trim_start_matches("- ");
        if let Some(rest) = trimmed.strip_prefix("name:")
            && rest.trim().trim_matches(['"', '\'']) == name
        {
            start = Some(offset + line.len() - line.trim_start().len());
            if key.is_none() {
                break;
            }
        } else if let (Some(_), Some(key)) = (start, key)
            && trimmed.starts_with(&format!("{key}:"))
        {
            return Some(Location::of_offset(
                text,
                offset + line.len() - line.trim_start().len(),
            ));
        }
        offset += line.len();
    }
    start.map(|offset| Location::of_offset(text, offset))
}

/// Reads a `render.yaml`. `default_binary` is the package's binary (what
/// `cargo run --release` would run), when the caller knows it.
pub fn parse_render(
    file: &str,
    text: &str,
    default_binary: Option<&str>,
) -> Result<Blueprint, SpecError> {
    let mut unknown = Vec::new();
    let raw: RawBlueprint =
        serde_ignored::deserialize(serde_norway::Deserializer::from_str(text), |path| {
            unknown.push(path.to_string())
        })
        .map_err(|err| {
            let location = err.location().map(|at| Location {
                line: at.line(),
                column: at.column(),
            });
            SpecError::single(file, location, err.to_string())
        })?;
    let mut warnings: Vec<String> = unknown
        .into_iter()
        .map(|key| format!("{file}: unknown key `{key}` is ignored"))
        .collect();
    for (key, present) in [
        ("previews", raw.previews.is_some()),
        ("previewEnvironment", raw.preview_environment.is_some()),
        ("projects", raw.projects.is_some()),
    ] {
        if present {
            warnings.push(format!(
                "{file}: `{key}` is ignored (no preview environments or projects on one machine)"
            ));
        }
    }
    let mut problems = Problems {
        file,
        text,
        found: Vec::new(),
    };

    let groups: BTreeMap<&str, &RawEnvGroup> = raw
        .env_var_groups
        .iter()
        .map(|group| (group.name.as_str(), group))
        .collect();
    let databases: BTreeMap<&str, &RawDatabase> = raw
        .databases
        .iter()
        .map(|database| (database.name.as_str(), database))
        .collect();
    for database in &raw.databases {
        let ignored: Vec<&str> = [
            ("databaseName", database.database_name.is_some()),
            ("user", database.user.is_some()),
            ("plan", database.plan.is_some()),
            (
                "postgresMajorVersion",
                database.postgres_major_version.is_some(),
            ),
            ("region", database.region.is_some()),
            ("ipAllowList", database.ip_allow_list.is_some()),
            ("readReplicas", database.read_replicas.is_some()),
            ("diskSizeGB", database.disk_size_gb.is_some()),
            ("highAvailability", database.high_availability.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, present)| present.then_some(key))
        .collect();
        if !ignored.is_empty() {
            warnings.push(format!(
                "{file}: database `{}`: {} ignored (berth's PostgreSQL names the database and role after the app)",
                database.name,
                ignored.join(", ")
            ));
        }
    }
    let key_values: BTreeMap<&str, &RawService> = raw
        .services
        .iter()
        .filter(|service| matches!(service.kind.as_str(), "keyvalue" | "redis"))
        .map(|service| (service.name.as_str(), service))
        .collect();
    let app_services: Vec<&RawService> = raw
        .services
        .iter()
        .filter(|service| !matches!(service.kind.as_str(), "keyvalue" | "redis"))
        .collect();
    let app_of = |service: &str| crate::app_name_from_package(service);

    // Who owns each shared database and key-value store: the first service naming it.
    let mut database_owner: BTreeMap<String, String> = BTreeMap::new();
    let mut redis_owner: BTreeMap<String, String> = BTreeMap::new();
    let mut expanded: Vec<Vec<RawEnvVar>> = Vec::new();
    for service in &app_services {
        let mut vars = Vec::new();
        for var in &service.env_vars {
            match &var.from_group {
                Some(group) => match groups.get(group.as_str()) {
                    Some(group) => vars.extend(group.env_vars.iter().cloned()),
                    None => problems.at(
                        &service.name,
                        Some("envVars"),
                        format!("service `{}` uses env group `{group}`, which envVarGroups does not define", service.name),
                    ),
                },
                None => vars.push(var.clone()),
            }
        }
        for var in &vars {
            if let Some(from) = &var.from_database {
                database_owner
                    .entry(from.name.clone())
                    .or_insert_with(|| app_of(&service.name));
            }
            if let Some(from) = &var.from_service
                && matches!(from.kind.as_str(), "keyvalue" | "redis")
            {
                redis_owner
                    .entry(from.name.clone())
                    .or_insert_with(|| app_of(&service.name));
            }
        }
        expanded.push(vars);
    }
    for database in databases.keys() {
        if !database_owner.contains_key(*database) {
            warnings.push(format!(
                "{file}: database `{database}` is used by no service (fromDatabase); it is not made"
            ));
        }
    }

    let mut apps = Vec::new();
    for (service, vars) in app_services.iter().zip(expanded) {
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
                continue;
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
            other => problems.at(
                &service.name,
                Some("runtime"),
                format!(
                    "service `{}` has runtime `{other}`; berth deploys Rust (runtime: rust), docker and image services",
                    service.name
                ),
            ),
        }
        if service.docker_context.is_some() {
            ignored.push("dockerContext");
        }
        if let Some(build) = &service.build_command {
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
            .map(|command| start_command(command, default_binary));
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
                continue;
            };
            if let Err(message) = crate::Schedule::parse(schedule, None) {
                problems.at(&service.name, Some("schedule"), message);
            }
            let command = match command.flatten() {
                Some(command) => command,
                None => match default_binary {
                    Some(binary) => binary.to_string(),
                    None => {
                        problems.at(
                            &service.name,
                            None,
                            format!("cron job `{}` has no startCommand", service.name),
                        );
                        continue;
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
                    if group == crate::DEFAULT_PROCESS
                        && Some(command.as_str()) == default_binary => {}
                Some(command) => {
                    spec.processes.insert(group.to_string(), command);
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
            spec.deploy.release_command =
                Some(start_command(command, default_binary).unwrap_or_else(|| command.clone()));
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
            });
            if disk.size_gb.is_some() {
                warnings.push(format!(
                    "{file}: service `{}`: disk sizeGB is not enforced (a volume is a directory)",
                    service.name
                ));
            }
        }
        if let Some(plan) = &service.plan {
            let normal = normal_plan(plan);
            match RENDER_PLANS.iter().find(|(name, _, _)| *name == normal) {
                Some((name, cpus, memory_mb)) => spec.vms.push(VmSpec {
                    memory_mb: *memory_mb,
                    cpus: *cpus,
                    size: Some(format!("render-{}", name.replace(' ', "-"))),
                    processes: None,
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

        let mut used_database: Option<String> = None;
        for var in vars {
            let Some(key) = var.key.clone() else {
                problems.at(
                    &service.name,
                    Some("envVars"),
                    format!("service `{}`: an envVars entry has no key", service.name),
                );
                continue;
            };
            if var.preview_value.is_some() {
                ignored.push("previewValue");
            }
            if let Some(value) = &var.value {
                spec.env.insert(key, scalar(value));
            } else if var.generate_value == Some(true) {
                spec.env_from.push(EnvFrom {
                    key,
                    source: EnvSource::Generated,
                });
            } else if var.sync == Some(false) {
                spec.env_from.push(EnvFrom {
                    key,
                    source: EnvSource::AskOnce,
                });
            } else if let Some(from) = &var.from_database {
                if !databases.contains_key(from.name.as_str()) {
                    problems.at(
                        &service.name,
                        Some("envVars"),
                        format!(
                            "`{key}` is from database `{}`, which `databases` does not define",
                            from.name
                        ),
                    );
                    continue;
                }
                let owner = &database_owner[&from.name];
                if let Some(first) = &used_database
                    && *first != from.name
                {
                    problems.at(
                        &service.name,
                        Some("envVars"),
                        format!(
                            "service `{}` uses databases `{first}` and `{}`; a berth app has one database",
                            service.name, from.name
                        ),
                    );
                    continue;
                }
                used_database = Some(from.name.clone());
                if *owner == app {
                    spec.resources.postgres = true;
                } else {
                    spec.resources.postgres_from = Some(owner.clone());
                }
                if key == "DATABASE_URL" && is_connection_string(&from.property) {
                    // berth sets DATABASE_URL itself.
                    continue;
                }
                spec.env_from.push(EnvFrom {
                    key,
                    source: EnvSource::Postgres {
                        property: from.property.clone(),
                    },
                });
            } else if let Some(from) = &var.from_service {
                if matches!(from.kind.as_str(), "keyvalue" | "redis") {
                    if !key_values.contains_key(from.name.as_str()) {
                        problems.at(
                            &service.name,
                            Some("envVars"),
                            format!(
                                "`{key}` is from key-value store `{}`, which no service defines",
                                from.name
                            ),
                        );
                        continue;
                    }
                    let owner = &redis_owner[&from.name];
                    if *owner == app {
                        spec.resources.redis = true;
                    } else {
                        spec.resources.redis_from = Some(owner.clone());
                    }
                    if key == "REDIS_URL"
                        && from.property.as_deref().is_none_or(is_connection_string)
                    {
                        // berth sets REDIS_URL itself.
                        continue;
                    }
                    spec.env_from.push(EnvFrom {
                        key,
                        source: EnvSource::Redis {
                            property: from
                                .property
                                .clone()
                                .unwrap_or_else(|| "connectionString".into()),
                        },
                    });
                } else if let Some(other_key) = &from.env_var_key {
                    let value = app_services
                        .iter()
                        .find(|other| other.name == from.name)
                        .and_then(|other| {
                            other
                                .env_vars
                                .iter()
                                .find(|var| var.key.as_deref() == Some(other_key))
                        })
                        .and_then(|var| var.value.as_ref().map(scalar));
                    match value {
                        Some(value) => {
                            spec.env.insert(key, value);
                        }
                        None => problems.at(
                            &service.name,
                            Some("envVars"),
                            format!("`{key}` copies `{other_key}` of service `{}`, which has no plain value for it", from.name),
                        ),
                    }
                } else {
                    spec.env_from.push(EnvFrom {
                        key,
                        source: EnvSource::AppAddress {
                            app: app_of(&from.name),
                            property: from.property.clone().unwrap_or_else(|| "hostport".into()),
                        },
                    });
                }
            } else {
                problems.at(
                    &service.name,
                    Some("envVars"),
                    format!("`{key}` has no value, generateValue, fromDatabase, fromService or sync: false"),
                );
            }
        }

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
            ("staticPublishPath", service.static_publish_path.is_some()),
            ("headers", service.headers.is_some()),
            ("routes", service.routes.is_some()),
        ] {
            if present {
                ignored.push(key);
            }
        }
        if let Some(root) = &service.root_dir
            && !matches!(root.as_str(), "" | "." | "./")
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
        apps.push((app, spec));
    }

    // Services built with cargo from this one folder share one build
    // directory: the same source compiles once, not once per service.
    let cargo_apps: Vec<String> = apps
        .iter()
        .filter(|(_, spec)| matches!(spec.build.builder, BuilderKind::Cargo))
        .map(|(app, _)| app.clone())
        .collect();
    if cargo_apps.len() > 1 {
        for (app, spec) in apps.iter_mut() {
            if cargo_apps.contains(app) {
                spec.build.build_dir = Some(cargo_apps[0].clone());
            }
        }
    }

    // Owners share with the apps that use their database or Redis.
    let consumers: Vec<(String, String)> = apps
        .iter()
        .flat_map(|(app, spec)| {
            [&spec.resources.postgres_from, &spec.resources.redis_from]
                .into_iter()
                .flatten()
                .map(move |owner| (owner.clone(), app.clone()))
        })
        .collect();
    for (owner, consumer) in consumers {
        if let Some((_, spec)) = apps.iter_mut().find(|(app, _)| *app == owner)
            && !spec.resources.shared_with.contains(&consumer)
        {
            spec.resources.shared_with.push(consumer);
        }
    }
    if apps.is_empty() && problems.found.is_empty() {
        problems.found.push(SpecProblem {
            location: None,
            message: "has no web, worker or cron service".into(),
        });
    }
    if !problems.found.is_empty() {
        return Err(SpecError {
            file: problems.file.to_string(),
            problems: problems.found,
        });
    }
    Ok(Blueprint { apps, warnings })
}

fn is_connection_string(property: &str) -> bool {
    matches!(property, "connectionString" | "connection_string")
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

fn scalar(value: &serde_norway::Value) -> String {
    match value {
        serde_norway::Value::String(text) => text.clone(),
        serde_norway::Value::Bool(flag) => flag.to_string(),
        serde_norway::Value::Number(number) => number.to_string(),
        serde_norway::Value::Null => String::new(),
        other => serde_norway::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Writes apps as one Blueprint. Each app becomes a service (`web`, or
/// `worker` when nothing serves HTTP, or a `cron` per job of a jobs-only
/// app); databases and Redis become `databases` and `keyvalue` entries
/// named `<owner>-db` / `<owner>-kv`. `default_binary` is the package's
/// binary. What a Render service cannot hold (a second process group, a
/// second disk, jobs beside a service) is listed in a comment at the top.
pub fn to_render_yaml(apps: &[(String, AppSpec)], default_binary: &str) -> String {
    use serde_norway::{Mapping, Value};
    let text = |value: &str| Value::String(value.to_string());
    let mut services = Vec::new();
    let mut databases = Vec::new();
    let mut key_values = Vec::new();
    let mut dropped = Vec::new();
    for (app, spec) in apps {
        let bin = spec.build.bin.as_deref().unwrap_or(default_binary);
        let run = |command: &str| {
            let first = command.split_whitespace().next().unwrap_or_default();
            if first == bin || first == default_binary {
                format!("./target/release/{command}")
            } else {
                command.to_string()
            }
        };
        let mut common = Mapping::new();
        match &spec.build.builder {
            BuilderKind::Cargo => {
                common.insert(text("runtime"), text("rust"));
                let mut build = "cargo build --release".to_string();
                if let Some(bin) = &spec.build.bin {
                    build.push_str(&format!(" --bin {bin}"));
                }
                if !spec.build.features.is_empty() {
                    build.push_str(&format!(" --features {}", spec.build.features.join(",")));
                }
                common.insert(text("buildCommand"), text(&build));
            }
            BuilderKind::Dockerfile { path } => {
                common.insert(text("runtime"), text("docker"));
                common.insert(text("dockerfilePath"), text(path));
            }
            BuilderKind::Image { image } => {
                common.insert(text("runtime"), text("image"));
                let mut url = Mapping::new();
                url.insert(text("url"), text(image));
                common.insert(text("image"), Value::Mapping(url));
            }
        }
        if let Some(vm) = spec.vms.first() {
            let plan = vm
                .size
                .as_deref()
                .and_then(|size| size.strip_prefix("render-"))
                .map(|plan| plan.replace('-', " "))
                .unwrap_or_else(|| {
                    RENDER_PLANS
                        .iter()
                        .find(|(_, cpus, memory)| *memory >= vm.memory_mb && *cpus >= vm.cpus)
                        .map_or("pro ultra", |plan| plan.0)
                        .to_string()
                });
            common.insert(text("plan"), text(&plan));
        }
        let mut vars = Vec::new();
        let var = |key: &str, field: &str, value: Value| {
            let mut entry = Mapping::new();
            entry.insert(text("key"), text(key));
            entry.insert(text(field), value);
            Value::Mapping(entry)
        };
        let from = |name: String, kind: Option<&str>, property: &str| {
            let mut entry = Mapping::new();
            if let Some(kind) = kind {
                entry.insert(text("type"), text(kind));
            }
            entry.insert(text("name"), Value::String(name));
            entry.insert(text("property"), text(property));
            Value::Mapping(entry)
        };
        for (key, value) in &spec.env {
            vars.push(var(key, "value", text(value)));
        }
        let postgres_owner = spec
            .resources
            .postgres_from
            .clone()
            .or(spec.resources.postgres.then(|| app.clone()));
        let redis_owner = spec
            .resources
            .redis_from
            .clone()
            .or(spec.resources.redis.then(|| app.clone()));
        if let Some(owner) = &postgres_owner {
            vars.push(var(
                "DATABASE_URL",
                "fromDatabase",
                from(format!("{owner}-db"), None, "connectionString"),
            ));
            if spec.resources.postgres {
                let mut database = Mapping::new();
                database.insert(text("name"), Value::String(format!("{owner}-db")));
                databases.push(Value::Mapping(database));
            }
        }
        if let Some(owner) = &redis_owner {
            vars.push(var(
                "REDIS_URL",
                "fromService",
                from(format!("{owner}-kv"), Some("keyvalue"), "connectionString"),
            ));
            if spec.resources.redis {
                let mut store = Mapping::new();
                store.insert(text("type"), text("keyvalue"));
                store.insert(text("name"), Value::String(format!("{owner}-kv")));
                store.insert(text("ipAllowList"), Value::Sequence(Vec::new()));
                key_values.push(Value::Mapping(store));
            }
        }
        for env in &spec.env_from {
            let key = env.key.as_str();
            vars.push(match &env.source {
                EnvSource::Generated => var(key, "generateValue", Value::Bool(true)),
                EnvSource::AskOnce => var(key, "sync", Value::Bool(false)),
                EnvSource::Postgres { property } => var(
                    key,
                    "fromDatabase",
                    from(
                        format!("{}-db", postgres_owner.as_deref().unwrap_or(app)),
                        None,
                        property,
                    ),
                ),
                EnvSource::Redis { property } => var(
                    key,
                    "fromService",
                    from(
                        format!("{}-kv", redis_owner.as_deref().unwrap_or(app)),
                        Some("keyvalue"),
                        property,
                    ),
                ),
                EnvSource::AppAddress { app, property } => {
                    var(key, "fromService", from(app.clone(), Some("web"), property))
                }
            });
        }
        if !vars.is_empty() {
            common.insert(text("envVars"), Value::Sequence(vars));
        }

        if spec.jobs_only {
            for job in &spec.jobs {
                let mut service = Mapping::new();
                service.insert(text("type"), text("cron"));
                let name = if spec.jobs.len() == 1 && job.name == *app {
                    app.clone()
                } else {
                    format!("{app}-{}", job.name)
                };
                service.insert(text("name"), Value::String(name));
                service.insert(
                    text("schedule"),
                    text(job.schedule.as_deref().unwrap_or("@yearly")),
                );
                service.insert(text("startCommand"), Value::String(run(&job.command)));
                service.extend(common.clone());
                services.push(Value::Mapping(service));
            }
            continue;
        }
        let commands = spec.process_commands(bin);
        let serves = commands
            .keys()
            .find(|group| spec.serves_http(group))
            .cloned();
        let main = serves.clone().or_else(|| commands.keys().next().cloned());
        let mut service = Mapping::new();
        service.insert(
            text("type"),
            text(if serves.is_some() { "web" } else { "worker" }),
        );
        service.insert(text("name"), text(app));
        if let Some(command) = main.as_ref().and_then(|group| commands.get(group)) {
            service.insert(text("startCommand"), Value::String(run(command)));
        }
        for group in commands
            .keys()
            .filter(|group| Some(*group) != main.as_ref())
        {
            dropped.push(format!(
                "process group `{group}` of {app} (make it its own worker service)"
            ));
        }
        if let Some(command) = &spec.deploy.release_command {
            service.insert(text("preDeployCommand"), Value::String(run(command)));
        }
        if serves.is_some()
            && let Some(path) = &spec.http.check.http_path
        {
            service.insert(text("healthCheckPath"), text(path));
        }
        let scaling = &spec.http.scaling;
        match scaling.max {
            Some(max) if max == scaling.min && scaling.soft_limit.is_none() => {
                service.insert(text("numInstances"), Value::Number(max.into()));
            }
            Some(max) => {
                let mut auto = Mapping::new();
                auto.insert(text("minInstances"), Value::Number(scaling.min.into()));
                auto.insert(text("maxInstances"), Value::Number(max.into()));
                service.insert(text("scaling"), Value::Mapping(auto));
            }
            None => {}
        }
        if spec.kill_timeout != AppSpec::default().kill_timeout {
            service.insert(
                text("maxShutdownDelaySeconds"),
                Value::Number(spec.kill_timeout.as_secs().into()),
            );
        }
        if let Some(mount) = spec.mounts.first() {
            let mut disk = Mapping::new();
            disk.insert(text("name"), text(&mount.source));
            disk.insert(text("mountPath"), text(&mount.destination));
            service.insert(text("disk"), Value::Mapping(disk));
        }
        for mount in spec.mounts.iter().skip(1) {
            dropped.push(format!(
                "volume `{}` of {app} (one disk per service)",
                mount.source
            ));
        }
        for job in &spec.jobs {
            dropped.push(format!(
                "job `{}` of {app} (make it a cron service)",
                job.name
            ));
        }
        service.extend(common);
        services.push(Value::Mapping(service));
    }
    services.extend(key_values);
    let mut root = Mapping::new();
    root.insert(text("services"), Value::Sequence(services));
    if !databases.is_empty() {
        root.insert(text("databases"), Value::Sequence(databases));
    }
    let mut out = String::from("# Written by `berth export render` from the apps' model.\n");
    for what in dropped {
        out.push_str(&format!("# Not expressible in a Blueprint: {what}\n"));
    }
    out.push_str(&serde_norway::to_string(&Value::Mapping(root)).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../../tests/fixtures/render/render.yaml");

    fn parse(text: &str) -> Blueprint {
        parse_render(RENDER_YAML, text, Some("todo")).unwrap()
    }

    #[test]
    fn the_fixture_becomes_two_apps_sharing_one_database() {
        let blueprint = parse(FIXTURE);
        let names: Vec<&str> = blueprint
            .apps
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(names, ["todo-web", "todo-migrate"]);
        let web = &blueprint.apps[0].1;
        assert!(web.processes.is_empty() || web.processes["web"] == "todo");
        assert_eq!(web.deploy.release_command.as_deref(), Some("todo migrate"));
        assert_eq!(web.http.check.http_path.as_deref(), Some("/healthz"));
        assert_eq!((web.http.scaling.min, web.http.scaling.max), (1, Some(1)));
        assert_eq!(web.kill_timeout, Duration::from_secs(10));
        assert_eq!(web.mounts[0].destination, "/srv/todo-files");
        assert_eq!((web.vms[0].cpus, web.vms[0].memory_mb), (0.5, 512));
        assert!(web.resources.postgres && web.resources.redis);
        assert_eq!(web.resources.shared_with, ["todo-migrate"]);
        assert_eq!(web.env["GREETING"], "hello from an env group");
        assert_eq!(web.env["MAX_ITEMS"], "100");
        let sources: Vec<(&str, &EnvSource)> = web
            .env_from
            .iter()
            .map(|from| (from.key.as_str(), &from.source))
            .collect();
        assert!(sources.contains(&("SESSION_SECRET", &EnvSource::Generated)));
        assert!(sources.contains(&("API_TOKEN", &EnvSource::AskOnce)));
        assert!(sources.contains(&(
            "DB_PORT",
            &EnvSource::Postgres {
                property: "port".into()
            }
        )));

        let cron = &blueprint.apps[1].1;
        assert!(cron.jobs_only && cron.process_commands("todo").is_empty());
        assert_eq!(cron.jobs[0].command, "todo migrate");
        assert_eq!(cron.jobs[0].schedule.as_deref(), Some("0 3 * * *"));
        assert_eq!(cron.resources.postgres_from.as_deref(), Some("todo-web"));
        assert_eq!(cron.build.build_dir.as_deref(), Some("todo-web"));
        assert_eq!(web.build.build_dir.as_deref(), Some("todo-web"));
        assert!(!cron.resources.postgres);

        let warnings = blueprint.warnings.join("\n");
        assert!(
            warnings.contains("branch, region accepted and ignored"),
            "{warnings}"
        );
        assert!(warnings.contains("sizeGB is not enforced"), "{warnings}");
        assert!(
            warnings.contains("databaseName, user, plan, postgresMajorVersion"),
            "{warnings}"
        );
    }

    #[test]
    fn workers_docker_plans_and_start_commands_map_as_render_means_them() {
        let text = r#"
services:
  - type: worker
    name: Queue Worker
    env: rust
    plan: pro_plus
    buildCommand: cargo build --release --bin worker --features jobs
    startCommand: cargo run --release --bin worker -- --queue default
  - type: pserv
    name: internal
    runtime: docker
    dockerfilePath: ./api/Dockerfile
    plan: Pro Max
    scaling:
      minInstances: 2
      maxInstances: 5
      targetCPUPercent: 60
    envVars:
      - key: WORKER_HOST
        fromService:
          type: worker
          name: Queue Worker
          property: host
      - key: COPIED
        fromService:
          type: web
          name: Queue Worker
          envVarKey: MODE
  - type: web
    name: img
    runtime: image
    image:
      url: docker.io/library/nginx:1
    autoDeploy: false
"#;
        let blueprint = parse_render(RENDER_YAML, text, None);
        let err = blueprint.unwrap_err().to_string();
        assert!(
            err.contains("copies `MODE` of service `Queue Worker`"),
            "{err}"
        );
        let text = text.replace(
            "    startCommand: cargo run",
            "    envVars:\n      - key: MODE\n        value: fast\n    startCommand: cargo run",
        );
        let blueprint = parse_render(RENDER_YAML, &text, None).unwrap();
        let (name, worker) = &blueprint.apps[0];
        assert_eq!(name, "queue-worker");
        assert_eq!(worker.processes["worker"], "worker --queue default");
        assert!(!worker.serves_http("worker"));
        assert_eq!(worker.build.bin.as_deref(), Some("worker"));
        assert_eq!(worker.build.features, ["jobs"]);
        assert_eq!((worker.vms[0].cpus, worker.vms[0].memory_mb), (4.0, 8192));
        let internal = &blueprint.apps[1].1;
        assert_eq!(
            internal.build.builder,
            BuilderKind::Dockerfile {
                path: "./api/Dockerfile".into()
            }
        );
        assert_eq!(internal.vms[0].memory_mb, 16384);
        assert_eq!(
            (internal.http.scaling.min, internal.http.scaling.max),
            (2, Some(5))
        );
        assert_eq!(internal.env["COPIED"], "fast");
        assert!(internal.env_from.contains(&EnvFrom {
            key: "WORKER_HOST".into(),
            source: EnvSource::AppAddress {
                app: "queue-worker".into(),
                property: "host".into()
            }
        }));
        assert!(matches!(
            blueprint.apps[2].1.build.builder,
            BuilderKind::Image { .. }
        ));
        let warnings = blueprint.warnings.join("\n");
        assert!(warnings.contains("targetCPUPercent"), "{warnings}");
        assert!(
            warnings.contains("private service `internal`"),
            "{warnings}"
        );
        assert!(
            warnings.contains("autoDeploy accepted and ignored"),
            "{warnings}"
        );
    }

    #[test]
    fn exporting_and_importing_gives_back_the_same_apps() {
        let blueprint = parse(FIXTURE);
        let exported = to_render_yaml(&blueprint.apps, "todo");
        let again = parse_render(RENDER_YAML, &exported, Some("todo")).unwrap();
        assert_eq!(again.apps, blueprint.apps, "{exported}");

        let text = "services:\n  - type: worker\n    name: jobs\n    plan: pro max\n    buildCommand: cargo build --release --bin jobs --features queue\n    startCommand: ./target/release/jobs --poll 5\n    scaling:\n      minInstances: 1\n      maxInstances: 4\n    envVars:\n      - key: A\n        value: b\n      - key: PEER\n        fromService:\n          type: web\n          name: other\n          property: hostport\n";
        let apps = parse_render(RENDER_YAML, text, Some("todo")).unwrap().apps;
        let exported = to_render_yaml(&apps, "todo");
        let again = parse_render(RENDER_YAML, &exported, Some("todo")).unwrap();
        assert_eq!(again.apps, apps, "{exported}");
    }

    #[test]
    fn mistakes_name_file_line_and_column() {
        let err = parse_render(
            RENDER_YAML,
            "services:\n  - type: web\n    name: [oops\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("render.yaml:3:"), "{err}");

        let text = "services:\n  - type: web\n    name: api\n    plan: gigantic\n  - type: cron\n    name: nightly\n    schedule: \"61 * * * *\"\n    startCommand: api nightly\n  - type: web\n    name: node\n    runtime: node\n";
        let err = parse_render(RENDER_YAML, text, Some("api"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("render.yaml:4:5: unknown plan `gigantic`"),
            "{err}"
        );
        assert!(err.contains("render.yaml:7:5:"), "{err}");
        assert!(
            err.contains("render.yaml:11:5: service `node` has runtime `node`"),
            "{err}"
        );

        let err = parse_render(
            RENDER_YAML,
            "services:\n  - type: web\n    name: api\n    envVars:\n      - key: DB\n        fromDatabase:\n          name: missing\n          property: connectionString\n      - fromGroup: nope\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("database `missing`"), "{err}");
        assert!(err.contains("env group `nope`"), "{err}");
        let err = parse_render(
            RENDER_YAML,
            "services:\n  - type: web\n    name: api\n    disk:\n      name: data\n      mountPath: /etc\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("render.yaml:6:7: disk mountPath `/etc` is a system directory"),
            "{err}"
        );
    }
}
