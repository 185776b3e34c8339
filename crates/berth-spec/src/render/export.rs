//! Apps written out as one Blueprint.

use super::context::RENDER_PLANS;
use crate::{AppSpec, BuilderKind, EnvSource};

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
            if let Some(size_mib) = mount.size_mib {
                // Render sizes disks in whole GB.
                disk.insert(
                    text("sizeGB"),
                    Value::Number(size_mib.div_ceil(1024).into()),
                );
            }
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
