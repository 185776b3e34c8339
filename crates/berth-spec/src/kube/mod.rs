//! Cloud Run and Kubernetes manifests, written from the model and read back.
//!
//! Both describe containers the same way, so one mapping serves both:
//!
//! - the process command is the container's `command`/`args` (a command
//!   with quotes or shell syntax runs under `/bin/sh -c`); berth's binaries
//!   are in the image's `PATH`;
//! - `[env]` is `env`; `DATABASE_URL`/`REDIS_URL` and secrets are
//!   `secretKeyRef`s to Secrets named `<owner>-postgres`, `<owner>-redis`,
//!   `<app>-secrets` (set once by you) and `<app>-generated` (made once);
//!   another app's address is a `configMapKeyRef` to `<app>-address`;
//! - a `[[vm]]` size is `resources.limits` (`cpu`, `memory` in Mi);
//! - the health check is a `livenessProbe` (`httpGet` or `tcpSocket`, with
//!   `periodSeconds` and `timeoutSeconds`);
//! - volumes are `volumeMounts` of claims (Kubernetes) or volumes (Cloud
//!   Run) named after the volume.
//!
//! Cloud Run: a `serving.knative.dev/v1` Service (`minScale`/`maxScale`
//! annotations, `containerConcurrency` as the hard limit, scale to zero when
//! `minScale` is 0) and a `run.googleapis.com/v1` Job per job (its schedule
//! and the release command, which Cloud Run runs through Cloud Scheduler and
//! by hand, are annotations). Process groups without HTTP cannot be a Cloud
//! Run service and are listed as not exported.
//!
//! Kubernetes: a Deployment per process group (the HTTP one with a Service
//! and, when autoscaled, a HorizontalPodAutoscaler), a PersistentVolumeClaim
//! per volume, a CronJob per job (`suspend: true` for jobs run by hand) and
//! the release command as a Job labelled `berth.dev/role: release` to apply
//! before the Deployments.
//!
//! `berth.dev/bin` and `berth.dev/features` annotations keep the build;
//! `berth.dev/shared-with` keeps which apps may use this app's database.

mod export;
mod import;

pub use export::to_manifests;
pub use import::parse_manifests;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{Location, SpecError};
use crate::{
    AppSpec, BuilderKind, DEFAULT_PROCESS, EnvFrom, EnvSource, HealthCheck, JobSpec, MountSpec,
    OverlapPolicy, VmSpec,
};

/// Which platform's manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manifests {
    /// Cloud Run (Knative Service and Cloud Run Jobs).
    CloudRun,
    /// Kubernetes (Deployments, Services, HPAs, PVCs, CronJobs, Jobs).
    Kubernetes,
}

/// The image a manifest runs: built from `berth export dockerfile`.
fn image_of(spec: &AppSpec, app: &str) -> String {
    match &spec.build.builder {
        BuilderKind::Image { image } => image.clone(),
        _ => format!("{app}:latest"),
    }
}

fn needs_shell(command: &str) -> bool {
    command.contains(['"', '\'', '$', '|', '&', ';', '>', '<', '(', ')', '*', '`'])
}

fn command_fields(command: &str) -> (Value, Value) {
    if needs_shell(command) {
        (json!(["/bin/sh", "-c"]), json!([command]))
    } else {
        let mut words = command.split_whitespace().map(str::to_string);
        let first: Vec<String> = words.next().into_iter().collect();
        let rest: Vec<String> = words.collect();
        (json!(first), json!(rest))
    }
}

fn command_of(container: &Value) -> String {
    let words = |key: &str| -> Vec<String> {
        container[key]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let command = words("command");
    let args = words("args");
    if command == ["/bin/sh", "-c"] && args.len() == 1 {
        return args[0].clone();
    }
    command
        .into_iter()
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

fn format_cpus(cpus: f64) -> String {
    if cpus.fract() == 0.0 {
        format!("{cpus}")
    } else {
        format!("{}m", (cpus * 1000.0).round() as u64)
    }
}

fn parse_cpus(text: &str) -> Option<f64> {
    match text.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok().map(|m| m / 1000.0),
        None => text.parse().ok(),
    }
}

fn parse_memory_mb(text: &str) -> Option<u32> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let mb = match unit {
        "Mi" => number,
        "Gi" => number * 1024.0,
        "M" => number * 1_000_000.0 / 1_048_576.0,
        "G" => number * 1_000_000_000.0 / 1_048_576.0,
        "Ki" => number / 1024.0,
        _ => return None,
    };
    Some(mb.round() as u32)
}

