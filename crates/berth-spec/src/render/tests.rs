use super::*;
use std::time::Duration;

use crate::{EnvFrom, EnvSource};

const FIXTURE: &str = include_str!("../../../../tests/fixtures/render/render.yaml");

fn parse(text: &str) -> Blueprint {
    parse_render(RENDER_YAML, text, Some("todo")).unwrap()
}

#[test]
fn the_fixture_becomes_two_apps_sharing_one_database() {
    let blueprint = parse(FIXTURE);
    let names: Vec<&str> = blueprint
        .apps
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(names, ["todo-web", "todo-migrate"]);
    let web = &blueprint.apps[0].1;
    assert!(web.processes.is_empty() || web.processes["web"] == "todo");
    assert_eq!(web.deploy.release_command.as_deref(), Some("todo migrate"));
    assert_eq!(web.http.check.http_path.as_deref(), Some("/healthz"));
    assert_eq!((web.http.scaling.min, web.http.scaling.max), (1, Some(1)));
    assert_eq!(web.kill_timeout, Duration::from_secs(10));
    assert_eq!(web.mounts[0].destination, "/srv/todo-files");
    assert_eq!((web.vms[0].cpus, web.vms[0].memory_mb), (0.5, 512));
    assert!(web.resources.postgres && web.resources.redis);
    assert_eq!(web.resources.shared_with, ["todo-migrate"]);
    assert_eq!(web.env["GREETING"], "hello from an env group");
    assert_eq!(web.env["MAX_ITEMS"], "100");
    let sources: Vec<(&str, &EnvSource)> = web
        .env_from
        .iter()
        .map(|from| (from.key.as_str(), &from.source))
        .collect();
    assert!(sources.contains(&("SESSION_SECRET", &EnvSource::Generated)));
    assert!(sources.contains(&("API_TOKEN", &EnvSource::AskOnce)));
    assert!(sources.contains(&(
        "DB_PORT",
        &EnvSource::Postgres {
            property: "port".into()
        }
    )));

    let cron = &blueprint.apps[1].1;
    assert!(cron.jobs_only && cron.process_commands("todo").is_empty());
    assert_eq!(cron.jobs[0].command, "todo migrate");
    assert_eq!(cron.jobs[0].schedule.as_deref(), Some("0 3 * * *"));
    assert_eq!(cron.resources.postgres_from.as_deref(), Some("todo-web"));
    assert_eq!(cron.build.build_dir.as_deref(), Some("todo-web"));
    assert_eq!(web.build.build_dir.as_deref(), Some("todo-web"));
    assert!(!cron.resources.postgres);

    let warnings = blueprint.warnings.join("\n");
    assert!(
        warnings.contains("branch, region accepted and ignored"),
        "{warnings}"
    );
    assert!(!warnings.contains("sizeGB"), "{warnings}");
    assert_eq!(web.mounts[0].size_mib, Some(1024), "sizeGB: 1");
    assert!(
        warnings.contains("databaseName, user, plan, postgresMajorVersion"),
        "{warnings}"
    );
}

