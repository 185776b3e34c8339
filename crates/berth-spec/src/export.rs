//! Exporters: the model written back as files other platforms read.
//!
//! - [`to_fly_toml`]: a fly.toml with everything the model holds. Keys only
//!   berth reads (`[[jobs]]`, `[resources]`, `idle_timeout`, `[build] bin`)
//!   are kept, so that importing the export gives back the same model.
//! - [`to_dockerfile`]: a cargo-chef Dockerfile (dependencies cached in their
//!   own layer) that builds the app and runs its web process.

use toml::{Table, Value};

use crate::model::{AppSpec, BuilderKind, DeployStrategy, Scaling};
use crate::{OverlapPolicy, format_duration};

fn text(value: impl Into<String>) -> Value {
    Value::String(value.into())
}

fn duration(value: std::time::Duration) -> Value {
    text(format_duration(value))
}

fn strings(values: &[String]) -> Value {
    Value::Array(values.iter().map(|value| text(value.clone())).collect())
}

fn map(values: &std::collections::BTreeMap<String, String>) -> Value {
    Value::Table(
        values
            .iter()
            .map(|(key, value)| (key.clone(), text(value.clone())))
            .collect(),
    )
}

/// The spec as a fly.toml (a berth.toml reads the same).
pub fn to_fly_toml(spec: &AppSpec) -> String {
    let mut root = Table::new();
    if let Some(app) = &spec.app {
        root.insert("app".into(), text(app.clone()));
    }
    root.insert("kill_timeout".into(), duration(spec.kill_timeout));
    if let Some(signal) = spec.kill_signal {
        root.insert("kill_signal".into(), signal.name().into());
    }

    let mut build = Table::new();
    match &spec.build.builder {
        BuilderKind::Cargo => {}
        BuilderKind::Dockerfile { path } => {
            build.insert("dockerfile".into(), text(path.clone()));
        }
        BuilderKind::Image { image } => {
            build.insert("image".into(), text(image.clone()));
        }
    }
    if let Some(bin) = &spec.build.bin {
        build.insert("bin".into(), text(bin.clone()));
    }
    if !spec.build.features.is_empty() {
        build.insert(
            "features".into(),
            Value::Array(spec.build.features.iter().cloned().map(text).collect()),
        );
    }
    if !build.is_empty() {
        root.insert("build".into(), Value::Table(build));
    }

    let mut deploy = Table::new();
    if let Some(command) = &spec.deploy.post_deploy_command {
        deploy.insert("post_deploy_command".into(), text(command.clone()));
    }
    if let Some(command) = &spec.deploy.release_command {
        deploy.insert("release_command".into(), text(command.clone()));
    }
    deploy.insert(
        "release_command_timeout".into(),
        duration(spec.deploy.release_command_timeout),
    );
    deploy.insert(
        "strategy".into(),
        text(match spec.deploy.strategy {
            DeployStrategy::Rolling => "rolling",
            DeployStrategy::Bluegreen => "bluegreen",
            DeployStrategy::Immediate => "immediate",
            DeployStrategy::Canary => "canary",
        }),
    );
    deploy.insert("wait_timeout".into(), duration(spec.deploy.wait_timeout));
    root.insert("deploy".into(), Value::Table(deploy));

    if !spec.env.is_empty() {
        root.insert("env".into(), map(&spec.env));
    }
    if !spec.processes.is_empty() {
        root.insert("processes".into(), map(&spec.processes));
    }
    root.insert("http_service".into(), Value::Table(http_service(spec)));
    services_and_checks(spec, &mut root);

    if !spec.vms.is_empty() {
        let vms = spec
            .vms
            .iter()
            .map(|vm| {
                let mut table = Table::new();
                match &vm.size {
                    Some(size) => {
                        table.insert("size".into(), text(size.clone()));
                    }
                    None => {
                        table.insert("memory".into(), text(format!("{}mb", vm.memory_mb)));
                        table.insert("cpus".into(), Value::Float(vm.cpus));
                    }
                }
                if let Some(groups) = &vm.processes {
                    table.insert("processes".into(), strings(groups));
                }
                Value::Table(table)
            })
            .collect();
        root.insert("vm".into(), Value::Array(vms));
    }
    if !spec.mounts.is_empty() {
        let mounts = spec
            .mounts
            .iter()
            .map(|mount| {
                let mut table = Table::new();
                table.insert("source".into(), text(mount.source.clone()));
                table.insert("destination".into(), text(mount.destination.clone()));
                if let Some(groups) = &mount.processes {
                    table.insert("processes".into(), strings(groups));
                }
                if mount.shared {
                    table.insert("shared".into(), Value::Boolean(true));
                }
                if let Some(size_mib) = mount.size_mib {
                    table.insert("initial_size".into(), text(format!("{size_mib}mb")));
                }
                Value::Table(table)
            })
            .collect();
        root.insert("mounts".into(), Value::Array(mounts));
    }
    if !spec.statics.is_empty() {
        let statics = spec
            .statics
            .iter()
            .map(|entry| {
                let mut table = Table::new();
                table.insert("guest_path".into(), text(entry.guest_path.clone()));
                table.insert("url_prefix".into(), text(entry.url_prefix.clone()));
                Value::Table(table)
            })
            .collect();
        root.insert("statics".into(), Value::Array(statics));
    }
    if spec.resources.postgres || spec.resources.redis {
        let mut resources = Table::new();
        resources.insert("postgres".into(), Value::Boolean(spec.resources.postgres));
        resources.insert("redis".into(), Value::Boolean(spec.resources.redis));
        root.insert("resources".into(), Value::Table(resources));
    }
    if !spec.jobs.is_empty() {
        let jobs = spec
            .jobs
            .iter()
            .map(|job| {
                let mut table = Table::new();
                table.insert("name".into(), text(job.name.clone()));
                table.insert("command".into(), text(job.command.clone()));
                if let Some(schedule) = &job.schedule {
                    table.insert("schedule".into(), text(schedule.clone()));
                }
                if let Some(zone) = &job.time_zone {
                    table.insert("time_zone".into(), text(zone.clone()));
                }
                table.insert("tasks".into(), Value::Integer(job.tasks.into()));
                table.insert("parallelism".into(), Value::Integer(job.parallelism.into()));
                table.insert("max_retries".into(), Value::Integer(job.max_retries.into()));
                table.insert("timeout".into(), duration(job.timeout));
                table.insert(
                    "overlap".into(),
                    text(match job.overlap {
                        OverlapPolicy::Skip => "skip",
                        OverlapPolicy::Allow => "allow",
                        OverlapPolicy::Replace => "replace",
                    }),
                );
                if !job.env.is_empty() {
                    table.insert("env".into(), map(&job.env));
                }
                Value::Table(table)
            })
            .collect();
        root.insert("jobs".into(), Value::Array(jobs));
    }
    let mut out = String::from("# Written by `berth export fly` from the app's model.\n");
    out.push_str(&toml::to_string(&root).expect("a table of plain values serialises"));
    out
}

