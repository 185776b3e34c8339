//! `fly.json` and `fly.yaml`: flyctl reads them as the same keys as
//! fly.toml. They are turned into TOML and parsed as fly.toml; a problem
//! found then is placed back on the original file at the key it names.

use crate::ParsedSpec;
use crate::error::{Location, SpecError};

pub(crate) fn parse(file: &str, text: &str) -> Result<ParsedSpec, SpecError> {
    let json = file.ends_with(".json");
    let value: toml::Value = if json {
        serde_json::from_str(text).map_err(|err| {
            SpecError::single(
                file,
                Some(Location {
                    line: err.line(),
                    column: err.column(),
                }),
                without_position(err.to_string()),
            )
        })?
    } else {
        serde_norway::from_str(text).map_err(|err| {
            let location = err.location().map(|at| Location {
                line: at.line(),
                column: at.column(),
            });
            SpecError::single(file, location, without_position(err.to_string()))
        })?
    };
    let toml_text = toml::to_string(&value).map_err(|err| {
        SpecError::single(
            file,
            None,
            format!("cannot be read as fly.toml keys: {err}"),
        )
    })?;
    crate::raw::parse(file, &toml_text).map_err(|mut err| {
        for problem in &mut err.problems {
            problem.location = problem
                .location
                .and_then(|at| original_location(text, &toml_text, at, json));
        }
        err
    })
}

/// A parser's message without its own "at line L column C" (the error
/// carries the position).
fn without_position(message: String) -> String {
    match message.split_once(" at line ") {
        Some((text, _)) => text.to_string(),
        None => message,
    }
}

/// The place in the original text of the key on line `at` of the TOML.
fn original_location(
    original: &str,
    toml_text: &str,
    at: Location,
    json: bool,
) -> Option<Location> {
    let line = toml_text.lines().nth(at.line.checked_sub(1)?)?;
    let key = line.split('=').next()?.trim().trim_matches('"');
    let key = key.trim_start_matches('[').trim_end_matches(']');
    let key = key.rsplit('.').next()?.trim_matches('"');
    let needle = if json {
        format!("\"{key}\"")
    } else {
        format!("{key}:")
    };
    let offset = original.find(&needle)?;
    Some(Location::of_offset(original, offset))
}

#[cfg(test)]
mod tests {
    use crate::parse_spec;

    #[test]
    fn fly_json_and_yaml_read_as_fly_toml() {
        let json = r#"{
  "app": "hello",
  "kill_timeout": 9,
  "env": { "MODE": "prod", "WORKERS": 4 },
  "http_service": { "internal_port": 8080, "min_machines_running": 1,
                    "checks": [ { "path": "/up", "interval": 15000 } ] },
  "vm": [ { "size": "shared-cpu-2x" } ],
  "primary_region": "ams"
}"#;
        let from_json = parse_spec("fly.json", json).unwrap();
        let yaml = "app: hello\nkill_timeout: 9\nenv:\n  MODE: prod\n  WORKERS: 4\nhttp_service:\n  internal_port: 8080\n  min_machines_running: 1\n  checks:\n    - path: /up\n      interval: 15000\nvm:\n  - size: shared-cpu-2x\nprimary_region: ams\n";
        let from_yaml = parse_spec("fly.yaml", yaml).unwrap();
        let toml = "app = \"hello\"\nkill_timeout = 9\nprimary_region = \"ams\"\n[env]\nMODE = \"prod\"\nWORKERS = 4\n[http_service]\ninternal_port = 8080\nmin_machines_running = 1\n[[http_service.checks]]\npath = \"/up\"\ninterval = 15000\n[[vm]]\nsize = \"shared-cpu-2x\"\n";
        let from_toml = parse_spec("fly.toml", toml).unwrap();
        assert_eq!(from_json.spec, from_toml.spec);
        assert_eq!(from_yaml.spec, from_toml.spec);
        assert_eq!(from_json.spec.http.check.interval.as_secs(), 15);
        assert_eq!(from_json.spec.env["WORKERS"], "4");
    }

    #[test]
    fn problems_point_into_the_original_file() {
        let err = parse_spec(
            "fly.json",
            "{\n  \"app\": \"ok\",\n  \"kill_timeout\": \"soon\"\n}",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("fly.json:3:3:"), "{err}");
        let err = parse_spec("fly.yaml", "app: ok\nvm:\n  - size: enormous-9x\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("fly.yaml:3:5:"), "{err}");
        let err = parse_spec("fly.json", "{\n  \"app\": \"ok\",,\n}")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "fly.json:2:15: key must be a string");
    }
}