fn secret_ref(name: &str, key: &str) -> Value {
    json!({ "secretKeyRef": { "name": name, "key": key } })
}

/// The container's env: values, then what berth injects as references.
fn env_list(spec: &AppSpec, app: &str) -> Vec<Value> {
    let mut env: Vec<Value> = spec
        .env
        .iter()
        .map(|(key, value)| json!({ "name": key, "value": value }))
        .collect();
    let postgres_owner = spec
        .resources
        .postgres_from
        .clone()
        .or(spec.resources.postgres.then(|| app.to_string()));
    let redis_owner = spec
        .resources
        .redis_from
        .clone()
        .or(spec.resources.redis.then(|| app.to_string()));
    if let Some(owner) = &postgres_owner {
        env.push(json!({ "name": "DATABASE_URL",
            "valueFrom": secret_ref(&format!("{owner}-postgres"), "url") }));
    }
    if let Some(owner) = &redis_owner {
        env.push(json!({ "name": "REDIS_URL",
            "valueFrom": secret_ref(&format!("{owner}-redis"), "url") }));
    }
    for from in &spec.env_from {
        let value_from = match &from.source {
            EnvSource::Generated => secret_ref(&format!("{app}-generated"), &from.key),
            EnvSource::AskOnce => secret_ref(&format!("{app}-secrets"), &from.key),
            EnvSource::Postgres { property } => secret_ref(
                &format!("{}-postgres", postgres_owner.as_deref().unwrap_or(app)),
                property,
            ),
            EnvSource::Redis { property } => secret_ref(
                &format!("{}-redis", redis_owner.as_deref().unwrap_or(app)),
                property,
            ),
            EnvSource::AppAddress { app, property } => {
                json!({ "configMapKeyRef": { "name": format!("{app}-address"), "key": property } })
            }
        };
        env.push(json!({ "name": from.key, "valueFrom": value_from }));
    }
    env
}

/// Records that the app uses `owner`'s database or Redis (its own when
/// `owner` is the app); true when the variable is the URL berth sets itself.
fn uses_resource(
    owner: &str,
    app: &str,
    name: &str,
    key: &str,
    url_name: &str,
    own: &mut bool,
    from: &mut Option<String>,
) -> bool {
    if owner == app {
        *own = true;
    } else {
        *from = Some(owner.to_string());
    }
    name == url_name && key == "url"
}

/// Reads `env` back into the spec.
fn read_env(env: &Value, app: &str, spec: &mut AppSpec) {
    for entry in env.as_array().into_iter().flatten() {
        let Some(name) = entry["name"].as_str() else {
            continue;
        };
        if let Some(value) = entry.get("value") {
            let value = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            spec.env.insert(name.to_string(), value);
            continue;
        }
        let from = &entry["valueFrom"];
        if let Some(map) = from.get("configMapKeyRef") {
            let other = map["name"].as_str().unwrap_or_default();
            spec.env_from.push(EnvFrom {
                key: name.to_string(),
                source: EnvSource::AppAddress {
                    app: other.trim_end_matches("-address").to_string(),
                    property: map["key"].as_str().unwrap_or("hostport").to_string(),
                },
            });
            continue;
        }
        let Some(secret) = from.get("secretKeyRef") else {
            continue;
        };
        let secret_name = secret["name"].as_str().unwrap_or_default();
        let key = secret["key"].as_str().unwrap_or_default().to_string();
        let source = if secret_name == format!("{app}-generated") {
            EnvSource::Generated
        } else if secret_name == format!("{app}-secrets") {
            EnvSource::AskOnce
        } else if let Some(owner) = secret_name.strip_suffix("-postgres") {
            if uses_resource(
                owner,
                app,
                name,
                &key,
                "DATABASE_URL",
                &mut spec.resources.postgres,
                &mut spec.resources.postgres_from,
            ) {
                continue;
            }
            EnvSource::Postgres { property: key }
        } else if let Some(owner) = secret_name.strip_suffix("-redis") {
            if uses_resource(
                owner,
                app,
                name,
                &key,
                "REDIS_URL",
                &mut spec.resources.redis,
                &mut spec.resources.redis_from,
            ) {
                continue;
            }
            EnvSource::Redis { property: key }
        } else {
            EnvSource::AskOnce
        };
        spec.env_from.push(EnvFrom {
            key: name.to_string(),
            source,
        });
    }
}

fn limits(vm: &VmSpec) -> Value {
    json!({ "limits": { "cpu": format_cpus(vm.cpus), "memory": format!("{}Mi", vm.memory_mb) } })
}