fn http_service(spec: &AppSpec) -> Table {
    let http = &spec.http;
    let mut table = Table::new();
    if let Some(port) = http.internal_port {
        table.insert("internal_port".into(), Value::Integer(port.into()));
    }
    table.insert("force_https".into(), Value::Boolean(http.force_https));
    if let Some(groups) = &http.processes {
        table.insert("processes".into(), strings(groups));
    }
    let scaling = &http.scaling;
    let defaults = Scaling::default();
    table.insert(
        "auto_stop_machines".into(),
        Value::Boolean(scaling.auto_stop),
    );
    table.insert(
        "auto_start_machines".into(),
        Value::Boolean(scaling.auto_start),
    );
    table.insert(
        "min_machines_running".into(),
        Value::Integer(scaling.min.into()),
    );
    if let Some(max) = scaling.max {
        table.insert("max_machines_running".into(), Value::Integer(max.into()));
    }
    if scaling.idle_timeout != defaults.idle_timeout {
        table.insert("idle_timeout".into(), duration(scaling.idle_timeout));
    }
    if scaling.scale_in_delay != defaults.scale_in_delay {
        table.insert("scale_in_delay".into(), duration(scaling.scale_in_delay));
    }
    let mut concurrency = Table::new();
    concurrency.insert("type".into(), text(scaling.limit_type.clone()));
    if let Some(soft) = scaling.soft_limit {
        concurrency.insert("soft_limit".into(), Value::Integer(soft.into()));
    }
    if let Some(hard) = scaling.hard_limit {
        concurrency.insert("hard_limit".into(), Value::Integer(hard.into()));
    }
    table.insert("concurrency".into(), Value::Table(concurrency));
    // Checks of the HTTP port here; the others are top-level [checks].
    let checks: Vec<Value> = std::iter::once(&http.check)
        .chain(&http.extra_checks)
        .filter(|check| check.port.is_none() && check.processes.is_none())
        .map(|check| Value::Table(check_table(check)))
        .collect();
    table.insert("checks".into(), Value::Array(checks));
    table
}

