//! Reading Cloud Run or Kubernetes manifests back into an app's spec.

use super::*;

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
                    shared: false,
                    size_mib: None,
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
