//! A project folder's spec files, read together: `berth.toml` or
//! `fly.toml`, and a Heroku-style `Procfile`.
//!
//! A `Procfile` names process types (`web: hello serve`) and, as `release`,
//! the release command. Alone it makes the spec; beside a `berth.toml` or
//! `fly.toml` it fills only what that file leaves out (its processes, its
//! release command) and says so. The caller reads the files; this module
//! only parses texts.

use crate::Blueprint;
use crate::error::{Location, SpecError, SpecProblem};
use crate::render::RENDER_YAML;
use crate::tree::ProjectTree;
use crate::{ParsedSpec, SPEC_FILE_NAMES, parse_spec};

/// The name of the Procfile.
pub const PROCFILE: &str = "Procfile";

/// Every file name [`parse_project`] looks at, in order.
pub const PROJECT_FILE_NAMES: &[&str] = &[
    "berth.toml",
    "fly.toml",
    "fly.json",
    "fly.yaml",
    "fly.yml",
    PROCFILE,
    crate::APP_JSON,
];

/// The spec of a folder whose spec files are `files` (name and text, any
/// order; names other than [`PROJECT_FILE_NAMES`] are ignored). `None` when
/// it has none of them (zero config).
pub fn parse_project(files: &[(String, String)]) -> Result<Option<ParsedSpec>, SpecError> {
    let text_of = |name: &str| {
        files
            .iter()
            .find(|(file, _)| file == name)
            .map(|(_, text)| text.as_str())
    };
    let main = SPEC_FILE_NAMES
        .iter()
        .find_map(|name| text_of(name).map(|text| (*name, text)));
    let procfile = text_of(PROCFILE)
        .map(|text| parse_procfile(PROCFILE, text))
        .transpose()?;
    let app_json = text_of(crate::APP_JSON)
        .map(|text| crate::parse_app_json(crate::APP_JSON, text))
        .transpose()?;
    let with_app_json = |parsed: Option<ParsedSpec>| match (parsed, app_json.clone()) {
        (Some(mut parsed), Some(extra)) => {
            crate::appjson::merge(&mut parsed, extra);
            Some(parsed)
        }
        (None, extra) => extra,
        (parsed, None) => parsed,
    };
    let Some((name, text)) = main else {
        return Ok(with_app_json(procfile));
    };
    let together = (name == "berth.toml")
        .then(|| text_of("fly.toml"))
        .flatten();
    let mut parsed = match together {
        Some(fly) => read_together(text, fly)?,
        None => parse_spec(name, text)?,
    };
    if let Some(procfile) = procfile {
        let spec = &mut parsed.spec;
        if spec.processes.is_empty() && !procfile.spec.processes.is_empty() {
            spec.processes = procfile.spec.processes;
            parsed.warnings.push(format!(
                "{name} has no [processes]: the Procfile's are used"
            ));
        } else if !procfile.spec.processes.is_empty() {
            parsed.warnings.push(format!(
                "the Procfile's process types are ignored: {name} has [processes]"
            ));
        }
        if spec.deploy.release_command.is_none() {
            spec.deploy.release_command = procfile.spec.deploy.release_command;
        } else if procfile.spec.deploy.release_command.is_some() {
            parsed.warnings.push(format!(
                "the Procfile's `release` is ignored: {name} has a release_command"
            ));
        }
    }
    if let Some(other) = SPEC_FILE_NAMES
        .iter()
        .filter(|other| **other != name && (together.is_none() || **other != "fly.toml"))
        .find(|other| text_of(other).is_some())
    {
        parsed
            .warnings
            .push(format!("{other} is ignored: {name} comes first"));
    }
    Ok(with_app_json(Some(parsed)))
}

/// A `berth.toml` beside a `fly.toml`: both are read, as one file in which
/// the berth.toml's keys win (tables merge key by key; any other value, a
/// list of `[[mounts]]` say, is the berth.toml's whole). Each is checked on
/// its own first, so an error points into the file that has it.
fn read_together(berth: &str, fly: &str) -> Result<ParsedSpec, SpecError> {
    let fly_alone = parse_spec("fly.toml", fly)?;
    let berth_alone = parse_spec("berth.toml", berth)?;
    let table = |file: &str, text: &str| {
        text.parse::<toml::Table>()
            .map_err(|err| SpecError::single(file, None, err.to_string()))
    };
    let mut merged = table("fly.toml", fly)?;
    merge_into(&mut merged, table("berth.toml", berth)?);
    let text = toml::to_string(&merged)
        .map_err(|err| SpecError::single("berth.toml", None, err.to_string()))?;
    let mut parsed = parse_spec("berth.toml", &text).map_err(|err| {
        SpecError::single(
            "berth.toml",
            None,
            format!("berth.toml and fly.toml do not go together: {err}"),
        )
    })?;
    parsed.warnings = fly_alone.warnings;
    parsed.warnings.extend(berth_alone.warnings);
    parsed.warnings.push(
        "berth.toml and fly.toml are read together; where both set a key, berth.toml's wins".into(),
    );
    Ok(parsed)
}

