//! Stage one: the lenient raw form of berth.toml / fly.toml, and its
//! validation into [`AppSpec`].

mod shapes;
mod values;

pub(crate) use cargo::parse_cargo_manifest;
use deploy::{validate_build, validate_deploy, validate_jobs};
use http::validate_http;
pub(crate) use resources::{valid_mount_destination, valid_volume_name};
use resources::{validate_mounts, validate_statics, validate_vms};
use shapes::{OneOrMany, Problems, RawExperimental, RawSpec, StringOrList};
pub use values::shell_join;
pub(crate) use values::size_text_bytes;
use values::{Unit, duration_value, valid_process_name, validate_env};
mod budget;
mod cargo;
mod checks;
mod deploy;
mod edge;
mod http;
mod logs;
mod resources;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::StopSignal;
use crate::duration::parse_duration;
use crate::error::{Location, SpecError, SpecProblem};
use crate::jobs::{JobSpec, OverlapPolicy, Schedule};
use crate::model::{
    AppSpec, BuildSpec, BuilderKind, DeploySpec, DeployStrategy, HealthCheck, HttpService,
    StaticSpec,
};
use crate::{CargoPackage, ParsedSpec};

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
    let message = crate::error::without_type_names(err.message().trim(), "a table");
    SpecError::single(file, location, message)
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
    if let Some(console) = &raw.console_command {
        if console.get_ref().trim().is_empty() {
            problems.at(console, "console_command is empty".to_string());
        } else {
            spec.console_command = Some(console.get_ref().clone());
        }
    }
    if let Some(signal) = &raw.kill_signal {
        match StopSignal::parse(signal.get_ref()) {
            Some(StopSignal::Sigterm) => {}
            Some(parsed) => spec.kill_signal = Some(parsed),
            None => warnings.push(format!(
                "{file}: kill_signal = \"{}\" is not a signal berth sends to stop an instance (known: {}); berth sends SIGTERM",
                signal.get_ref(),
                StopSignal::known()
            )),
        }
    }

    let ignored_here = [
        ("primary_region", raw.primary_region.is_some()),
        ("swap_size_mb", raw.swap_size_mb.is_some()),
        ("metrics", raw.metrics.is_some()),
    ];
    for (key, present) in ignored_here {
        if present {
            warnings.push(format!(
                "{file}: `{key}` has no meaning on one machine and is ignored"
            ));
        }
    }
    let has_kill_timeout = raw.kill_timeout.is_some();
    let experimental_command = raw.experimental.map(|experimental| {
        experimental_command(
            file,
            experimental,
            has_kill_timeout,
            &mut spec,
            problems,
            warnings,
        )
    });
    if let Some(budget) = raw.budget {
        spec.budget = Some(budget::validate_budget(budget, problems));
    }
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

    if let Some(build) = raw.build {
        spec.build = validate_build(file, build, problems, warnings);
    }
    let strategy = raw
        .deploy
        .as_ref()
        .and_then(|deploy| deploy.strategy.clone());
    if let Some(deploy) = raw.deploy {
        spec.deploy = validate_deploy(file, deploy, problems, warnings);
    }
    spec.env = validate_env(raw.env, "[env]", problems, warnings, file);

    for (name, command) in &raw.processes.0 {
        if !valid_process_name(name) {
            problems.at(
                command,
                format!(
                    "process group `{name}` must be lowercase letters, digits, `-` or `_`, starting with a letter"
                ),
            );
        } else {
            // An empty command is fly's "the image's CMD": here, the
            // default binary (or `[experimental] cmd`).
            spec.processes
                .insert(name.clone(), command.get_ref().trim().to_string());
        }
    }
    if let Some(experimental) = experimental_command {
        if spec.processes.is_empty() {
            // Without `cmd` the default binary runs (the image's CMD).
            let command = experimental.apply("");
            if !experimental.cmd.is_empty() {
                spec.processes
                    .insert(crate::DEFAULT_PROCESS.to_string(), command);
            }
        } else {
            for group_command in spec.processes.values_mut() {
                *group_command = experimental.apply(group_command);
            }
        }
    }

    spec.jobs = validate_jobs(raw.jobs, problems);
    for range in raw.egress.map(|egress| egress.allow).unwrap_or_default() {
        match range.get_ref().parse::<berth_proto::Ipv4Cidr>() {
            Ok(cidr) => spec.egress.allow.push(cidr),
            Err(why) => problems.at(&range, format!("[egress] allow: {why}")),
        }
    }
    for caller in raw
        .internal
        .map(|internal| internal.allow)
        .unwrap_or_default()
    {
        match berth_proto::validate_app_name(caller.get_ref()) {
            Ok(()) if !spec.internal.allow.contains(caller.get_ref()) => {
                spec.internal.allow.push(caller.into_inner());
            }
            Ok(()) => {}
            Err(why) => problems.at(&caller, format!("[internal] allow: {why}")),
        }
    }
    if let Some(rules) = raw.edge {
        spec.edge = edge::validate_edge(rules, problems);
    }
    if let Some(retention) = raw.logs {
        spec.logs = logs::validate_logs(retention, problems);
    }
    if let Some(resources) = raw.resources {
        spec.resources.postgres = resources.postgres.is_some_and(|on| *on.get_ref());
        spec.resources.redis = resources.redis.is_some_and(|on| *on.get_ref());
    }
    if let Some(vms) = raw.vm {
        spec.vms = validate_vms(file, vms.into_vec(), problems, warnings);
    }
    let mounts: Vec<_> = [raw.mount, raw.mounts]
        .into_iter()
        .flatten()
        .flat_map(OneOrMany::into_vec)
        .collect();
    if !mounts.is_empty() {
        spec.mounts = validate_mounts(file, mounts, problems, warnings);
    }
    // `[build] packages` mount their root's /usr over the instance's.
    if !spec.build.packages.is_empty()
        && let Some(mount) = spec
            .mounts
            .iter()
            .find(|mount| mount.destination.starts_with("/usr/"))
    {
        problems.found.push(SpecProblem {
            location: None,
            message: format!(
                "volume `{}` at {} cannot be used with [build] packages, whose root is mounted over /usr: mount it elsewhere",
                mount.source, mount.destination
            ),
        });
    }
    // Both start new instances beside old ones: a volume two processes
    // must not write at once cannot take that (Fly refuses them too).
    if let Some(strategy) = &strategy
        && matches!(
            spec.deploy.strategy,
            DeployStrategy::Bluegreen | DeployStrategy::Canary
        )
        && let Some(mount) = spec.mounts.iter().find(|mount| !mount.shared)
    {
        problems.at(
            strategy,
            format!(
                "strategy \"{}\" runs new instances beside old ones, and volume `{}` is not shared: use \"rolling\" (a group with a volume is replaced stop-first) or mark the volume `shared = true` if two instances may write it at once",
                strategy.get_ref(),
                mount.source
            ),
        );
    }
    (spec.http, spec.tcp_services) = validate_http(
        file,
        raw.http_service,
        raw.services.map(OneOrMany::into_vec).unwrap_or_default(),
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

/// `[experimental]`: `cmd` (with `entrypoint` before it) is the command of
/// groups that give none; `kill_timeout` is the top-level one's fallback.
fn experimental_command(
    file: &str,
    experimental: RawExperimental,
    has_kill_timeout: bool,
    spec: &mut AppSpec,
    problems: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> ExperimentalCommand {
    if experimental.exec.is_some() {
        warnings.push(format!(
            "{file}: [experimental] exec replaces a Fly machine's init, which berth does not have; it is ignored (use `cmd` or [processes])"
        ));
    }
    if let Some(timeout) = &experimental.kill_timeout
        && !has_kill_timeout
        && let Some(duration) = duration_value(timeout, Unit::Seconds, "kill_timeout", problems)
    {
        spec.kill_timeout = duration;
    }
    let ignored: Vec<&str> = [
        ("private_network", experimental.private_network.is_some()),
        ("enable_consul", experimental.enable_consul.is_some()),
        ("enable_etcd", experimental.enable_etcd.is_some()),
        (
            "allowed_public_ports",
            experimental.allowed_public_ports.is_some(),
        ),
        ("metrics_port", experimental.metrics_port.is_some()),
        ("metrics_path", experimental.metrics_path.is_some()),
        ("machine_config", experimental.machine_config.is_some()),
        ("lazy_load_images", experimental.lazy_load_images.is_some()),
        ("attached", experimental.attached.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, present)| present.then_some(key))
    .collect();
    if !ignored.is_empty() {
        warnings.push(format!(
            "{file}: [experimental] {} has no meaning on one machine and is ignored",
            ignored.join(", ")
        ));
    }
    // A failed deploy always leaves the old release serving here.
    let _ = experimental.auto_rollback;
    // A list is arguments; a string is a command line (`cmd = "npm run
    // prod"` in real files), which berth's shell splits.
    let line = |part: Option<Spanned<StringOrList>>| match part.map(Spanned::into_inner) {
        None => String::new(),
        Some(StringOrList::One(line)) => line.trim().to_string(),
        Some(StringOrList::Many(words)) => shell_join(&words),
    };
    let entrypoint = line(experimental.entrypoint);
    let cmd = line(experimental.cmd);
    let system = [
        "/bin/",
        "/sbin/",
        "/usr/bin/",
        "/usr/sbin/",
        "/usr/local/bin/",
    ];
    let first_word = |text: &str| {
        text.split_whitespace()
            .next()
            .map(|word| word.trim_matches('\'').to_string())
    };
    if let Some(first) = first_word(&entrypoint).or_else(|| first_word(&cmd))
        && first.starts_with('/')
        && !system.iter().any(|dir| first.starts_with(dir))
    {
        warnings.push(format!(
            "{file}: [experimental] runs `{first}`, a path in the Docker image; berth runs commands in the slug (the built binaries are on PATH by name)"
        ));
    }
    ExperimentalCommand { entrypoint, cmd }
}

/// `[experimental]`'s command: Fly runs `entrypoint` before each group's
/// command, and `cmd` when a group gives none.
pub(super) struct ExperimentalCommand {
    entrypoint: String,
    cmd: String,
}

impl ExperimentalCommand {
    /// What a group whose command is `command` (empty: none) runs.
    fn apply(&self, command: &str) -> String {
        let rest = if command.is_empty() {
            self.cmd.as_str()
        } else {
            command
        };
        match (self.entrypoint.is_empty(), rest.is_empty()) {
            (true, _) => rest.to_string(),
            (false, true) => self.entrypoint.clone(),
            (false, false) => format!("{} {rest}", self.entrypoint),
        }
    }
}
