//! Heroku's and Dokku's `app.json`, beside a Procfile.
//!
//! The Procfile names the processes; app.json adds what it does not:
//! `scripts.dokku.predeploy` (the release command) and `postdeploy` (a
//! command run once the release serves), `cron` (jobs on a schedule),
//! `healthchecks` (the web check), `formation` (instance counts and dyno
//! sizes), `env` (values, `generator: "secret"`, `required` values asked for
//! once) and `addons` (Heroku Postgres and Redis become berth's). Keys that
//! describe Heroku itself (buildpacks, stack, logo…) are accepted and
//! reported once.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Location, SpecError, SpecProblem};
use crate::{
    AppSpec, DEFAULT_PROCESS, EnvFrom, EnvSource, JobSpec, OverlapPolicy, ParsedSpec, VmSpec,
};

/// The file name.
pub const APP_JSON: &str = "app.json";

/// Heroku dyno sizes: name, CPUs, memory in MiB.
pub const HEROKU_DYNO_SIZES: &[(&str, f64, u32)] = &[
    ("eco", 1.0, 512),
    ("basic", 1.0, 512),
    ("standard-1x", 1.0, 512),
    ("standard-2x", 2.0, 1024),
    ("performance-m", 2.0, 2560),
    ("performance-l", 8.0, 14336),
    ("performance-l-ram", 4.0, 30720),
    ("performance-xl", 8.0, 63488),
    ("performance-2xl", 16.0, 129024),
];

