//! Stage one: the lenient raw form of berth.toml / fly.toml, and its
//! validation into [`AppSpec`].

mod shapes;
mod values;

pub(crate) use cargo::parse_cargo_manifest;
use deploy::{validate_build, validate_deploy, validate_jobs};
use http::validate_http;
pub(crate) use resources::{valid_mount_destination, valid_volume_name};
use resources::{validate_mounts, validate_statics, validate_vms};
use shapes::{Problems, RawSpec};
pub(crate) use values::size_text_bytes;
use values::{Unit, duration_value, valid_process_name, validate_env};
mod cargo;
mod deploy;
mod edge;
mod http;
mod resources;

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
    let strategy = raw
        .deploy
        .as_ref()
        .and_then(|deploy| deploy.strategy.clone());
    if let Some(deploy) = raw.deploy {
        spec.deploy = validate_deploy(file, deploy, problems, warnings);
    }
    spec.env = validate_env(raw.env, "[env]", problems, warnings, file);

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