/// One health check as fly writes it.
fn check_table(check: &crate::HealthCheck) -> Table {
    let mut table = Table::new();
    match &check.http_path {
        Some(path) => {
            table.insert("type".into(), text("http"));
            table.insert("path".into(), text(path.clone()));
        }
        None => {
            table.insert("type".into(), text("tcp"));
        }
    }
    if let Some(port) = check.port {
        table.insert("port".into(), Value::Integer(port.into()));
    }
    if let Some(method) = &check.method {
        table.insert("method".into(), text(method.clone()));
    }
    if !check.headers.is_empty() {
        table.insert("headers".into(), map(&check.headers));
    }
    if let Some(groups) = &check.processes {
        table.insert("processes".into(), strings(groups));
    }
    table.insert("interval".into(), duration(check.interval));
    table.insert("timeout".into(), duration(check.timeout));
    if !check.grace_period.is_zero() {
        table.insert("grace_period".into(), duration(check.grace_period));
    }
    table
}

/// The TCP services as `[[services]]` and the checks on other ports (or
/// of named groups) as `[checks]`.
fn services_and_checks(spec: &AppSpec, root: &mut Table) {
    let services: Vec<Value> = spec
        .tcp_services
        .iter()
        .map(|service| {
            let mut table = Table::new();
            table.insert("protocol".into(), text("tcp"));
            table.insert(
                "internal_port".into(),
                Value::Integer(service.internal_port.into()),
            );
            if let Some(groups) = &service.processes {
                table.insert("processes".into(), strings(groups));
            }
            let ports = service
                .ports
                .iter()
                .map(|port| {
                    let mut entry = Table::new();
                    entry.insert("port".into(), Value::Integer(port.port.into()));
                    let mut handlers = Vec::new();
                    if port.tls {
                        handlers.push("tls".to_string());
                    }
                    if port.proxy_proto {
                        handlers.push("proxy_proto".to_string());
                    }
                    entry.insert("handlers".into(), strings(&handlers));
                    if port.proxy_proto_v1 {
                        let mut options = Table::new();
                        options.insert("version".into(), text("v1"));
                        entry.insert("proxy_proto_options".into(), Value::Table(options));
                    }
                    Value::Table(entry)
                })
                .collect();
            table.insert("ports".into(), Value::Array(ports));
            Value::Table(table)
        })
        .collect();
    if !services.is_empty() {
        root.insert("services".into(), Value::Array(services));
    }
    let checks: Table = std::iter::once(&spec.http.check)
        .chain(&spec.http.extra_checks)
        .filter(|check| check.port.is_some() || check.processes.is_some())
        .enumerate()
        .map(|(index, check)| {
            (
                format!("check-{}", index + 1),
                Value::Table(check_table(check)),
            )
        })
        .collect();
    if !checks.is_empty() {
        root.insert("checks".into(), Value::Table(checks));
    }
}