fn read_limits(resources: &Value, process: Option<&str>) -> Option<VmSpec> {
    let limits = resources.get("limits")?;
    let cpus = limits["cpu"]
        .as_str()
        .and_then(parse_cpus)
        .or(limits["cpu"].as_f64())?;
    let memory_mb = limits["memory"].as_str().and_then(parse_memory_mb)?;
    Some(VmSpec {
        memory_mb,
        cpus,
        size: None,
        processes: process.map(|process| vec![process.to_string()]),
        pids: None,
    })
}

fn probe(check: &HealthCheck, port: u16) -> Value {
    let mut probe = match &check.http_path {
        Some(path) => json!({ "httpGet": { "path": path, "port": port } }),
        None => json!({ "tcpSocket": { "port": port } }),
    };
    probe["periodSeconds"] = json!(check.interval.as_secs().max(1));
    probe["timeoutSeconds"] = json!(check.timeout.as_secs().max(1));
    probe
}

fn read_probe(probe: &Value) -> HealthCheck {
    let mut check = HealthCheck {
        http_path: probe
            .pointer("/httpGet/path")
            .and_then(Value::as_str)
            .map(str::to_string),
        ..HealthCheck::default()
    };
    if let Some(period) = probe["periodSeconds"].as_u64() {
        check.interval = Duration::from_secs(period);
    }
    if let Some(timeout) = probe["timeoutSeconds"].as_u64() {
        check.timeout = Duration::from_secs(timeout);
    }
    check
}

fn annotations(spec: &AppSpec) -> Value {
    let mut annotations = serde_json::Map::new();
    if let Some(bin) = &spec.build.bin {
        annotations.insert("berth.dev/bin".into(), json!(bin));
    }
    if !spec.build.features.is_empty() {
        annotations.insert(
            "berth.dev/features".into(),
            json!(spec.build.features.join(",")),
        );
    }
    if !spec.resources.shared_with.is_empty() {
        annotations.insert(
            "berth.dev/shared-with".into(),
            json!(spec.resources.shared_with.join(",")),
        );
    }
    Value::Object(annotations)
}

fn read_annotations(metadata: &Value, spec: &mut AppSpec) {
    let annotation =
        |key: &str| metadata.pointer(&format!("/annotations/{}", key.replace('/', "~1")));
    if let Some(bin) = annotation("berth.dev/bin").and_then(Value::as_str) {
        spec.build.bin = Some(bin.to_string());
    }
    if let Some(features) = annotation("berth.dev/features").and_then(Value::as_str) {
        spec.build.features = features.split(',').map(str::to_string).collect();
    }
    if let Some(apps) = annotation("berth.dev/shared-with").and_then(Value::as_str) {
        spec.resources.shared_with = apps.split(',').map(str::to_string).collect();
    }
}

/// The port the container listens on: `internal_port`, else 8080 (`$PORT`).
fn port_of(spec: &AppSpec) -> u16 {
    spec.http.internal_port.unwrap_or(8080)
}

fn container(spec: &AppSpec, app: &str, process: &str, command: &str) -> Value {
    let (command, args) = command_fields(command);
    let mut container = json!({
        "name": process,
        "image": image_of(spec, app),
        "command": command,
        "args": args,
        "env": env_list(spec, app),
    });
    if let Some(vm) = spec.vms.iter().find(|vm| {
        vm.processes
            .as_ref()
            .is_none_or(|groups| groups.iter().any(|group| group == process))
    }) {
        container["resources"] = limits(vm);
    }
    let mounts: Vec<Value> = spec
        .mounts
        .iter()
        .filter(|mount| mount.applies_to(process))
        .map(|mount| json!({ "name": mount.source, "mountPath": mount.destination }))
        .collect();
    if !mounts.is_empty() {
        container["volumeMounts"] = json!(mounts);
    }
    container
}

fn job_command(spec: &AppSpec, app: &str, job: &JobSpec) -> Value {
    let mut job_container = container(spec, app, "job", &job.command);
    job_container
        .as_object_mut()
        .map(|c| c.remove("volumeMounts"));
    let env = job_container["env"].as_array_mut().expect("env is a list");
    for (key, value) in &job.env {
        env.push(json!({ "name": key, "value": value }));
    }
    job_container
}

/// The keys of a job's own env, kept in an annotation (the container's env
/// also holds the app's).
fn job_env_annotation(job: &JobSpec) -> Option<Value> {
    (!job.env.is_empty()).then(|| json!(job.env.keys().cloned().collect::<Vec<_>>().join(",")))
}

#[cfg(test)]
mod tests;