/// Dyno sizes Heroku no longer sells, and the size each became.
const RETIRED_DYNO_SIZES: &[(&str, &str)] = &[
    ("free", "eco"),
    ("hobby", "basic"),
    ("1x", "standard-1x"),
    ("2x", "standard-2x"),
    ("standard", "standard-1x"),
    ("performance", "performance-m"),
    ("px", "performance-l"),
    ("private-s", "performance-m"),
    ("private-m", "performance-l"),
    ("private-l", "performance-l-ram"),
    ("shield-s", "performance-m"),
    ("shield-m", "performance-l"),
    ("shield-l", "performance-l-ram"),
];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawAppJson {
    name: Option<String>,
    scripts: RawScripts,
    cron: Vec<RawCron>,
    healthchecks: BTreeMap<String, Vec<RawHealthcheck>>,
    formation: BTreeMap<String, RawFormation>,
    env: BTreeMap<String, RawEnv>,
    addons: Vec<RawAddon>,
    // Heroku's own.
    description: Option<serde_json::Value>,
    keywords: Option<serde_json::Value>,
    website: Option<serde_json::Value>,
    repository: Option<serde_json::Value>,
    logo: Option<serde_json::Value>,
    success_url: Option<serde_json::Value>,
    buildpacks: Option<serde_json::Value>,
    stack: Option<serde_json::Value>,
    environments: Option<serde_json::Value>,
    image: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawScripts {
    dokku: RawDokkuScripts,
    postdeploy: Option<RawScript>,
    #[serde(rename = "pr-predestroy")]
    pr_predestroy: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawDokkuScripts {
    predeploy: Option<RawScript>,
    postdeploy: Option<RawScript>,
}

/// A script: a command, or Heroku's `{ "command": …, "size": … }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawScript {
    Command(String),
    Object {
        command: String,
        #[serde(rename = "size")]
        _size: Option<serde_json::Value>,
    },
}

impl RawScript {
    fn command(&self) -> String {
        match self {
            RawScript::Command(command) | RawScript::Object { command, .. } => command.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawCron {
    command: String,
    schedule: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawHealthcheck {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    path: Option<String>,
    timeout: Option<u64>,
    wait: Option<u64>,
    attempts: Option<u32>,
    initial_delay: Option<u64>,
    content: Option<String>,
    command: Option<serde_json::Value>,
    port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawFormation {
    quantity: Option<u32>,
    size: Option<String>,
    max_parallelism: Option<serde_json::Value>,
}

/// An env entry: a plain value or Heroku's object form.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawEnv {
    Value(serde_json::Value),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawAddon {
    Name(String),
    Plan {
        plan: String,
        #[serde(rename = "as")]
        _as: Option<String>,
        #[serde(rename = "options")]
        _options: Option<serde_json::Value>,
    },
}

fn locate(text: &str, needle: &str) -> Option<Location> {
    text.find(needle)
        .map(|offset| Location::of_offset(text, offset))
}

/// Reads an app.json.
pub fn parse_app_json(file: &str, text: &str) -> Result<ParsedSpec, SpecError> {
    let mut unknown = Vec::new();
    // Real app.json files give a key twice (two "stack"s): the last wins,
    // as in JSON parsers, with a warning.
    let (twice, deduplicated) = crate::json_keys::last_value_wins(text).unwrap_or_default();
    let deduplicated_text;
    let text_read = if twice.is_empty() {
        text
    } else {
        deduplicated_text = serde_json::to_string_pretty(&deduplicated).unwrap_or_default();
        &deduplicated_text
    };
    let mut deserializer = serde_json::Deserializer::from_str(text_read);
    let raw: RawAppJson =
        serde_ignored::deserialize(&mut deserializer, |path| unknown.push(path.to_string()))
            .map_err(|err| {
                let message = crate::error::without_type_names(&err.to_string(), "an object");
                let message = message
                    .split_once(" at line ")
                    .map_or(message.clone(), |(text, _)| text.to_string());
                SpecError::single(
                    file,
                    Some(Location {
                        line: err.line(),
                        column: err.column(),
                    }),
                    message,
                )
            })?;
    let mut warnings: Vec<String> = unknown
        .into_iter()
        .map(|key| format!("{file}: unknown key `{key}` is ignored"))
        .collect();
    for key in twice {
        warnings.push(format!(
            "{file}: `{key}` is given twice; the last value is used"
        ));
    }
    let mut problems = Vec::new();
    let mut spec = AppSpec::default();
    if let Some(name) = &raw.name {
        spec.app = Some(crate::app_name_from_package(name));
    }

    let scripts = &raw.scripts;
    spec.deploy.release_command = scripts.dokku.predeploy.as_ref().map(RawScript::command);
    spec.deploy.post_deploy_command = scripts.dokku.postdeploy.as_ref().map(RawScript::command);
    if scripts.postdeploy.is_some() {
        warnings.push(format!(
            "{file}: scripts.postdeploy (run once when a Heroku review app is made) is ignored; scripts.dokku.postdeploy runs after each deploy"
        ));
    }

    for (index, cron) in raw.cron.iter().enumerate() {
        if let Err(message) = crate::Schedule::parse(&cron.schedule, None) {
            problems.push(SpecProblem {
                location: locate(text, &format!("\"{}\"", cron.schedule)),
                message,
            });
            continue;
        }
        spec.jobs.push(JobSpec {
            name: format!("cron-{}", index + 1),
            command: cron.command.clone(),
            schedule: Some(cron.schedule.clone()),
            time_zone: None,
            tasks: 1,
            parallelism: 1,
            max_retries: 0,
            timeout: Duration::from_secs(3600),
            env: BTreeMap::new(),
            overlap: OverlapPolicy::Skip,
        });
    }

    for (process, checks) in &raw.healthchecks {
        let Some(check) = checks.iter().find(|check| check.path.is_some()) else {
            continue;
        };
        if process != DEFAULT_PROCESS {
            warnings.push(format!(
                "{file}: health checks of `{process}` are ignored: berth checks the process that serves HTTP"
            ));
            continue;
        }
        spec.http.check.http_path = check.path.clone();
        if let Some(timeout) = check.timeout {
            spec.http.check.timeout = Duration::from_secs(timeout.max(1));
        }
        if let Some(wait) = check.wait {
            spec.http.check.interval = Duration::from_secs(wait.max(1));
        }
        if check.content.is_some() || check.attempts.is_some() || check.initial_delay.is_some() {
            warnings.push(format!(
                "{file}: healthchecks content, attempts and initialDelay are not used: berth checks for a 2xx until the deploy's wait_timeout"
            ));
        }
        let _ = (&check.kind, &check.name, &check.command, check.port);
    }

    for (process, formation) in &raw.formation {
        if let Some(quantity) = formation.quantity
            && process == DEFAULT_PROCESS
        {
            spec.http.scaling.min = quantity;
            spec.http.scaling.max = Some(quantity);
        } else if formation.quantity.is_some() {
            warnings.push(format!(
                "{file}: formation.{process}.quantity is ignored: set it with `berth scale {process}=N`"
            ));
        }
        if let Some(size) = &formation.size {
            let normal = size.to_ascii_lowercase();
            let retired = RETIRED_DYNO_SIZES
                .iter()
                .find(|(old, _)| *old == normal)
                .map(|(_, now)| *now);
            if let Some(now) = retired {
                warnings.push(format!(
                    "{file}: dyno size `{size}` is retired on Heroku; read as `{now}`"
                ));
            }
            let normal = retired.unwrap_or(&normal);
            match HEROKU_DYNO_SIZES
                .iter()
                .find(|(name, _, _)| *name == normal)
            {
                Some((name, cpus, memory_mb)) => spec.vms.push(VmSpec {
                    memory_mb: *memory_mb,
                    cpus: *cpus,
                    size: Some(format!("heroku-{name}")),
                    processes: Some(vec![process.clone()]),
                    pids: None,
                }),
                None => problems.push(SpecProblem {
                    location: locate(text, &format!("\"{size}\"")),
                    message: format!("unknown dyno size `{size}`"),
                }),
            }
        }
        let _ = &formation.max_parallelism;
    }

    for (key, RawEnv::Value(value)) in &raw.env {
        match value {
            serde_json::Value::Object(fields) => {
                if let Some(value) = fields.get("value").filter(|value| !value.is_null()) {
                    spec.env.insert(key.clone(), json_scalar(value));
                } else if fields.get("generator").and_then(|g| g.as_str()) == Some("secret") {
                    spec.env_from.push(EnvFrom {
                        key: key.clone(),
                        source: EnvSource::Generated,
                    });
                } else if fields.get("required").and_then(|r| r.as_bool()) != Some(false) {
                    spec.env_from.push(EnvFrom {
                        key: key.clone(),
                        source: EnvSource::AskOnce,
                    });
                }
            }
            other => {
                spec.env.insert(key.clone(), json_scalar(other));
            }
        }
    }

    for addon in &raw.addons {
        let plan = match addon {
            RawAddon::Name(name) => name.as_str(),
            RawAddon::Plan { plan, .. } => plan.as_str(),
        };
        let service = plan.split(':').next().unwrap_or(plan);
        match service {
            "heroku-postgresql" | "postgres" | "postgresql" | "dokku-postgres" => {
                spec.resources.postgres = true
            }
            "heroku-redis" | "redis" | "rediscloud" | "dokku-redis" => spec.resources.redis = true,
            other => warnings.push(format!(
                "{file}: add-on `{other}` is not provided by berth and is ignored"
            )),
        }
    }
    let ignored: Vec<&str> = [
        ("description", raw.description.is_some()),
        ("keywords", raw.keywords.is_some()),
        ("website", raw.website.is_some()),
        ("repository", raw.repository.is_some()),
        ("logo", raw.logo.is_some()),
        ("success_url", raw.success_url.is_some()),
        ("buildpacks", raw.buildpacks.is_some()),
        ("stack", raw.stack.is_some()),
        ("environments", raw.environments.is_some()),
        ("image", raw.image.is_some()),
        ("scripts.pr-predestroy", scripts.pr_predestroy.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, present)| present.then_some(key))
    .collect();
    if !ignored.is_empty() {
        warnings.push(format!(
            "{file}: {} accepted and ignored (berth builds with cargo)",
            ignored.join(", ")
        ));
    }
    if !problems.is_empty() {
        return Err(SpecError {
            file: file.to_string(),
            problems,
        });
    }
    Ok(ParsedSpec { spec, warnings })
}

fn json_scalar(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Fills what `base` (from berth.toml, fly.toml or a Procfile) leaves out
/// with what app.json says, and says where app.json gave way.
pub(crate) fn merge(base: &mut ParsedSpec, app_json: ParsedSpec) {
    let spec = &mut base.spec;
    let extra = app_json.spec;
    let mut gave_way = Vec::new();
    if spec.app.is_none() {
        spec.app = extra.app;
    }
    match (&spec.deploy.release_command, extra.deploy.release_command) {
        (None, command) => spec.deploy.release_command = command,
        (Some(_), Some(_)) => gave_way.push("scripts.dokku.predeploy"),
        _ => {}
    }
    if spec.deploy.post_deploy_command.is_none() {
        spec.deploy.post_deploy_command = extra.deploy.post_deploy_command;
    }
    spec.jobs.extend(extra.jobs);
    // app.json's check fills in only where the spec declares none.
    let declared =
        spec.http.check != crate::HealthCheck::default() || !spec.http.extra_checks.is_empty();
    if !declared {
        spec.http.check = extra.http.check;
    } else if extra.http.check.http_path.is_some() {
        gave_way.push("healthchecks");
    }
    if !spec.http.scaling.is_active() {
        spec.http.scaling.min = extra.http.scaling.min;
        spec.http.scaling.max = extra.http.scaling.max;
    }
    if spec.vms.is_empty() {
        spec.vms = extra.vms;
    } else if !extra.vms.is_empty() {
        gave_way.push("formation sizes");
    }
    for (key, value) in extra.env {
        spec.env.entry(key).or_insert(value);
    }
    spec.env_from.extend(extra.env_from);
    spec.resources.postgres |= extra.resources.postgres;
    spec.resources.redis |= extra.resources.redis;
    for key in gave_way {
        base.warnings.push(format!(
            "app.json `{key}` is ignored: the spec file sets it"
        ));
    }
    base.warnings.extend(app_json.warnings);
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../../tests/fixtures/app-json/app.json");

    #[test]
    fn the_fixture_maps_scripts_cron_checks_formation_env_and_addons() {
        let parsed = parse_app_json(APP_JSON, FIXTURE).unwrap();
        let spec = parsed.spec;
        assert_eq!(spec.app.as_deref(), Some("plain-shop"));
        assert_eq!(
            spec.deploy.release_command.as_deref(),
            Some("echo predeploy from app.json")
        );
        assert_eq!(
            spec.deploy.post_deploy_command.as_deref(),
            Some("echo postdeploy from app.json")
        );
        assert_eq!(spec.jobs.len(), 1);
        assert_eq!(spec.jobs[0].schedule.as_deref(), Some("*/5 * * * *"));
        assert_eq!(spec.http.check.http_path.as_deref(), Some("/whoami"));
        assert_eq!(spec.http.check.timeout, Duration::from_secs(3));
        assert_eq!((spec.http.scaling.min, spec.http.scaling.max), (1, Some(1)));
        assert_eq!(spec.vms[0].memory_mb, 1024);
        assert_eq!(spec.env["GREETING"], "hi from app.json");
        assert_eq!(spec.env["WORKERS"], "2");
        assert!(spec.env_from.contains(&EnvFrom {
            key: "SECRET_KEY_BASE".into(),
            source: EnvSource::Generated
        }));
        assert!(spec.resources.postgres && !spec.resources.redis);
        let warnings = parsed.warnings.join("\n");
        assert!(warnings.contains("buildpacks"), "{warnings}");
        assert!(warnings.contains("add-on `papertrail`"), "{warnings}");
    }

    #[test]
    fn scripts_may_be_heroku_objects() {
        let text =
            r#"{"scripts": {"dokku": {"predeploy": {"command": "app migrate", "size": "basic"}}}}"#;
        let spec = parse_app_json(APP_JSON, text).unwrap().spec;
        assert_eq!(spec.deploy.release_command.as_deref(), Some("app migrate"));
    }

    #[test]
    fn mistakes_name_file_line_and_column() {
        let err = parse_app_json(
            APP_JSON,
            "{\n  \"cron\": [{\"command\": \"x\", \"schedule\": \"99 * * * *\"}]\n}",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("app.json:2:41: schedule `99 * * * *`"),
            "{err}"
        );
        let err = parse_app_json(APP_JSON, "{\n  \"name\": 3\n}")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("app.json:2:"), "{err}");
    }
}