/// `over`'s keys into `base`: tables merge, anything else replaces.
fn merge_into(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(over_inner)) => {
                merge_into(inner, over_inner);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// The spec of the project folder `tree`: its spec files as
/// [`parse_project`] reads them, and, when it is a Shuttle project, what
/// [`detect_shuttle`](crate::detect_shuttle) finds. A Shuttle project
/// without spec files is deployed from the detection alone; beside a
/// `berth.toml` or `fly.toml` the detection fills the bin, the features and
/// the database those leave out.
pub fn load_project(tree: &dyn ProjectTree) -> Result<Option<ParsedSpec>, SpecError> {
    load_project_for(tree, None)
}

/// The apps of a `render.yaml` in `tree`, when berth uses it: there is no
/// `berth.toml` or `fly.toml` beside it (those come first).
pub fn load_blueprint(tree: &dyn ProjectTree) -> Result<Option<Blueprint>, SpecError> {
    if crate::SPEC_FILE_NAMES
        .iter()
        .any(|name| tree.read(name).is_some())
    {
        return Ok(None);
    }
    let Some((name, text)) = find_blueprint(tree) else {
        return Ok(None);
    };
    let default_binary = tree
        .read("Cargo.toml")
        .and_then(|text| crate::parse_cargo_manifest("Cargo.toml", &text).ok())
        .map(|package| package.name);
    crate::parse_render(&name, &text, default_binary.as_deref()).map(Some)
}

/// The Render Blueprint in `tree`'s top folder, with its name and text:
/// `render.yaml`, else the first other `*.yaml`/`*.yml` that reads as one
/// (Render takes a Blueprint under any path).
pub fn find_blueprint(tree: &dyn ProjectTree) -> Option<(String, String)> {
    if let Some(text) = tree.read(RENDER_YAML) {
        return Some((RENDER_YAML.to_string(), text));
    }
    let mut names = tree.list("");
    names.sort();
    names
        .into_iter()
        .filter(|name| {
            (name.ends_with(".yaml") || name.ends_with(".yml"))
                && !name.starts_with('.')
                && !name.contains("compose")
        })
        .find_map(|name| {
            let text = tree.read(&name)?;
            is_blueprint(&text).then_some((name, text))
        })
}

/// Whether a YAML text is a Render Blueprint: a `services` list whose
/// entries have a `type` and a `name`, or a `databases` list — not a
/// Compose file (whose `services` is a map), a CI file, or a Kubernetes or
/// Cloud Run manifest (`apiVersion`/`kind`).
pub fn is_blueprint(text: &str) -> bool {
    let Ok(serde_norway::Value::Mapping(top)) = serde_norway::from_str::<serde_norway::Value>(text)
    else {
        return false;
    };
    if top.contains_key("apiVersion") || top.contains_key("kind") {
        return false;
    }
    let services = match top.get("services") {
        Some(serde_norway::Value::Sequence(services)) => services,
        Some(_) => return false,
        None => return matches!(top.get("databases"), Some(serde_norway::Value::Sequence(_))),
    };
    !services.is_empty()
        && services.iter().all(|service| {
            service
                .get("type")
                .is_some_and(serde_norway::Value::is_string)
                && service
                    .get("name")
                    .is_some_and(serde_norway::Value::is_string)
        })
}

/// [`load_project`] for app `app`: picks that app's service when the
/// folder holds a `render.yaml` with several.
pub fn load_project_for(
    tree: &dyn ProjectTree,
    app: Option<&str>,
) -> Result<Option<ParsedSpec>, SpecError> {
    let files: Vec<(String, String)> = PROJECT_FILE_NAMES
        .iter()
        .filter_map(|name| tree.read(name).map(|text| (name.to_string(), text)))
        .collect();
    let mut parsed = parse_project(&files)?;
    // fly builds a Dockerfile beside a fly file with no [build].
    let fly_file = files.iter().find(|(name, _)| name.starts_with("fly."));
    let has_build = |text: &str| {
        text.lines().any(|line| {
            let line = line.trim_start();
            line.starts_with("[build")
                || line.starts_with("build:")
                || line.starts_with("\"build\"")
        })
    };
    if let (Some((fly_file, fly_text)), Some(parsed)) = (fly_file, parsed.as_mut())
        && !files.iter().any(|(name, _)| name == "berth.toml")
        && !has_build(fly_text)
        && tree.read("Dockerfile").is_some()
    {
        let instead = if tree.read("Cargo.toml").is_some() {
            "berth builds the Cargo package with cargo instead (the Dockerfile's CMD and EXPOSE are not read): give [build] a `bin` or [processes] if it should run something else"
        } else {
            "berth cannot: it builds Cargo packages, and there is no Cargo.toml here"
        };
        parsed.warnings.push(format!(
            "{fly_file} has no [build] and a Dockerfile is beside it, so Fly would build the Dockerfile; {instead}"
        ));
    }
    if let Some(mut blueprint) = load_blueprint(tree)? {
        let index = match app {
            Some(app) => blueprint.apps.iter().position(|(name, _)| name == app),
            None => None,
        }
        .or((blueprint.apps.len() == 1).then_some(0));
        let Some(index) = index else {
            let names: Vec<&str> = blueprint
                .apps
                .iter()
                .map(|(name, _)| name.as_str())
                .collect();
            return Err(SpecError::single(
                RENDER_YAML,
                None,
                format!(
                    "has {} services ({}): `berth up` deploys them all; deploy one with --app NAME",
                    names.len(),
                    names.join(", ")
                ),
            ));
        };
        let (_, spec) = blueprint.apps.swap_remove(index);
        let procfile = parsed.take();
        if procfile.is_some() {
            blueprint
                .warnings
                .push("the Procfile is ignored: render.yaml comes first".into());
        }
        parsed = Some(ParsedSpec {
            spec,
            warnings: blueprint.warnings,
        });
    } else if let Some((name, _)) = find_blueprint(tree)
        && let Some(parsed) = parsed.as_mut()
    {
        parsed.warnings.push(format!(
            "{name} is ignored: berth.toml or fly.toml comes first"
        ));
    }
    let detected = if parsed.is_some() {
        crate::shuttle::detect_shuttle_beside_spec(tree)?
    } else {
        crate::detect_shuttle(tree)?
    };
    let Some(shuttle) = detected else {
        return Ok(parsed);
    };
    let Some(mut parsed) = parsed else {
        return Ok(Some(shuttle));
    };
    let spec = &mut parsed.spec;
    spec.build.bin = spec.build.bin.take().or(shuttle.spec.build.bin);
    if spec.build.features.is_empty() {
        spec.build.features = shuttle.spec.build.features;
    }
    spec.resources.postgres |= shuttle.spec.resources.postgres;
    if spec.vms.is_empty() {
        spec.vms = shuttle.spec.vms;
    }
    if spec.app.is_none() {
        spec.app = shuttle.spec.app;
    }
    // A service without HTTP (a Discord bot) runs as a worker.
    if spec.processes.is_empty() && spec.http.processes.is_none() {
        spec.processes = shuttle.spec.processes;
        spec.http.processes = shuttle.spec.http.processes;
    }
    spec.shuttle = shuttle.spec.shuttle;
    parsed.warnings.extend(shuttle.warnings);
    Ok(Some(parsed))
}

/// Parses a Procfile: `type: command` lines, `#` comments, blank lines.
/// `release` becomes the release command; the other types become process
/// groups (`web` serves HTTP).
pub fn parse_procfile(file: &str, text: &str) -> Result<ParsedSpec, SpecError> {
    let mut parsed = ParsedSpec {
        spec: crate::AppSpec::default(),
        warnings: Vec::new(),
    };
    let mut problems = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let at = |column: usize| {
            Some(Location {
                line: index + 1,
                column: column + 1,
            })
        };
        let indent = line.len() - trimmed.len();
        let Some((name, command)) = trimmed.split_once(':') else {
            problems.push(SpecProblem {
                location: at(indent),
                message: "expected `type: command`".into(),
            });
            continue;
        };
        let name = name.trim();
        let command = command.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            problems.push(SpecProblem {
                location: at(indent),
                message: format!("process type `{name}` must be letters, digits, `-` or `_`"),
            });
            continue;
        }
        if command.is_empty() {
            problems.push(SpecProblem {
                location: at(indent + name.len() + 1),
                message: format!("process type `{name}` has no command"),
            });
            continue;
        }
        let group = name.to_ascii_lowercase();
        if group == "release" {
            parsed.spec.deploy.release_command = Some(command.to_string());
            continue;
        }
        if !group.starts_with(|c: char| c.is_ascii_lowercase()) {
            problems.push(SpecProblem {
                location: at(indent),
                message: format!("process type `{name}` must start with a letter"),
            });
            continue;
        }
        if parsed.spec.processes.contains_key(&group) {
            problems.push(SpecProblem {
                location: at(indent),
                message: format!("process type `{name}` is defined twice"),
            });
            continue;
        }
        if group != name {
            parsed
                .warnings
                .push(format!("{file}: process type `{name}` is named `{group}`"));
        }
        parsed.spec.processes.insert(group, command.to_string());
    }
    if problems.is_empty() {
        Ok(parsed)
    } else {
        Err(SpecError {
            file: file.to_string(),
            problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(name, text)| (name.to_string(), text.to_string()))
            .collect()
    }

    #[test]
    fn a_procfile_alone_gives_processes_and_the_release_command() {
        let text = "# Heroku style\nweb: hello serve --port $PORT\nworker: hello work\nrelease: hello migrate\n";
        let parsed = parse_project(&files(&[(PROCFILE, text)])).unwrap().unwrap();
        let spec = parsed.spec;
        assert_eq!(spec.processes["web"], "hello serve --port $PORT");
        assert_eq!(spec.processes["worker"], "hello work");
        assert!(!spec.processes.contains_key("release"));
        assert_eq!(
            spec.deploy.release_command.as_deref(),
            Some("hello migrate")
        );
        assert!(spec.serves_http("web") && !spec.serves_http("worker"));
    }

    #[test]
    fn beside_berth_toml_the_procfile_fills_only_what_it_leaves_out() {
        let project = files(&[
            (
                "berth.toml",
                "app = \"shop\"\n[processes]\nweb = \"shop\"\n",
            ),
            (PROCFILE, "web: other\nrelease: shop migrate\n"),
            ("fly.toml", "app = \"ignored\"\n"),
        ]);
        let parsed = parse_project(&project).unwrap().unwrap();
        assert_eq!(parsed.spec.app.as_deref(), Some("shop"));
        assert_eq!(parsed.spec.processes["web"], "shop");
        assert_eq!(
            parsed.spec.deploy.release_command.as_deref(),
            Some("shop migrate")
        );
        let warnings = parsed.warnings.join("\n");
        assert!(warnings.contains("process types are ignored"), "{warnings}");
        assert!(warnings.contains("read together"), "{warnings}");
    }

    #[test]
    fn berth_toml_and_fly_toml_are_read_together_berths_keys_winning() {
        let fly = "app = \"from-fly\"\n\n[http_service]\ninternal_port = 8080\n\n[[vm]]\nmemory = \"512mb\"\n\n[env]\nA = \"fly\"\nB = \"fly\"\n";
        let berth = "app = \"shop\"\n\n[env]\nB = \"berth\"\n\n[build]\nbin = \"shop\"\n";
        let parsed = parse_project(&files(&[("fly.toml", fly), ("berth.toml", berth)]))
            .unwrap()
            .unwrap();
        let spec = parsed.spec;
        assert_eq!(spec.app.as_deref(), Some("shop"));
        assert_eq!(spec.http.internal_port, Some(8080));
        assert_eq!(spec.vms[0].memory_mb, 512);
        assert_eq!(spec.env["A"], "fly");
        assert_eq!(spec.env["B"], "berth");
        assert_eq!(spec.build.bin.as_deref(), Some("shop"));
        assert!(
            parsed
                .warnings
                .iter()
                .any(|w| w.contains("berth.toml's wins")),
            "{:?}",
            parsed.warnings
        );
        // A mistake in either file points into that file.
        let broken = "app = \"x\"\n[http_service]\ninternal_port = \"eighty\"\n";
        let err = parse_project(&files(&[("fly.toml", broken), ("berth.toml", berth)]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("fly.toml:3:"), "{err}");
    }

    #[test]
    fn no_spec_files_is_zero_config() {
        assert!(
            parse_project(&files(&[("README.md", "hi")]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn procfile_problems_name_line_and_column() {
        let text = "web: ok\n\nnot a process line\n  bad name!: x\nweb: again\nworker:\n";
        let err = parse_procfile(PROCFILE, text).unwrap_err().to_string();
        assert!(
            err.contains("Procfile:3:1: expected `type: command`"),
            "{err}"
        );
        assert!(
            err.contains("Procfile:4:3: process type `bad name!`"),
            "{err}"
        );
        assert!(
            err.contains("Procfile:5:1: process type `web` is defined twice"),
            "{err}"
        );
        assert!(
            err.contains("Procfile:6:8: process type `worker` has no command"),
            "{err}"
        );
    }
}
