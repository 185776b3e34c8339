//! Writing an app's spec as Cloud Run or Kubernetes manifests.

use super::*;

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
