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

/// Writes `spec` (app `app`, built as `default_binary`) as `kind`'s
/// manifests: a multi-document YAML.
pub fn to_manifests(kind: Manifests, spec: &AppSpec, app: &str, default_binary: &str) -> String {
    let bin = spec.build.bin.as_deref().unwrap_or(default_binary);
    let commands = spec.process_commands(bin);
    let web = commands
        .keys()
        .find(|group| spec.serves_http(group))
        .cloned();
    let mut documents: Vec<Value> = Vec::new();
    let mut dropped = Vec::new();
    let port = port_of(spec);
    let labels =
        |process: &str| json!({ "app.kubernetes.io/name": app, "berth.dev/process": process });

    match kind {
        Manifests::CloudRun => {
            if let Some(group) = &web {
                let mut template_annotations = serde_json::Map::new();
                let scaling = &spec.http.scaling;
                if scaling.is_active() {
                    template_annotations.insert(
                        "autoscaling.knative.dev/minScale".into(),
                        json!(scaling.min.to_string()),
                    );
                    if let Some(max) = scaling.max {
                        template_annotations.insert(
                            "autoscaling.knative.dev/maxScale".into(),
                            json!(max.to_string()),
                        );
                    }
                }
                let mut container = container(spec, app, group, &commands[group]);
                container["ports"] = json!([{ "containerPort": port }]);
                container["livenessProbe"] = probe(&spec.http.check, port);
                let mut template_spec = json!({
                    "timeoutSeconds": 300,
                    "containers": [container],
                });
                if let Some(hard) = scaling.hard_limit {
                    template_spec["containerConcurrency"] = json!(hard);
                }
                let volumes: Vec<Value> = spec
                    .mounts
                    .iter()
                    .map(|mount| json!({ "name": mount.source,
                        "csi": { "driver": "gcsfuse.run.googleapis.com",
                                 "volumeAttributes": { "bucketName": format!("{app}-{}", mount.source) } } }))
                    .collect();
                if !volumes.is_empty() {
                    template_spec["volumes"] = json!(volumes);
                }
                let mut metadata = json!({ "name": app, "labels": labels(group) });
                let annotations = annotations(spec);
                if annotations.as_object().is_some_and(|a| !a.is_empty()) {
                    metadata["annotations"] = annotations;
                }
                documents.push(json!({
                    "apiVersion": "serving.knative.dev/v1",
                    "kind": "Service",
                    "metadata": metadata,
                    "spec": { "template": {
                        "metadata": { "annotations": template_annotations },
                        "spec": template_spec,
                    } },
                }));
            }
            for group in commands.keys().filter(|group| Some(*group) != web.as_ref()) {
                dropped.push(format!(
                    "process group `{group}` (a Cloud Run service must serve HTTP)"
                ));
            }
            let mut jobs: Vec<(String, JobSpec, bool)> = spec
                .jobs
                .iter()
                .map(|job| (format!("{app}-{}", job.name), job.clone(), false))
                .collect();
            if let Some(command) = &spec.deploy.release_command {
                let release = JobSpec {
                    name: "release".into(),
                    command: command.clone(),
                    schedule: None,
                    time_zone: None,
                    tasks: 1,
                    parallelism: 1,
                    max_retries: 0,
                    timeout: spec.deploy.release_command_timeout,
                    env: BTreeMap::new(),
                    overlap: OverlapPolicy::Skip,
                };
                jobs.push((format!("{app}-release"), release, true));
            }
            for (name, job, release) in jobs {
                let mut annotations = serde_json::Map::new();
                annotations.insert("berth.dev/app".into(), json!(app));
                if release {
                    annotations.insert("berth.dev/role".into(), json!("release"));
                } else {
                    annotations.insert("berth.dev/job".into(), json!(job.name));
                }
                if let Some(schedule) = &job.schedule {
                    annotations.insert("berth.dev/schedule".into(), json!(schedule));
                }
                if let Some(zone) = &job.time_zone {
                    annotations.insert("berth.dev/time-zone".into(), json!(zone));
                }
                if let Some(keys) = job_env_annotation(&job) {
                    annotations.insert("berth.dev/job-env".into(), keys);
                }
                documents.push(json!({
                    "apiVersion": "run.googleapis.com/v1",
                    "kind": "Job",
                    "metadata": { "name": name, "annotations": annotations },
                    "spec": { "template": { "spec": {
                        "taskCount": job.tasks,
                        "parallelism": job.parallelism,
                        "template": { "spec": {
                            "maxRetries": job.max_retries,
                            "timeoutSeconds": job.timeout.as_secs(),
                            "containers": [job_command(spec, app, &job)],
                        } },
                    } } },
                }));
            }
        }
        Manifests::Kubernetes => {
            for mount in &spec.mounts {
                documents.push(json!({
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": { "name": format!("{app}-{}", mount.source), "labels": labels("volume") },
                    "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } },
                }));
            }
            if let Some(command) = &spec.deploy.release_command {
                let mut release = container(spec, app, "release", command);
                release.as_object_mut().map(|c| c.remove("volumeMounts"));
                documents.push(json!({
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": { "name": format!("{app}-release"), "labels": labels("release"),
                                  "annotations": { "berth.dev/role": "release" } },
                    "spec": { "backoffLimit": 0,
                              "activeDeadlineSeconds": spec.deploy.release_command_timeout.as_secs(),
                              "template": { "spec": { "restartPolicy": "Never", "containers": [release] } } },
                }));
            }
            for (group, command) in &commands {
                let serves = Some(group) == web.as_ref();
                let name = if serves {
                    app.to_string()
                } else {
                    format!("{app}-{group}")
                };
                let mut container = container(spec, app, group, command);
                if serves {
                    container["ports"] = json!([{ "containerPort": port }]);
                    container["env"]
                        .as_array_mut()
                        .expect("env is a list")
                        .push(json!({ "name": "PORT", "value": port.to_string() }));
                    container["livenessProbe"] = probe(&spec.http.check, port);
                }
                let volumes: Vec<Value> = spec
                    .mounts
                    .iter()
                    .filter(|mount| mount.applies_to(group))
                    .map(|mount| json!({ "name": mount.source,
                        "persistentVolumeClaim": { "claimName": format!("{app}-{}", mount.source) } }))
                    .collect();
                let mut pod = json!({
                    "terminationGracePeriodSeconds": spec.kill_timeout.as_secs(),
                    "containers": [container],
                });
                if !volumes.is_empty() {
                    pod["volumes"] = json!(volumes);
                }
                let mut metadata = json!({ "name": name, "labels": labels(group) });
                let annotations = annotations(spec);
                if annotations.as_object().is_some_and(|a| !a.is_empty()) {
                    metadata["annotations"] = annotations;
                }
                let replicas = if serves {
                    spec.http.scaling.min.max(1)
                } else {
                    1
                };
                documents.push(json!({
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": metadata,
                    "spec": {
                        "replicas": replicas,
                        "selector": { "matchLabels": labels(group) },
                        "template": { "metadata": { "labels": labels(group) }, "spec": pod },
                    },
                }));
                if serves {
                    documents.push(json!({
                        "apiVersion": "v1",
                        "kind": "Service",
                        "metadata": { "name": app, "labels": labels(group) },
                        "spec": { "selector": labels(group),
                                  "ports": [{ "port": 80, "targetPort": port }] },
                    }));
                    let scaling = &spec.http.scaling;
                    if let Some(max) = scaling.max {
                        documents.push(json!({
                            "apiVersion": "autoscaling/v2",
                            "kind": "HorizontalPodAutoscaler",
                            "metadata": { "name": app, "labels": labels(group) },
                            "spec": {
                                "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": app },
                                "minReplicas": scaling.min.max(1),
                                "maxReplicas": max,
                                "metrics": [{ "type": "Resource", "resource": { "name": "cpu",
                                    "target": { "type": "Utilization", "averageUtilization": 70 } } }],
                            },
                        }));
                    }
                }
            }
            for job in &spec.jobs {
                let mut annotations = json!({ "berth.dev/job": job.name });
                if let Some(zone) = &job.time_zone {
                    annotations["berth.dev/time-zone"] = json!(zone);
                }
                if let Some(keys) = job_env_annotation(job) {
                    annotations["berth.dev/job-env"] = keys;
                }
                let mut cron = json!({
                    "schedule": job.schedule.as_deref().unwrap_or("@yearly"),
                    "suspend": job.schedule.is_none(),
                    "concurrencyPolicy": match job.overlap {
                        OverlapPolicy::Skip => "Forbid",
                        OverlapPolicy::Allow => "Allow",
                        OverlapPolicy::Replace => "Replace",
                    },
                    "jobTemplate": { "spec": {
                        "completions": job.tasks,
                        "parallelism": job.parallelism,
                        "completionMode": "Indexed",
                        "backoffLimit": job.max_retries,
                        "activeDeadlineSeconds": job.timeout.as_secs(),
                        "template": { "spec": { "restartPolicy": "Never",
                                                "containers": [job_command(spec, app, job)] } },
                    } },
                });
                if let Some(zone) = &job.time_zone {
                    cron["timeZone"] = json!(zone);
                }
                documents.push(json!({
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "metadata": { "name": format!("{app}-{}", job.name), "labels": labels("job"),
                                  "annotations": annotations },
                    "spec": cron,
                }));
            }
        }
    }
    let platform = match kind {
        Manifests::CloudRun => "cloudrun",
        Manifests::Kubernetes => "k8s",
    };
    let mut out = format!(
        "# Written by `berth export {platform}` from the app's model; the image is\n# built from `berth export dockerfile`.\n"
    );
    for what in dropped {
        out.push_str(&format!("# Not exported: {what}\n"));
    }
    for document in documents {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&document).unwrap_or_default());
    }
    out
}