#[test]
fn workers_docker_plans_and_start_commands_map_as_render_means_them() {
    let text = r#"
services:
  - type: worker
    name: Queue Worker
    env: rust
    plan: pro_plus
    buildCommand: cargo build --release --bin worker --features jobs
    startCommand: cargo run --release --bin worker -- --queue default
  - type: pserv
    name: internal
    runtime: docker
    dockerfilePath: ./api/Dockerfile
    plan: Pro Max
    scaling:
      minInstances: 2
      maxInstances: 5
      targetCPUPercent: 60
    envVars:
      - key: WORKER_HOST
        fromService:
          type: worker
          name: Queue Worker
          property: host
      - key: COPIED
        fromService:
          type: web
          name: Queue Worker
          envVarKey: MODE
  - type: web
    name: img
    runtime: image
    image:
      url: docker.io/library/nginx:1
    autoDeploy: false
"#;
    let blueprint = parse_render(RENDER_YAML, text, None);
    let err = blueprint.unwrap_err().to_string();
    assert!(
        err.contains("copies `MODE` of service `Queue Worker`"),
        "{err}"
    );
    let text = text.replace(
        "    startCommand: cargo run",
        "    envVars:\n      - key: MODE\n        value: fast\n    startCommand: cargo run",
    );
    let blueprint = parse_render(RENDER_YAML, &text, None).unwrap();
    let (name, worker) = &blueprint.apps[0];
    assert_eq!(name, "queue-worker");
    assert_eq!(worker.processes["worker"], "worker --queue default");
    assert!(!worker.serves_http("worker"));
    assert_eq!(worker.build.bin.as_deref(), Some("worker"));
    assert_eq!(worker.build.features, ["jobs"]);
    assert_eq!((worker.vms[0].cpus, worker.vms[0].memory_mb), (4.0, 8192));
    let internal = &blueprint.apps[1].1;
    assert_eq!(
        internal.build.builder,
        BuilderKind::Dockerfile {
            path: "./api/Dockerfile".into()
        }
    );
    assert_eq!(internal.vms[0].memory_mb, 16384);
    assert_eq!(
        (internal.http.scaling.min, internal.http.scaling.max),
        (2, Some(5))
    );
    assert_eq!(internal.env["COPIED"], "fast");
    assert!(internal.env_from.contains(&EnvFrom {
        key: "WORKER_HOST".into(),
        source: EnvSource::AppAddress {
            app: "queue-worker".into(),
            property: "host".into()
        }
    }));
    assert!(matches!(
        blueprint.apps[2].1.build.builder,
        BuilderKind::Image { .. }
    ));
    let warnings = blueprint.warnings.join("\n");
    assert!(warnings.contains("targetCPUPercent"), "{warnings}");
    assert!(
        warnings.contains("private service `internal`"),
        "{warnings}"
    );
    assert!(
        warnings.contains("autoDeploy accepted and ignored"),
        "{warnings}"
    );
}

#[test]
fn exporting_and_importing_gives_back_the_same_apps() {
    let blueprint = parse(FIXTURE);
    let exported = to_render_yaml(&blueprint.apps, "todo");
    let again = parse_render(RENDER_YAML, &exported, Some("todo")).unwrap();
    assert_eq!(again.apps, blueprint.apps, "{exported}");

    let text = "services:\n  - type: worker\n    name: jobs\n    plan: pro max\n    buildCommand: cargo build --release --bin jobs --features queue\n    startCommand: ./target/release/jobs --poll 5\n    scaling:\n      minInstances: 1\n      maxInstances: 4\n    envVars:\n      - key: A\n        value: b\n      - key: PEER\n        fromService:\n          type: web\n          name: other\n          property: hostport\n";
    let apps = parse_render(RENDER_YAML, text, Some("todo")).unwrap().apps;
    let exported = to_render_yaml(&apps, "todo");
    let again = parse_render(RENDER_YAML, &exported, Some("todo")).unwrap();
    assert_eq!(again.apps, apps, "{exported}");
}

#[test]
fn mistakes_name_file_line_and_column() {
    let err = parse_render(
        RENDER_YAML,
        "services:\n  - type: web\n    name: [oops\n",
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("render.yaml:3:"), "{err}");

    let text = "services:\n  - type: web\n    name: api\n    plan: gigantic\n  - type: cron\n    name: nightly\n    schedule: \"61 * * * *\"\n    startCommand: api nightly\n  - type: web\n    name: node\n    runtime: elm\n";
    let err = parse_render(RENDER_YAML, text, Some("api"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("render.yaml:4:5: unknown plan `gigantic`"),
        "{err}"
    );
    assert!(err.contains("render.yaml:7:5:"), "{err}");
    assert!(
        err.contains("render.yaml:11:5: service `node` has runtime `elm`"),
        "{err}"
    );

    let err = parse_render(
            RENDER_YAML,
            "services:\n  - type: web\n    name: api\n    envVars:\n      - key: DB\n        fromDatabase:\n          name: missing\n          property: connectionString\n      - fromGroup: nope\n",
            None,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("database `missing`"), "{err}");
    // A group made in Render's dashboard is not in the file: a warning.
    assert!(!err.contains("env group `nope`"), "{err}");
    let blueprint = parse_render(
        RENDER_YAML,
        "services:\n  - type: web\n    name: api\n    envVars:\n      - fromGroup: nope\n",
        None,
    )
    .unwrap();
    assert!(
        blueprint.warnings.join("\n").contains("env group `nope`"),
        "{:?}",
        blueprint.warnings
    );
    let err = parse_render(
            RENDER_YAML,
            "services:\n  - type: web\n    name: api\n    disk:\n      name: data\n      mountPath: /etc\n",
            None,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("render.yaml:6:7: disk mountPath `/etc` is a system directory"),
        "{err}"
    );
}