/// A cargo-chef Dockerfile that builds `binary` and runs the web process.
pub fn to_dockerfile(spec: &AppSpec, binary: &str) -> String {
    let commands = spec.process_commands(binary);
    let web = commands
        .iter()
        .find(|(group, _)| spec.serves_http(group))
        .or_else(|| commands.iter().next())
        .map(|(_, command)| command.clone())
        .unwrap_or_else(|| binary.to_string());
    let port = spec.http.internal_port.unwrap_or(8080);
    let mut env = String::new();
    for (key, value) in &spec.env {
        env.push_str(&format!("ENV {key}={}\n", shell_quote(value)));
    }
    format!(
        "# Written by `berth export dockerfile` from the app's model.\n\
         # cargo-chef caches the dependencies in their own layer.\n\
         FROM lukemathwalker/cargo-chef:latest-rust-1 AS chef\n\
         WORKDIR /app\n\n\
         FROM chef AS planner\n\
         COPY . .\n\
         RUN cargo chef prepare --recipe-path recipe.json\n\n\
         FROM chef AS builder\n\
         COPY --from=planner /app/recipe.json recipe.json\n\
         RUN cargo chef cook --release --recipe-path recipe.json\n\
         COPY . .\n\
         RUN cargo build --release --bin {binary}\n\n\
         FROM debian:bookworm-slim AS runtime\n\
         RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*\n\
         WORKDIR /app\n\
         COPY --from=builder /app/target/release/{binary} /usr/local/bin/{binary}\n\
         ENV PORT={port}\n\
         {env}\
         EXPOSE {port}\n\
         CMD [\"/bin/sh\", \"-c\", {command}]\n",
        command = json_string(&format!("exec {web}")),
    )
}

fn shell_quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

fn json_string(value: &str) -> String {
    serde_json::to_string(value).expect("a string serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) {
        let spec = crate::parse_spec("berth.toml", text).unwrap().spec;
        let exported = to_fly_toml(&spec);
        let again = crate::parse_spec("fly.toml", &exported)
            .unwrap_or_else(|err| panic!("{err}\n{exported}"));
        assert!(
            again.warnings.is_empty(),
            "{:?}\n{exported}",
            again.warnings
        );
        assert_eq!(again.spec, spec, "{exported}");
    }

    #[test]
    fn fly_export_imports_back_to_the_same_model() {
        round_trip("");
        round_trip(include_str!("../../../examples/todo/berth.toml"));
        round_trip(
            r#"
app = "shop"
kill_timeout = 12
kill_signal = "SIGQUIT"
[build]
bin = "shop"
[deploy]
release_command = "shop migrate"
strategy = "immediate"
wait_timeout = "90s"
[env]
RUST_LOG = "info"
QUOTED = "a \"b\" c"
[processes]
web = "shop serve"
worker = "shop work --queue high"
[http_service]
internal_port = 8080
force_https = true
processes = ["web"]
auto_stop_machines = "stop"
min_machines_running = 1
max_machines_running = 6
idle_timeout = "10m"
scale_in_delay = "45s"
  [http_service.concurrency]
  type = "connections"
  soft_limit = 30
  hard_limit = 50
  [[http_service.checks]]
  path = "/healthz"
  interval = "5s"
  timeout = "1500ms"
[[vm]]
size = "performance-2x"
processes = ["web"]
[[vm]]
memory = "768mb"
cpus = 0.5
processes = ["worker"]
[[mounts]]
source = "data"
destination = "/data"
[resources]
postgres = true
[[jobs]]
name = "nightly"
command = "shop report"
schedule = "0 3 * * *"
time_zone = "Europe/Amsterdam"
tasks = 4
parallelism = 2
max_retries = 1
timeout = "20m"
overlap = "replace"
env = { MODE = "full" }
"#,
        );
    }

    #[test]
    fn the_dockerfile_builds_with_cargo_chef_and_runs_the_web_process() {
        let spec = crate::parse_spec(
            "berth.toml",
            "[env]\nGREETING = \"hi\"\n[processes]\nweb = \"shop serve\"\nworker = \"shop work\"\n",
        )
        .unwrap()
        .spec;
        let dockerfile = to_dockerfile(&spec, "shop");
        assert!(
            dockerfile.contains("RUN cargo chef cook --release"),
            "{dockerfile}"
        );
        assert!(
            dockerfile.contains("RUN cargo build --release --bin shop"),
            "{dockerfile}"
        );
        assert!(dockerfile.contains("ENV GREETING=\"hi\""), "{dockerfile}");
        assert!(
            dockerfile.contains("CMD [\"/bin/sh\", \"-c\", \"exec shop serve\"]"),
            "{dockerfile}"
        );
    }
}