/// Reads Cloud Run or Kubernetes manifests written by [`to_manifests`] (or
/// by hand in the same shape) back into one app's spec and its name.
pub fn parse_manifests(
    file: &str,
    text: &str,
    default_binary: Option<&str>,
) -> Result<(String, AppSpec), SpecError> {
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value = Value::deserialize(document).map_err(|err| {
            let location = err.location().map(|at| Location {
                line: at.line(),
                column: at.column(),
            });
            SpecError::single(file, location, err.to_string())
        })?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    let kind_of = |doc: &Value| doc["kind"].as_str().unwrap_or_default().to_string();
    let problem = |message: String| SpecError::single(file, None, message);
    let main = documents
        .iter()
        .find(|doc| {
            let kind = kind_of(doc);
            kind == "Service" && doc["apiVersion"] == "serving.knative.dev/v1"
                || kind == "Deployment"
                    && doc
                        .pointer("/spec/template/spec/containers/0/ports")
                        .is_some()
        })
        .or_else(|| documents.iter().find(|doc| kind_of(doc) == "Deployment"))
        .ok_or_else(|| problem("has no Cloud Run Service or Kubernetes Deployment".into()))?;
    let app = main
        .pointer("/metadata/labels/app.kubernetes.io~1name")
        .or_else(|| main.pointer("/metadata/name"))
        .and_then(Value::as_str)
        .ok_or_else(|| problem("the Service or Deployment has no metadata.name".into()))?
        .to_string();
    let mut spec = AppSpec {
        app: Some(app.clone()),
        ..AppSpec::default()
    };
    read_annotations(&main["metadata"], &mut spec);
    let bin = spec
        .build
        .bin
        .clone()
        .or(default_binary.map(str::to_string));

    let mut processes = BTreeMap::new();
    let mut vms = Vec::new();
    let mut read_container = |container: &Value, process: &str, spec: &mut AppSpec| {
        let command = command_of(container);
        let image = container["image"].as_str().unwrap_or_default();
        if image != format!("{app}:latest") && !image.is_empty() {
            spec.build.builder = BuilderKind::Image {
                image: image.to_string(),
            };
        }
        if let Some(vm) = read_limits(&container["resources"], Some(process)) {
            vms.push(vm);
        }
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let (Some(name), Some(path)) = (mount["name"].as_str(), mount["mountPath"].as_str())
            else {
                continue;
            };
            match spec.mounts.iter_mut().find(|known| known.source == name) {
                Some(known) => {
                    if let Some(groups) = known.processes.as_mut() {
                        groups.push(process.to_string());
                    }
                }
                None => spec.mounts.push(MountSpec {
                    source: name.to_string(),
                    destination: path.to_string(),
                    processes: Some(vec![process.to_string()]),
                }),
            }
        }
        processes.insert(process.to_string(), command);
    };

    let mut groups = 0;
    for doc in &documents {
        let kind = kind_of(doc);
        let is_main = std::ptr::eq(doc, main);
        if kind == "Service" && doc["apiVersion"] == "serving.knative.dev/v1" {
            let template = &doc["spec"]["template"];
            let container = &template["spec"]["containers"][0];
            read_container(container, DEFAULT_PROCESS, &mut spec);
            groups += 1;
            read_env(&container["env"], &app, &mut spec);
            spec.http.check = read_probe(&container["livenessProbe"]);
            if let Some(port) = container
                .pointer("/ports/0/containerPort")
                .and_then(Value::as_u64)
                && port != 8080
            {
                spec.http.internal_port = Some(port as u16);
            }
            let scale = |key: &str| {
                template
                    .pointer(&format!(
                        "/metadata/annotations/autoscaling.knative.dev~1{key}"
                    ))
                    .and_then(|value| {
                        value
                            .as_str()
                            .and_then(|text| text.parse::<u32>().ok())
                            .or(value.as_u64().map(|n| n as u32))
                    })
            };
            if let Some(min) = scale("minScale") {
                spec.http.scaling.min = min;
                spec.http.scaling.auto_stop = min == 0;
                spec.http.scaling.max = scale("maxScale");
            }
            // 0 is Knative's "no limit".
            if let Some(hard) = template["spec"]["containerConcurrency"]
                .as_u64()
                .filter(|hard| *hard > 0)
            {
                let hard = u32::try_from(hard).unwrap_or(u32::MAX);
                spec.http.scaling.hard_limit = Some(hard);
                spec.http.scaling.soft_limit = Some((u64::from(hard) * 4 / 5).max(1) as u32);
            }
        } else if kind == "Deployment" {
            let process = doc
                .pointer("/metadata/labels/berth.dev~1process")
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_PROCESS)
                .to_string();
            let pod = &doc["spec"]["template"]["spec"];
            let container = &pod["containers"][0];
            read_container(container, &process, &mut spec);
            groups += 1;
            if is_main {
                let mut env = container["env"].clone();
                if let Some(list) = env.as_array_mut() {
                    list.retain(|entry| entry["name"] != "PORT");
                }
                read_env(&env, &app, &mut spec);
                spec.http.check = read_probe(&container["livenessProbe"]);
                if let Some(port) = container
                    .pointer("/ports/0/containerPort")
                    .and_then(Value::as_u64)
                    && port != 8080
                {
                    spec.http.internal_port = Some(port as u16);
                }
                if let Some(seconds) = pod["terminationGracePeriodSeconds"].as_u64() {
                    spec.kill_timeout = Duration::from_secs(seconds);
                }
                if process != DEFAULT_PROCESS {
                    spec.http.processes = Some(vec![process.clone()]);
                }
            }
        } else if kind == "HorizontalPodAutoscaler" {
            spec.http.scaling.min = doc["spec"]["minReplicas"].as_u64().unwrap_or(1) as u32;
            spec.http.scaling.max = doc["spec"]["maxReplicas"].as_u64().map(|max| max as u32);
        } else if kind == "Job" || kind == "CronJob" {
            let metadata = &doc["metadata"];
            let role = metadata
                .pointer("/annotations/berth.dev~1role")
                .and_then(Value::as_str);
            let (container, job_spec, pod_spec) = if kind == "CronJob" {
                let job = &doc["spec"]["jobTemplate"]["spec"];
                (
                    &job["template"]["spec"]["containers"][0],
                    job,
                    &job["template"]["spec"],
                )
            } else if doc["apiVersion"] == "run.googleapis.com/v1" {
                let execution = &doc["spec"]["template"]["spec"];
                (
                    &execution["template"]["spec"]["containers"][0],
                    execution,
                    &execution["template"]["spec"],
                )
            } else {
                let job = &doc["spec"];
                (
                    &job["template"]["spec"]["containers"][0],
                    job,
                    &job["template"]["spec"],
                )
            };
            let command = command_of(container);
            if role == Some("release") {
                spec.deploy.release_command = Some(command);
                let timeout = job_spec["activeDeadlineSeconds"]
                    .as_u64()
                    .or(pod_spec["timeoutSeconds"].as_u64());
                if let Some(seconds) = timeout {
                    spec.deploy.release_command_timeout = Duration::from_secs(seconds);
                }
                continue;
            }
            let name = metadata
                .pointer("/annotations/berth.dev~1job")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    metadata["name"].as_str().map(|name| {
                        name.strip_prefix(&format!("{app}-"))
                            .unwrap_or(name)
                            .to_string()
                    })
                })
                .unwrap_or_else(|| "job".into());
            let schedule = if kind == "CronJob" {
                (!doc["spec"]["suspend"].as_bool().unwrap_or(false))
                    .then(|| doc["spec"]["schedule"].as_str().map(str::to_string))
                    .flatten()
            } else {
                metadata
                    .pointer("/annotations/berth.dev~1schedule")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let count = |value: &Value, default: u32| value.as_u64().map_or(default, |n| n as u32);
            let tasks = count(&job_spec["completions"], count(&job_spec["taskCount"], 1));
            let own_keys: Vec<&str> = metadata
                .pointer("/annotations/berth.dev~1job-env")
                .and_then(Value::as_str)
                .map(|keys| keys.split(',').collect())
                .unwrap_or_default();
            let env: BTreeMap<String, String> = container["env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|entry| {
                    entry["name"]
                        .as_str()
                        .is_some_and(|name| own_keys.contains(&name))
                })
                .filter_map(|entry| {
                    Some((
                        entry["name"].as_str()?.to_string(),
                        entry["value"].as_str()?.to_string(),
                    ))
                })
                .collect();
            spec.jobs.push(JobSpec {
                name,
                command,
                schedule,
                time_zone: metadata
                    .pointer("/annotations/berth.dev~1time-zone")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                tasks,
                parallelism: count(&job_spec["parallelism"], tasks),
                max_retries: count(
                    &job_spec["backoffLimit"],
                    count(
                        &pod_spec["maxRetries"],
                        if kind == "CronJob" { 6 } else { 3 },
                    ),
                ),
                timeout: Duration::from_secs(
                    job_spec["activeDeadlineSeconds"]
                        .as_u64()
                        .or(pod_spec["timeoutSeconds"].as_u64())
                        .unwrap_or(600),
                ),
                env,
                overlap: match doc["spec"]["concurrencyPolicy"].as_str() {
                    Some("Forbid") => OverlapPolicy::Skip,
                    Some("Replace") => OverlapPolicy::Replace,
                    // Kubernetes' default is Allow; a Cloud Run Job never overlaps.
                    Some("Allow") => OverlapPolicy::Allow,
                    _ if kind == "CronJob" => OverlapPolicy::Allow,
                    _ => OverlapPolicy::Skip,
                },
            });
        }
    }
    // One group that is the package's binary as `web` is berth's default.
    if groups == 1 && processes.get(DEFAULT_PROCESS).map(String::as_str) == bin.as_deref() {
        processes.clear();
    }
    spec.processes = processes;
    // Sizes and volumes that apply to every group read back without a group list.
    let all: Vec<String> = spec
        .process_commands(bin.as_deref().unwrap_or_default())
        .into_keys()
        .collect();
    let mut merged: Vec<VmSpec> = Vec::new();
    for vm in vms {
        match merged
            .iter_mut()
            .find(|known| known.memory_mb == vm.memory_mb && known.cpus == vm.cpus)
        {
            Some(known) => known
                .processes
                .get_or_insert_with(Vec::new)
                .extend(vm.processes.unwrap_or_default()),
            None => merged.push(vm),
        }
    }
    for vm in &mut merged {
        if vm
            .processes
            .as_ref()
            .is_some_and(|groups| all.iter().all(|group| groups.contains(group)))
        {
            vm.processes = None;
        }
    }
    spec.vms = merged;
    for mount in &mut spec.mounts {
        if mount
            .processes
            .as_ref()
            .is_some_and(|groups| all.iter().all(|group| groups.contains(group)))
        {
            mount.processes = None;
        }
    }
    Ok((app, spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = r#"
app = "shop"
kill_timeout = 12
[build]
bin = "shop"
features = ["metrics"]
[deploy]
release_command = "shop migrate"
[env]
MODE = "production"
[processes]
web = "shop serve --port 8080"
worker = "shop work"
[http_service]
min_machines_running = 1
max_machines_running = 4
  [[http_service.checks]]
  path = "/healthz"
  interval = "15s"
  timeout = "3s"
[[vm]]
memory = 512
cpus = 1
[resources]
postgres = true
redis = true
[[mounts]]
source = "data"
destination = "/data"
processes = ["web"]
[[jobs]]
name = "nightly"
command = "shop nightly"
schedule = "0 3 * * *"
tasks = 2
max_retries = 1
timeout = "30m"
[jobs.env]
LEVEL = "deep"
[[jobs]]
name = "reindex"
command = "shop reindex 'all items'"
"#;

    fn shop() -> AppSpec {
        crate::parse_spec("berth.toml", SHOP).unwrap().spec
    }

    #[test]
    fn kubernetes_manifests_read_back_as_the_same_model() {
        let spec = shop();
        let yaml = to_manifests(Manifests::Kubernetes, &spec, "shop", "shop");
        for kind in [
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PersistentVolumeClaim",
            "CronJob",
            "Job",
        ] {
            assert!(
                yaml.contains(&format!("kind: {kind}\n")),
                "{kind} missing:\n{yaml}"
            );
        }
        assert!(yaml.contains("name: shop-worker"), "{yaml}");
        let (app, again) = parse_manifests("k8s.yaml", &yaml, Some("shop")).unwrap();
        assert_eq!(app, "shop");
        assert_eq!(again, spec, "{yaml}");
    }

    #[test]
    fn cloud_run_services_and_jobs_read_back_as_the_same_model() {
        let mut spec = shop();
        spec.processes.remove("worker");
        spec.kill_timeout = AppSpec::default().kill_timeout;
        spec.mounts[0].processes = None;
        spec.http.scaling.min = 0;
        spec.http.scaling.auto_stop = true;
        spec.http.scaling.hard_limit = Some(50);
        spec.http.scaling.soft_limit = Some(40);
        let yaml = to_manifests(Manifests::CloudRun, &spec, "shop", "shop");
        assert!(yaml.contains("serving.knative.dev/v1"), "{yaml}");
        assert!(
            yaml.contains("autoscaling.knative.dev/minScale: '0'"),
            "{yaml}"
        );
        assert!(yaml.contains("containerConcurrency: 50"), "{yaml}");
        let (_, again) = parse_manifests("service.yaml", &yaml, Some("shop")).unwrap();
        assert_eq!(again, spec, "{yaml}");

        // A worker cannot be a Cloud Run service: it is named, not lost silently.
        let yaml = to_manifests(Manifests::CloudRun, &shop(), "shop", "shop");
        assert!(
            yaml.contains("# Not exported: process group `worker`"),
            "{yaml}"
        );
    }

    #[test]
    fn the_default_web_process_stays_the_default() {
        let spec = crate::parse_spec("berth.toml", "app = \"hello\"\n")
            .unwrap()
            .spec;
        for kind in [Manifests::Kubernetes, Manifests::CloudRun] {
            let yaml = to_manifests(kind, &spec, "hello", "hello");
            let (_, again) = parse_manifests("m.yaml", &yaml, Some("hello")).unwrap();
            assert_eq!(again, spec, "{yaml}");
        }
        let err = parse_manifests("m.yaml", "kind: ConfigMap\n---\nkind: [", None).unwrap_err();
        assert!(err.to_string().starts_with("m.yaml:4:1:"), "{err}");
    }
}
