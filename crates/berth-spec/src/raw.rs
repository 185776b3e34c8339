//! Stage one: the lenient raw form of berth.toml / fly.toml, and its
//! validation into [`AppSpec`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::duration::parse_duration;
use crate::error::{Location, SpecError, SpecProblem};
use crate::jobs::{JobSpec, OverlapPolicy, Schedule};
use crate::model::{
    AppSpec, BuildSpec, BuilderKind, DeploySpec, DeployStrategy, HealthCheck, HttpService,
    StaticSpec,
};
use crate::{CargoPackage, ParsedSpec};

/// A value fly accepts as a number or a string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Integer(i64),
    Float(f64),
    Text(String),
}

/// fly's `auto_stop_machines`: a boolean, or "off" / "stop" / "suspend".
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum BoolOrText {
    Bool(bool),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawConcurrency {
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    soft_limit: Option<Spanned<NumberOrText>>,
    hard_limit: Option<Spanned<NumberOrText>>,
}

/// The scaling keys of `[http_service]` or one `[[services]]` entry.
#[derive(Default)]
struct ScalingKeys {
    auto_stop: Option<Spanned<BoolOrText>>,
    auto_start: Option<Spanned<BoolOrText>>,
    min: Option<Spanned<NumberOrText>>,
    max: Option<Spanned<NumberOrText>>,
    concurrency: Option<RawConcurrency>,
    idle_timeout: Option<Spanned<NumberOrText>>,
    scale_in_delay: Option<Spanned<NumberOrText>>,
    container_concurrency: Option<Spanned<NumberOrText>>,
}

/// An env value: fly accepts strings, numbers and booleans.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::Text(text) => text,
            Scalar::Integer(number) => number.to_string(),
            Scalar::Float(number) => number.to_string(),
            Scalar::Bool(value) => value.to_string(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawSpec {
    app: Option<Spanned<String>>,
    kill_timeout: Option<Spanned<NumberOrText>>,
    kill_signal: Option<String>,
    build: Option<RawBuild>,
    deploy: Option<RawDeploy>,
    env: BTreeMap<String, Scalar>,
    processes: BTreeMap<String, Spanned<String>>,
    http_service: Option<RawHttpService>,
    services: Vec<RawService>,
    checks: BTreeMap<String, RawCheck>,
    // Accepted for fly.toml compatibility; berth does not act on these on one machine.
    primary_region: Option<toml::Value>,
    swap_size_mb: Option<toml::Value>,
    console_command: Option<toml::Value>,
    experimental: Option<toml::Value>,
    metrics: Option<toml::Value>,
    statics: Option<OneOrMany<RawStatic>>,
    restart: Option<toml::Value>,
    files: Option<toml::Value>,
    vm: Option<OneOrMany<RawVm>>,
    mounts: Option<OneOrMany<RawMount>>,
    jobs: Vec<RawJob>,
    resources: Option<RawResources>,
    budget: Option<toml::Value>,
}

/// fly accepts `[mounts]` (one table) and `[[mounts]]` (several).
/// Deserialized by hand: serde's untagged enums buffer the input and lose
/// the spans that errors point at.
#[derive(Debug)]
enum OneOrMany<T> {
    Many(Vec<T>),
    One(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table or an array of tables")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(OneOrMany::Many)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(OneOrMany::One)
            }
        }
        deserializer.deserialize_any(Visit(std::marker::PhantomData))
    }
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::Many(items) => items,
            OneOrMany::One(item) => vec![item],
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawMount {
    source: Option<Spanned<String>>,
    destination: Option<Spanned<String>>,
    processes: Option<Vec<Spanned<String>>>,
    // fly's sizing and snapshot keys: one machine's disk has no such knobs.
    initial_size: Option<toml::Value>,
    auto_extend_size_threshold: Option<toml::Value>,
    auto_extend_size_increment: Option<toml::Value>,
    auto_extend_size_limit: Option<toml::Value>,
    snapshot_retention: Option<toml::Value>,
    scheduled_snapshots: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawStatic {
    guest_path: Option<Spanned<String>>,
    url_prefix: Option<Spanned<String>>,
    tigris_bucket: Option<toml::Value>,
    index_document: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawVm {
    size: Option<Spanned<String>>,
    memory: Option<Spanned<NumberOrText>>,
    memory_mb: Option<Spanned<NumberOrText>>,
    cpus: Option<Spanned<NumberOrText>>,
    cpu_kind: Option<Spanned<String>>,
    processes: Option<Vec<Spanned<String>>>,
    gpus: Option<toml::Value>,
    gpu_kind: Option<toml::Value>,
    kernel_args: Option<toml::Value>,
    host_dedication_id: Option<toml::Value>,
    persist_rootfs: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawResources {
    postgres: Option<Spanned<bool>>,
    redis: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawBuild {
    builder: Option<Spanned<String>>,
    bin: Option<String>,
    #[serde(default)]
    features: Vec<String>,
    image: Option<String>,
    dockerfile: Option<String>,
    buildpacks: Option<toml::Value>,
    args: Option<toml::Value>,
    #[serde(rename = "build-target")]
    build_target: Option<toml::Value>,
    ignorefile: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawDeploy {
    release_command: Option<String>,
    post_deploy_command: Option<String>,
    strategy: Option<Spanned<String>>,
    wait_timeout: Option<Spanned<NumberOrText>>,
    release_command_timeout: Option<Spanned<NumberOrText>>,
    max_unavailable: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawJob {
    name: Option<Spanned<String>>,
    command: Option<Spanned<String>>,
    schedule: Option<Spanned<String>>,
    time_zone: Option<Spanned<String>>,
    tasks: Option<Spanned<i64>>,
    parallelism: Option<Spanned<i64>>,
    max_retries: Option<Spanned<i64>>,
    timeout: Option<Spanned<NumberOrText>>,
    env: BTreeMap<String, Scalar>,
    overlap: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawHttpService {
    internal_port: Option<Spanned<NumberOrText>>,
    force_https: Option<bool>,
    processes: Option<Vec<Spanned<String>>>,
    checks: Vec<RawHttpCheck>,
    auto_stop_machines: Option<Spanned<BoolOrText>>,
    auto_start_machines: Option<Spanned<BoolOrText>>,
    min_machines_running: Option<Spanned<NumberOrText>>,
    max_machines_running: Option<Spanned<NumberOrText>>,
    concurrency: Option<RawConcurrency>,
    idle_timeout: Option<Spanned<NumberOrText>>,
    scale_in_delay: Option<Spanned<NumberOrText>>,
    // Cloud Run's words.
    min_instances: Option<Spanned<NumberOrText>>,
    max_instances: Option<Spanned<NumberOrText>>,
    container_concurrency: Option<Spanned<NumberOrText>>,
    http_options: Option<toml::Value>,
    tls_options: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawService {
    internal_port: Option<Spanned<NumberOrText>>,
    protocol: Option<String>,
    processes: Option<Vec<Spanned<String>>>,
    http_checks: Vec<RawHttpCheck>,
    tcp_checks: Vec<RawHttpCheck>,
    ports: Option<toml::Value>,
    concurrency: Option<RawConcurrency>,
    auto_stop_machines: Option<Spanned<BoolOrText>>,
    auto_start_machines: Option<Spanned<BoolOrText>>,
    min_machines_running: Option<Spanned<NumberOrText>>,
    script_checks: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawHttpCheck {
    path: Option<String>,
    interval: Option<Spanned<NumberOrText>>,
    timeout: Option<Spanned<NumberOrText>>,
    grace_period: Option<Spanned<NumberOrText>>,
    method: Option<String>,
    protocol: Option<String>,
    tls_skip_verify: Option<bool>,
    headers: Option<toml::Value>,
    #[serde(rename = "type")]
    kind: Option<String>,
    port: Option<toml::Value>,
    restart_limit: Option<toml::Value>,
}

type RawCheck = RawHttpCheck;

/// Collects problems with their locations while validating.
struct Problems<'a> {
    text: &'a str,
    found: Vec<SpecProblem>,
}

impl Problems<'_> {
    fn at<T>(&mut self, spanned: &Spanned<T>, message: String) {
        self.found.push(SpecProblem {
            location: Some(Location::of_offset(self.text, spanned.span().start)),
            message,
        });
    }
}

pub(crate) fn parse(file: &str, text: &str) -> Result<ParsedSpec, SpecError> {
    let mut unknown_keys = Vec::new();
    let deserializer =
        toml::Deserializer::parse(text).map_err(|err| toml_error(file, text, &err))?;
    let raw: RawSpec = serde_ignored::deserialize(deserializer, |path| {
        unknown_keys.push(path.to_string().replace(".?", "").replace("?.", ""))
    })
    .map_err(|err| toml_error(file, text, &err))?;

    let mut warnings: Vec<String> = unknown_keys
        .into_iter()
        .map(|key| format!("{file}: unknown key `{key}` is ignored"))
        .collect();
    let mut problems = Problems {
        text,
        found: Vec::new(),
    };
    let spec = validate(file, raw, &mut problems, &mut warnings);
    if problems.found.is_empty() {
        Ok(ParsedSpec { spec, warnings })
    } else {
        problems.found.sort_by_key(|problem| {
            problem
                .location
                .map(|location| (location.line, location.column))
        });
        Err(SpecError {
            file: file.to_string(),
            problems: problems.found,
        })
    }
}

pub(crate) fn toml_error(file: &str, text: &str, err: &toml::de::Error) -> SpecError {
    let location = err.span().map(|span| Location::of_offset(text, span.start));
    SpecError::single(file, location, err.message().trim().to_string())
}

fn validate(
    file: &str,
    raw: RawSpec,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> AppSpec {
    let mut spec = AppSpec::default();

    if let Some(app) = &raw.app {
        match berth_proto::validate_app_name(app.get_ref()) {
            Ok(()) => spec.app = Some(app.get_ref().clone()),
            Err(message) => problems.at(app, message),
        }
    }
    if let Some(timeout) = &raw.kill_timeout
        && let Some(duration) = duration_value(timeout, Unit::Seconds, "kill_timeout", problems)
    {
        spec.kill_timeout = duration;
    }
    if let Some(signal) = &raw.kill_signal
        && !signal.eq_ignore_ascii_case("SIGTERM")
    {
        warnings.push(format!(
            "{file}: kill_signal = \"{signal}\" is not supported yet; berth sends SIGTERM"
        ));
    }

    let ignored_here = [
        ("primary_region", raw.primary_region.is_some()),
        ("swap_size_mb", raw.swap_size_mb.is_some()),
        ("console_command", raw.console_command.is_some()),
        ("experimental", raw.experimental.is_some()),
        ("metrics", raw.metrics.is_some()),
    ];
    for (key, present) in ignored_here {
        if present {
            warnings.push(format!(
                "{file}: `{key}` has no meaning on one machine and is ignored"
            ));
        }
    }
    let not_yet = [("[budget]", raw.budget.is_some())];
    for (key, present) in [
        ("[[restart]]", raw.restart.is_some()),
        ("[[files]]", raw.files.is_some()),
    ] {
        if present {
            warnings.push(format!(
                "{file}: {key} is accepted and ignored (berth restarts crashed instances with backoff; files come from the slug)"
            ));
        }
    }
    if let Some(statics) = raw.statics {
        spec.statics = validate_statics(file, statics.into_vec(), problems, warnings);
    }
    for (section, present) in not_yet {
        if present {
            warnings.push(format!(
                "{file}: {section} is accepted but this berth does not act on it yet"
            ));
        }
    }

    if let Some(build) = raw.build {
        spec.build = validate_build(file, build, problems, warnings);
    }
    if let Some(deploy) = raw.deploy {
        spec.deploy = validate_deploy(file, deploy, problems, warnings);
    }
    spec.env = raw
        .env
        .into_iter()
        .map(|(key, value)| (key, value.into_string()))
        .collect();

    for (name, command) in &raw.processes {
        if !valid_process_name(name) {
            problems.at(
                command,
                format!(
                    "process group `{name}` must be lowercase letters, digits, `-` or `_`, starting with a letter"
                ),
            );
        } else if command.get_ref().trim().is_empty() {
            problems.at(
                command,
                format!("process group `{name}` has an empty command"),
            );
        } else {
            spec.processes
                .insert(name.clone(), command.get_ref().trim().to_string());
        }
    }

    spec.jobs = validate_jobs(raw.jobs, problems);
    if let Some(resources) = raw.resources {
        spec.resources.postgres = resources.postgres.is_some_and(|on| *on.get_ref());
        spec.resources.redis = resources.redis.is_some_and(|on| *on.get_ref());
    }
    if let Some(vms) = raw.vm {
        spec.vms = validate_vms(file, vms.into_vec(), problems, warnings);
    }
    if let Some(mounts) = raw.mounts {
        spec.mounts = validate_mounts(file, mounts.into_vec(), problems, warnings);
    }
    spec.http = validate_http(
        file,
        raw.http_service,
        raw.services,
        raw.checks,
        problems,
        warnings,
    );
    if let Some(groups) = &spec.http.processes
        && !spec.processes.is_empty()
    {
        for group in groups {
            if !spec.processes.contains_key(group) {
                problems.found.push(SpecProblem {
                    location: None,
                    message: format!(
                        "http_service.processes names `{group}`, which is not in [processes]"
                    ),
                });
            }
        }
    }
    spec
}

fn validate_statics(
    file: &str,
    statics: Vec<RawStatic>,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> Vec<StaticSpec> {
    let mut found = Vec::new();
    for entry in statics {
        if entry.tigris_bucket.is_some() || entry.index_document.is_some() {
            warnings.push(format!(
                "{file}: [[statics]] tigris_bucket and index_document are ignored: files are served from the slug"
            ));
        }
        let (Some(guest), Some(prefix)) = (&entry.guest_path, &entry.url_prefix) else {
            problems.found.push(SpecProblem {
                location: entry
                    .guest_path
                    .as_ref()
                    .or(entry.url_prefix.as_ref())
                    .map(|at| Location::of_offset(problems.text, at.span().start)),
                message: "[[statics]] needs guest_path and url_prefix".into(),
            });
            continue;
        };
        if !prefix.get_ref().starts_with('/') {
            problems.at(
                prefix,
                format!("url_prefix `{}` must start with /", prefix.get_ref()),
            );
            continue;
        }
        let spec = StaticSpec {
            guest_path: guest.get_ref().clone(),
            url_prefix: prefix.get_ref().clone(),
        };
        if spec.slug_relative().is_none() {
            problems.at(
                guest,
                format!("guest_path `{}` leaves the app's folder", guest.get_ref()),
            );
            continue;
        }
        found.push(spec);
    }
    found
}

fn validate_mounts(
    file: &str,
    mounts: Vec<RawMount>,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> Vec<crate::model::MountSpec> {
    let mut valid = Vec::new();
    let mut sizing_warned = false;
    for mount in mounts {
        let sizing = mount.initial_size.is_some()
            || mount.auto_extend_size_threshold.is_some()
            || mount.auto_extend_size_increment.is_some()
            || mount.auto_extend_size_limit.is_some()
            || mount.snapshot_retention.is_some()
            || mount.scheduled_snapshots.is_some();
        if sizing && !sizing_warned {
            sizing_warned = true;
            warnings.push(format!(
                "{file}: [[mounts]] sizes and snapshots are ignored: a volume is a directory on this machine's disk"
            ));
        }
        let (Some(source), Some(destination)) = (&mount.source, &mount.destination) else {
            problems.found.push(SpecProblem {
                location: mount
                    .source
                    .as_ref()
                    .or(mount.destination.as_ref())
                    .map(|spanned| Location::of_offset(problems.text, spanned.span().start)),
                message: "each [[mounts]] entry needs `source` (a volume name) and `destination` (an absolute path)".into(),
            });
            continue;
        };
        let name = source.get_ref();
        if !valid_volume_name(name) {
            problems.at(
                source,
                format!("volume name `{name}` must be 1–30 lowercase letters, digits or `_`"),
            );
            continue;
        }
        let path = destination.get_ref();
        if let Err(reason) = valid_mount_destination(path) {
            problems.at(destination, format!("mount destination `{path}` {reason}"));
            continue;
        }
        if valid
            .iter()
            .any(|other: &crate::model::MountSpec| other.destination == *path)
        {
            problems.at(
                destination,
                format!("two mounts share the destination `{path}`"),
            );
            continue;
        }
        valid.push(crate::model::MountSpec {
            source: name.clone(),
            destination: path.trim_end_matches('/').to_string(),
            processes: mount
                .processes
                .map(|groups| groups.into_iter().map(Spanned::into_inner).collect()),
        });
    }
    valid
}

fn validate_vms(
    file: &str,
    vms: Vec<RawVm>,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> Vec<crate::model::VmSpec> {
    let mut valid = Vec::new();
    for vm in vms {
        let mut spec = crate::model::VmSpec::default();
        if let Some(size) = &vm.size {
            let name = size.get_ref().to_ascii_lowercase();
            match crate::model::VM_SIZES
                .iter()
                .find(|(known, _, _)| *known == name)
            {
                Some((known, cpus, memory)) => {
                    spec.size = Some((*known).to_string());
                    spec.cpus = *cpus;
                    spec.memory_mb = *memory;
                }
                None => problems.at(
                    size,
                    format!(
                        "unknown size `{name}` (known: {})",
                        crate::model::VM_SIZES
                            .iter()
                            .map(|(known, _, _)| *known)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
            }
        }
        for value in [&vm.memory, &vm.memory_mb].into_iter().flatten() {
            match memory_mib(value.get_ref()) {
                Some(mib) if mib >= 16 => {
                    spec.memory_mb = mib;
                    spec.size = None;
                }
                _ => problems.at(
                    value,
                    "memory must be at least 16 MB: a number of MB, or a size such as \"512mb\" or \"1gb\"".into(),
                ),
            }
        }
        if let Some(value) = &vm.cpus {
            let cpus = match value.get_ref() {
                NumberOrText::Integer(number) => Some(*number as f64),
                NumberOrText::Float(number) => Some(*number),
                NumberOrText::Text(text) => text.trim().parse().ok(),
            };
            match cpus {
                Some(cpus) if cpus > 0.0 && cpus <= 256.0 => {
                    spec.cpus = cpus;
                    spec.size = None;
                }
                _ => problems.at(value, "cpus must be a number above 0".into()),
            }
        }
        if let Some(kind) = &vm.cpu_kind
            && !matches!(kind.get_ref().as_str(), "shared" | "performance")
        {
            problems.at(
                kind,
                "cpu_kind must be \"shared\" or \"performance\"".into(),
            );
        }
        if vm.gpus.is_some() || vm.gpu_kind.is_some() {
            warnings.push(format!(
                "{file}: [[vm]] GPUs are ignored: berth runs on this machine's CPUs"
            ));
        }
        let _ = (vm.kernel_args, vm.host_dedication_id, vm.persist_rootfs);
        spec.processes = vm
            .processes
            .map(|groups| groups.into_iter().map(Spanned::into_inner).collect());
        valid.push(spec);
    }
    valid
}

/// MiB from fly's memory forms: a bare number of MB, or `512mb`, `1gb`, `2048MiB`.
fn memory_mib(value: &NumberOrText) -> Option<u32> {
    match value {
        NumberOrText::Integer(number) => u32::try_from(*number).ok(),
        NumberOrText::Float(_) => None,
        NumberOrText::Text(text) => {
            let text = text.trim().to_ascii_lowercase();
            let split = text
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(text.len());
            let (number, unit) = text.split_at(split);
            let number: f64 = number.parse().ok()?;
            let factor = match unit.trim() {
                "" | "m" | "mb" | "mib" => 1.0,
                "g" | "gb" | "gib" => 1024.0,
                "k" | "kb" | "kib" => 1.0 / 1024.0,
                _ => return None,
            };
            let mib = number * factor;
            (mib.is_finite() && mib >= 0.0 && mib < u32::MAX as f64).then_some(mib.round() as u32)
        }
    }
}

/// fly's volume names: lowercase letters, digits and underscores, at most 30.
pub(crate) fn valid_volume_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 30
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// An absolute, normalised path that is not `/` and not a system directory.
pub(crate) fn valid_mount_destination(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must be an absolute path");
    }
    let parts: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
    if parts.is_empty() {
        return Err("cannot be `/`");
    }
    if parts.iter().any(|part| *part == "." || *part == "..") {
        return Err("cannot contain `.` or `..`");
    }
    const SYSTEM: &[&str] = &[
        "proc", "sys", "dev", "etc", "bin", "sbin", "lib", "lib64", "usr", "boot", "run",
    ];
    if SYSTEM.contains(&parts[0]) {
        return Err("is a system directory");
    }
    Ok(())
}

fn valid_process_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn validate_build(
    file: &str,
    build: RawBuild,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> BuildSpec {
    let mut spec = BuildSpec {
        bin: build.bin,
        features: build.features,
        ..BuildSpec::default()
    };
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
        ("args", build.args.is_some()),
        ("build-target", build.build_target.is_some()),
        ("ignorefile", build.ignorefile.is_some()),
    ] {
        if present {
            warnings.push(format!(
                "{file}: [build] {key} is ignored by the cargo builder"
            ));
        }
    }
    spec
}

fn validate_deploy(
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
            "canary" => {
                warnings.push(format!(
                    "{file}: strategy \"canary\" is deployed as \"rolling\" on one machine"
                ));
                DeployStrategy::Rolling
            }
            other => {
                problems.at(
                    strategy,
                    format!(
                        "unknown deploy strategy `{other}` (use \"rolling\", \"bluegreen\" or \"immediate\")"
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

fn validate_jobs(raw_jobs: Vec<RawJob>, problems: &mut Problems<'_>) -> Vec<JobSpec> {
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
            env: raw
                .env
                .into_iter()
                .map(|(key, value)| (key, value.into_string()))
                .collect(),
            overlap,
        });
    }
    jobs
}

fn validate_http(
    file: &str,
    http_service: Option<RawHttpService>,
    services: Vec<RawService>,
    checks: BTreeMap<String, RawCheck>,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> HttpService {
    let mut spec = HttpService::default();
    let mut raw_checks: Vec<RawHttpCheck> = Vec::new();

    if let Some(http) = http_service {
        if let Some(port) = &http.internal_port {
            spec.internal_port = port_value(port, problems);
        }
        spec.force_https = http.force_https.unwrap_or(false);
        spec.processes = http
            .processes
            .map(|groups| groups.into_iter().map(Spanned::into_inner).collect());
        raw_checks.extend(http.checks);
        spec.scaling = validate_scaling(
            ScalingKeys {
                auto_stop: http.auto_stop_machines,
                auto_start: http.auto_start_machines,
                min: http.min_machines_running.or(http.min_instances),
                max: http.max_machines_running.or(http.max_instances),
                concurrency: http.concurrency,
                idle_timeout: http.idle_timeout,
                scale_in_delay: http.scale_in_delay,
                container_concurrency: http.container_concurrency,
            },
            problems,
        );
        if http.http_options.is_some() || http.tls_options.is_some() {
            warnings.push(format!(
                "{file}: [http_service] http_options and tls_options are ignored"
            ));
        }
    }

    for (index, service) in services.into_iter().enumerate() {
        let protocol = service.protocol.as_deref().unwrap_or("tcp");
        if protocol != "tcp" {
            warnings.push(format!(
                "{file}: [[services]] #{} uses protocol `{protocol}`; berth routes only HTTP over tcp",
                index + 1
            ));
            continue;
        }
        if spec.internal_port.is_none()
            && let Some(port) = &service.internal_port
        {
            spec.internal_port = port_value(port, problems);
        }
        if spec.processes.is_none() {
            spec.processes = service
                .processes
                .map(|groups| groups.into_iter().map(Spanned::into_inner).collect());
        }
        raw_checks.extend(service.http_checks);
        raw_checks.extend(service.tcp_checks.into_iter().map(|mut check| {
            check.kind = Some("tcp".into());
            check
        }));
        if service.script_checks.is_some() {
            warnings.push(format!("{file}: script_checks are ignored"));
        }
        let _ = service.ports;
        if !spec.scaling.is_active() {
            spec.scaling = validate_scaling(
                ScalingKeys {
                    auto_stop: service.auto_stop_machines,
                    auto_start: service.auto_start_machines,
                    min: service.min_machines_running,
                    concurrency: service.concurrency,
                    ..ScalingKeys::default()
                },
                problems,
            );
        }
    }
    raw_checks.extend(checks.into_values());

    if let Some(check) = raw_checks.into_iter().next() {
        let mut health = HealthCheck::default();
        let is_tcp = check.kind.as_deref() == Some("tcp");
        if !is_tcp {
            health.http_path = Some(check.path.clone().unwrap_or_else(|| "/".into()));
        }
        if let Some(interval) = &check.interval
            && let Some(value) = duration_value(interval, Unit::Millis, "interval", problems)
        {
            health.interval = value.max(Duration::from_millis(100));
        }
        if let Some(timeout) = &check.timeout
            && let Some(value) = duration_value(timeout, Unit::Millis, "timeout", problems)
        {
            health.timeout = value.max(Duration::from_millis(10));
        }
        if let Some(grace) = &check.grace_period {
            // Startup is waited for by the deploy timeout; the grace period only
            // needs to parse.
            let _ = duration_value(grace, Unit::Millis, "grace_period", problems);
        }
        if let Some(method) = &check.method
            && !method.eq_ignore_ascii_case("GET")
        {
            warnings.push(format!(
                "{file}: health checks use GET; method `{method}` is ignored"
            ));
        }
        let _ = (
            check.protocol,
            check.tls_skip_verify,
            check.headers,
            check.port,
            check.restart_limit,
        );
        spec.check = health;
    }
    spec
}

fn validate_scaling(keys: ScalingKeys, problems: &mut Problems<'_>) -> crate::model::Scaling {
    let mut scaling = crate::model::Scaling::default();
    if let Some(value) = &keys.auto_stop {
        scaling.auto_stop = match value.get_ref() {
            BoolOrText::Bool(on) => *on,
            BoolOrText::Text(text) => match text.to_ascii_lowercase().as_str() {
                "off" | "false" => false,
                // A suspended machine resumes faster on Fly; here both stop.
                "stop" | "suspend" | "true" => true,
                other => {
                    problems.at(
                        value,
                        format!("auto_stop_machines = \"{other}\": use true/false, \"off\", \"stop\" or \"suspend\""),
                    );
                    false
                }
            },
        };
    }
    if let Some(value) = &keys.auto_start {
        scaling.auto_start = match value.get_ref() {
            BoolOrText::Bool(on) => *on,
            BoolOrText::Text(text) if text.eq_ignore_ascii_case("true") => true,
            BoolOrText::Text(text) if text.eq_ignore_ascii_case("false") => false,
            BoolOrText::Text(text) => {
                problems.at(
                    value,
                    format!("auto_start_machines = \"{text}\": use true or false"),
                );
                true
            }
        };
    }
    if let Some(value) = &keys.min
        && let Some(min) = count_value(value, "min_machines_running", problems)
    {
        scaling.min = min;
    }
    if let Some(value) = &keys.max {
        scaling.max = count_value(value, "max_machines_running", problems);
        if let Some(max) = scaling.max
            && max < scaling.min.max(1)
        {
            problems.at(
                value,
                format!("max_machines_running ({max}) must be at least 1 and at least min_machines_running ({})", scaling.min),
            );
        }
    }
    if let Some(concurrency) = &keys.concurrency {
        if let Some(kind) = &concurrency.kind {
            match kind.get_ref().as_str() {
                "requests" | "connections" => scaling.limit_type = kind.get_ref().clone(),
                other => problems.at(
                    kind,
                    format!("concurrency type `{other}`: use \"requests\" or \"connections\""),
                ),
            }
        }
        if let Some(value) = &concurrency.soft_limit {
            scaling.soft_limit =
                count_value(value, "soft_limit", problems).filter(|limit| *limit > 0);
        }
        if let Some(value) = &concurrency.hard_limit {
            scaling.hard_limit =
                count_value(value, "hard_limit", problems).filter(|limit| *limit > 0);
        }
        if let (Some(soft), Some(hard), Some(at)) = (
            scaling.soft_limit,
            scaling.hard_limit,
            &concurrency.soft_limit,
        ) && soft > hard
        {
            problems.at(
                at,
                format!("soft_limit ({soft}) must not exceed hard_limit ({hard})"),
            );
        }
    }
    if let Some(value) = &keys.container_concurrency
        && let Some(limit) =
            count_value(value, "container_concurrency", problems).filter(|limit| *limit > 0)
    {
        // Cloud Run scales out before instances are full: at 80% here.
        scaling.hard_limit = Some(limit);
        scaling.soft_limit = Some((limit * 4 / 5).max(1));
    }
    if let Some(value) = &keys.idle_timeout
        && let Some(duration) = duration_value(value, Unit::Seconds, "idle_timeout", problems)
    {
        scaling.idle_timeout = duration.max(Duration::from_millis(100));
    }
    if let Some(value) = &keys.scale_in_delay
        && let Some(duration) = duration_value(value, Unit::Seconds, "scale_in_delay", problems)
    {
        scaling.scale_in_delay = duration;
    }
    scaling
}

/// A count: a whole number, 0 or more, as a number or a string.
fn count_value(
    value: &Spanned<NumberOrText>,
    key: &str,
    problems: &mut Problems<'_>,
) -> Option<u32> {
    let number = match value.get_ref() {
        NumberOrText::Integer(number) => Some(*number),
        NumberOrText::Text(text) => text.trim().parse::<i64>().ok(),
        NumberOrText::Float(_) => None,
    };
    match number.and_then(|number| u32::try_from(number).ok()) {
        Some(count) => Some(count),
        None => {
            problems.at(value, format!("`{key}` must be a whole number, 0 or more"));
            None
        }
    }
}

#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    Millis,
}

fn duration_value(
    value: &Spanned<NumberOrText>,
    bare_unit: Unit,
    key: &str,
    problems: &mut Problems<'_>,
) -> Option<Duration> {
    let from_number = |number: f64| -> Option<Duration> {
        if number < 0.0 || !number.is_finite() {
            return None;
        }
        Some(match bare_unit {
            Unit::Seconds => Duration::from_secs_f64(number),
            Unit::Millis => Duration::from_secs_f64(number / 1000.0),
        })
    };
    let parsed = match value.get_ref() {
        NumberOrText::Integer(number) => {
            from_number(*number as f64).ok_or_else(|| format!("`{key}` must not be negative"))
        }
        NumberOrText::Float(number) => {
            from_number(*number).ok_or_else(|| format!("`{key}` must not be negative"))
        }
        NumberOrText::Text(text) => match text.trim().parse::<f64>() {
            Ok(number) => {
                from_number(number).ok_or_else(|| format!("`{key}` must not be negative"))
            }
            Err(_) => parse_duration(text).map_err(|message| format!("`{key}`: {message}")),
        },
    };
    match parsed {
        Ok(duration) => Some(duration),
        Err(message) => {
            problems.at(value, message);
            None
        }
    }
}

fn port_value(value: &Spanned<NumberOrText>, problems: &mut Problems<'_>) -> Option<u16> {
    let number = match value.get_ref() {
        NumberOrText::Integer(number) => Some(*number),
        NumberOrText::Text(text) => text.trim().parse::<i64>().ok(),
        NumberOrText::Float(_) => None,
    };
    match number {
        Some(port @ 1..=65535) => Some(port as u16),
        _ => {
            problems.at(
                value,
                "internal_port must be a whole number from 1 to 65535".into(),
            );
            None
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawCargoManifest {
    package: Option<RawCargoPackage>,
    #[serde(default)]
    bin: Vec<RawCargoBin>,
}

#[derive(Debug, Deserialize)]
struct RawCargoPackage {
    name: String,
}

#[derive(Debug, Deserialize)]
struct RawCargoBin {
    name: Option<String>,
}

pub(crate) fn parse_cargo_manifest(file: &str, text: &str) -> Result<CargoPackage, SpecError> {
    let manifest: RawCargoManifest =
        toml::from_str(text).map_err(|err| toml_error(file, text, &err))?;
    let package = manifest.package.ok_or_else(|| {
        SpecError::single(
            file,
            None,
            "has no [package]; run berth in the folder of the package to deploy".into(),
        )
    })?;
    Ok(CargoPackage {
        name: package.name,
        declared_bins: manifest
            .bin
            .into_iter()
            .filter_map(|bin| bin.name)
            .collect(),
    })
}
