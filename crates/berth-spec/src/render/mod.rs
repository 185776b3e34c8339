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

mod context;
mod env;
mod export;
mod raw;
mod service;
mod site;

pub use context::RENDER_PLANS;
pub use export::to_render_yaml;

use crate::AppSpec;
use crate::BuilderKind;
use crate::error::{Location, SpecError, SpecProblem};
use context::{Problems, Shared};
use raw::{RawBlueprint, RawDatabase, RawEnvGroup, RawEnvVar, RawService};

/// The Blueprint file name.
pub const RENDER_YAML: &str = "render.yaml";

/// A Blueprint read into berth apps, in the order they should deploy
/// (owners of shared databases first).
#[derive(Debug, Clone)]
pub struct Blueprint {
    /// Each app's name and spec.
    pub apps: Vec<(String, AppSpec)>,
    /// What berth ignores or assumes.
    pub warnings: Vec<String>,
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
            let message = crate::error::without_type_names(&err.to_string(), "a mapping");
            SpecError::single(file, location, message)
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
                    // A group made in Render's dashboard, not in the file.
                    None => warnings.push(format!(
                        "{file}: service `{}` uses env group `{group}`, which envVarGroups does not define (a group made in Render's dashboard?): set its variables with `berth env set` or `berth secrets set`",
                        service.name
                    )),
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
    let shared = Shared {
        file,
        default_binary,
        databases,
        key_values,
        app_services: &app_services,
        database_owner,
        redis_owner,
    };
    for (service, vars) in app_services.iter().zip(expanded) {
        if let Some(app) = service::convert(&shared, &mut problems, &mut warnings, service, vars) {
            apps.push(app);
        }
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

#[cfg(test)]
mod tests;
