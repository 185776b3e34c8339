//! Other platforms' files, one fixture per class of form that real files
//! use (tests/fixtures/compat), each read with the meaning its platform
//! gives it.

use std::time::Duration;

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../../tests/fixtures/compat/", $name))
    };
}

fn fly(text: &str) -> ParsedSpec {
    parse_spec("fly.toml", text).unwrap_or_else(|err| panic!("{err}"))
}

#[test]
fn an_empty_processes_list_means_one_default_group() {
    let parsed = fly(fixture!("processes-empty-list.toml"));
    assert!(parsed.spec.processes.is_empty());
    assert_eq!(parsed.spec.process_commands("bin")["web"], "bin");
    assert!(parsed.spec.serves_http("web"));
}

#[test]
fn processes_tables_become_groups() {
    let spec = fly(fixture!("processes-tables.toml")).spec;
    assert_eq!(spec.processes["web"], "server --port 8080");
    assert_eq!(spec.processes["worker"], "server --work");
}

#[test]
fn a_lone_services_table_is_one_service_with_its_port_options_and_check() {
    let spec = fly(fixture!("lone-services-table.toml")).spec;
    assert_eq!(spec.http.internal_port, Some(8080));
    assert!(spec.http.force_https, "force_https on a services port");
    assert_eq!(spec.http.check.http_path.as_deref(), Some("/health"));
    assert_eq!(spec.http.check.interval, Duration::from_secs(10));
    assert!(spec.tcp_services.is_empty());
}

#[test]
fn a_name_starting_with_a_digit_and_a_gpu_size_load() {
    let parsed = fly(fixture!("digit-name-gpu.toml"));
    assert_eq!(parsed.spec.app.as_deref(), Some("2048-game"));
    assert_eq!(parsed.spec.vms[0].cpus, 8.0);
    assert_eq!(parsed.spec.vms[0].memory_mb, 32 * 1024);
    let warnings = parsed.warnings.join("\n");
    assert!(warnings.contains("no GPU is available here"), "{warnings}");
}

#[test]
fn an_empty_command_runs_experimental_entrypoint_and_cmd() {
    let parsed = fly(fixture!("empty-command-experimental.toml"));
    let commands = parsed.spec.process_commands("bin");
    // Fly runs the entrypoint before every group's command, and `cmd`
    // where a group gives none (a string is a command line).
    assert_eq!(commands["app"], "/usr/bin/env MODE=fly server --port 8080");
    assert_eq!(commands["worker"], "/usr/bin/env MODE=fly server --work");
    // auto_rollback is what berth always does, and /usr/bin/env is on the
    // host: no warning about either.
    assert!(
        !parsed.warnings.iter().any(|w| w.contains("experimental")),
        "{:?}",
        parsed.warnings
    );
}

#[test]
fn an_empty_command_without_experimental_runs_the_default_binary() {
    let spec = fly("[processes]\napp = \"\"\n").spec;
    assert_eq!(spec.process_commands("bin")["app"], "bin");
    let warnings = fly("[experimental]\nexec = [\"/init\"]\n")
        .warnings
        .join("\n");
    assert!(warnings.contains("[experimental] exec"), "{warnings}");
    // The entrypoint comes before each group's own command; a path from a
    // Docker image is a warning.
    let parsed = fly(
        "[processes]\nweb = \"serve\"\n[experimental]\nentrypoint = [\"/app/entry\", \"--\"]\n",
    );
    assert_eq!(parsed.spec.processes["web"], "/app/entry -- serve");
    assert!(
        parsed
            .warnings
            .join("\n")
            .contains("a path in the Docker image"),
        "{:?}",
        parsed.warnings
    );
}

#[test]
fn the_singular_mount_keeps_its_volume_under_usr() {
    let spec = fly(fixture!("mount-singular-usr.toml")).spec;
    assert_eq!(spec.mounts.len(), 1);
    assert_eq!(spec.mounts[0].destination, "/usr/src/app/data");
    for system in [
        "/usr",
        "/usr/bin",
        "/usr/lib/x",
        "/usr/local",
        "/usr/local/bin",
        "/etc/x",
    ] {
        let text = format!("[mounts]\nsource = \"data\"\ndestination = \"{system}\"\n");
        let err = parse_spec("fly.toml", &text).unwrap_err().to_string();
        assert!(err.contains("system directory"), "{system}: {err}");
    }
    let err = parse_spec(
        "fly.toml",
        "[build]\npackages = [\"libpq5\"]\n[mount]\nsource = \"data\"\ndestination = \"/usr/src/app/data\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cannot be used with [build] packages"),
        "{err}"
    );
}

#[test]
fn every_service_is_read_http_routed_and_tcp_forwarded_with_all_checks() {
    let spec = fly(fixture!("services-http-and-tcp.toml")).spec;
    assert_eq!(spec.kill_signal, Some(StopSignal::Sigint));
    assert_eq!(spec.kill_timeout, Duration::from_secs(10));
    // The HTTP service: port 8080, force_https from its port 80.
    assert_eq!(spec.http.internal_port, Some(8080));
    assert!(spec.http.force_https);
    // Scaling merged per key: min from [http_service], the rest from the service.
    assert!(spec.http.scaling.auto_stop);
    assert_eq!(spec.http.scaling.min, 0);
    assert_eq!(spec.http.scaling.soft_limit, Some(20));
    assert_eq!(spec.http.scaling.limit_type, "connections");
    // The TCP service: never the web route.
    assert_eq!(
        spec.tcp_services,
        vec![TcpService {
            internal_port: 5432,
            ports: vec![
                TcpPort {
                    port: 15432,
                    tls: false,
                    proxy_proto: false,
                    proxy_proto_v1: false,
                },
                TcpPort {
                    port: 15433,
                    tls: true,
                    proxy_proto: false,
                    proxy_proto_v1: false,
                },
            ],
            processes: None,
        }]
    );
    // Three checks, each with its own port, method, headers and grace.
    let checks: Vec<&HealthCheck> = std::iter::once(&spec.http.check)
        .chain(&spec.http.extra_checks)
        .collect();
    assert_eq!(checks.len(), 3, "{checks:#?}");
    assert_eq!(checks[0].http_path.as_deref(), Some("/healthz"));
    assert_eq!(checks[0].method(), "HEAD");
    assert_eq!(checks[0].headers["X-Probe"], "fly");
    assert_eq!(checks[0].grace_period, Duration::from_secs(3));
    assert_eq!(checks[0].port, None, "the HTTP port");
    assert_eq!(checks[1].http_path, None, "a TCP check");
    assert_eq!(checks[1].port, Some(5432), "its service's port");
    assert_eq!(checks[2].port, Some(9090));
    assert_eq!(checks[2].http_path.as_deref(), Some("/ready"));
}

#[test]
fn a_kill_signal_or_check_berth_cannot_honour_is_a_warning_a_bad_port_an_error() {
    let parsed =
        fly("kill_signal = \"SIGSTOP\"\n[checks.x]\ntype = \"grpc\"\nmethod = \"FETCH\"\n");
    assert_eq!(parsed.spec.kill_signal, None);
    let warnings = parsed.warnings.join("\n");
    assert!(warnings.contains("kill_signal = \"SIGSTOP\""), "{warnings}");
    assert!(warnings.contains("check type `grpc`"), "{warnings}");
    assert!(warnings.contains("check method `FETCH`"), "{warnings}");
    let err = parse_spec("fly.toml", "[checks.x]\nport = 70000\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fly.toml:2:8: port must be a whole number"),
        "{err}"
    );
}

#[test]
fn a_tcp_only_app_listens_on_its_service_port_and_is_checked_there() {
    let spec = fly("[[services]]\ninternal_port = 5432\n[[services.ports]]\nport = 15432\n").spec;
    assert_eq!(spec.http.internal_port, Some(5432));
    assert_eq!(spec.fixed_ports("web"), vec![5432]);
    assert_eq!(spec.tcp_services[0].ports[0].port, 15432);
}

#[test]
fn app_json_takes_the_last_of_a_duplicate_key_and_reads_retired_sizes() {
    let parsed = parse_app_json("app.json", fixture!("app-json-retired/app.json"))
        .unwrap_or_else(|err| panic!("{err}"));
    let warnings = parsed.warnings.join("\n");
    assert!(warnings.contains("`stack` is given twice"), "{warnings}");
    assert!(
        warnings.contains("`env.GREETING` is given twice"),
        "{warnings}"
    );
    assert!(warnings.contains("`hobby` is retired"), "{warnings}");
    assert_eq!(parsed.spec.vms[0].size.as_deref(), Some("heroku-basic"));
}

#[test]
fn a_blueprint_under_any_yaml_name_is_found_and_a_dashboard_group_warns() {
    let text = fixture!("render-dashboard-group/blueprint.yaml");
    let tree = MemoryTree::new(&[
        ("blueprint.yaml", text),
        ("Cargo.toml", "[package]\nname = \"api\"\n"),
    ]);
    let blueprint = load_blueprint(&tree).unwrap().expect("found");
    assert_eq!(blueprint.apps.len(), 1);
    assert_eq!(blueprint.apps[0].1.env["GREETING"], "hello");
    let warnings = blueprint.warnings.join("\n");
    assert!(
        warnings.contains("env group `shared-settings`"),
        "{warnings}"
    );
    // A Kubernetes manifest, a Compose file and a CI file are not Blueprints.
    let manifest = "apiVersion: apps/v1\nkind: Deployment\nspec: {}\n";
    let compose = "services:\n  web:\n    image: nginx\n";
    let ci = "services:\n  - postgres:15\nstages: [test]\n";
    for (name, text) in [
        ("deploy.yaml", manifest),
        ("docker-compose.yml", compose),
        ("app.yml", compose),
        (".gitlab-ci.yml", ci),
        ("ci.yaml", ci),
    ] {
        assert!(!is_blueprint(text) || name.contains("compose"), "{name}");
        let tree = MemoryTree::new(&[(name, text), ("Cargo.toml", "[package]\nname = \"x\"\n")]);
        assert!(load_blueprint(&tree).unwrap().is_none(), "{name}");
        assert!(load_project(&tree).is_ok(), "{name}");
    }
}

#[test]
fn raw_type_names_never_reach_an_error() {
    let err = parse_render("render.yaml", "just text", None)
        .unwrap_err()
        .to_string();
    assert!(!err.contains("Raw"), "{err}");
    let err = parse_spec("fly.toml", "deploy = \"rolling\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected a table") && !err.contains("Raw"),
        "{err}"
    );
    let err = parse_app_json("app.json", "\"text\"")
        .unwrap_err()
        .to_string();
    assert!(!err.contains("Raw"), "{err}");
}

#[test]
fn a_legacy_shuttle_service_is_named_and_a_bot_runs_as_a_worker() {
    let legacy = MemoryTree::new(&[(
        "Cargo.toml",
        "[package]\nname = \"old\"\n[lib]\ncrate-type = [\"cdylib\"]\n[dependencies]\nshuttle-service = \"0.11\"\n",
    )]);
    let err = detect_shuttle(&legacy).unwrap_err().to_string();
    assert!(
        err.contains("shuttle-service") && err.contains("shuttle-runtime"),
        "{err}"
    );
    let bot = MemoryTree::new(&[
        (
            "Cargo.toml",
            "[package]\nname = \"bot\"\n[dependencies]\nshuttle-runtime = \"0.56\"\nshuttle-serenity = \"0.56\"\n",
        ),
        (
            "src/main.rs",
            "#[shuttle_runtime::main]\nasync fn main() -> shuttle_serenity::ShuttleSerenity { todo!() }\n",
        ),
    ]);
    let parsed = load_project(&bot).unwrap().expect("a Shuttle project");
    assert_eq!(parsed.spec.processes["worker"], "bot");
    assert!(!parsed.spec.serves_http("worker"));
    assert!(
        parsed.warnings.join("\n").contains("serves no HTTP"),
        "{:?}",
        parsed.warnings
    );
}

#[test]
fn a_custom_shuttle_service_that_binds_no_port_is_a_worker() {
    let manifest = "[package]\nname = \"ticker\"\n[dependencies]\nshuttle-runtime = \"0.57\"\n";
    let service = |bind: &str| {
        format!(
            "struct Ticker;\n#[shuttle_runtime::async_trait]\nimpl shuttle_runtime::Service for Ticker {{\n    async fn bind({bind}) -> Result<(), shuttle_runtime::Error> {{ Ok(()) }}\n}}\n#[shuttle_runtime::main]\nasync fn main() -> Result<Ticker, shuttle_runtime::Error> {{ Ok(Ticker) }}\n"
        )
    };
    let worker = service("mut self, _addr: std::net::SocketAddr");
    let tree = MemoryTree::new(&[("Cargo.toml", manifest), ("src/main.rs", &worker)]);
    let parsed = load_project(&tree).unwrap().expect("a Shuttle project");
    assert_eq!(parsed.spec.processes["worker"], "ticker");
    assert!(!parsed.spec.serves_http("worker"));
    assert!(
        parsed
            .warnings
            .join("\n")
            .contains("leaves its address unused"),
        "{:?}",
        parsed.warnings
    );
    // One that uses its address listens there: a web service.
    let web = service("self, addr: std::net::SocketAddr");
    let tree = MemoryTree::new(&[("Cargo.toml", manifest), ("src/main.rs", &web)]);
    let parsed = load_project(&tree).unwrap().expect("a Shuttle project");
    assert!(!parsed.spec.processes.contains_key("worker"));
}

#[test]
fn a_dockerfile_beside_a_fly_toml_without_build_is_explained() {
    let fly_toml = "app = \"docker\"\n";
    let rust = MemoryTree::new(&[
        ("fly.toml", fly_toml),
        ("Dockerfile", "FROM rust\n"),
        ("Cargo.toml", "[package]\nname = \"docker\"\n"),
    ]);
    let warnings = load_project(&rust).unwrap().unwrap().warnings.join("\n");
    assert!(
        warnings.contains("Fly would build the Dockerfile; berth builds the Cargo package"),
        "{warnings}"
    );
    let go = MemoryTree::new(&[("fly.toml", fly_toml), ("Dockerfile", "FROM golang\n")]);
    let warnings = load_project(&go).unwrap().unwrap().warnings.join("\n");
    assert!(warnings.contains("there is no Cargo.toml"), "{warnings}");
    let with_build = MemoryTree::new(&[
        ("fly.toml", "[build]\nbuilder = \"cargo\"\n"),
        ("Dockerfile", "FROM rust\n"),
    ]);
    let warnings = load_project(&with_build)
        .unwrap()
        .unwrap()
        .warnings
        .join("\n");
    assert!(!warnings.contains("Dockerfile"), "{warnings}");
}

#[test]
fn every_service_and_check_survives_an_export_to_fly_toml() {
    let spec = fly(fixture!("services-http-and-tcp.toml")).spec;
    let exported = to_fly_toml(&spec);
    let again = fly(&exported).spec;
    assert_eq!(again.tcp_services, spec.tcp_services, "{exported}");
    assert_eq!(again.kill_signal, spec.kill_signal);
    let checks = |spec: &AppSpec| {
        let mut all: Vec<HealthCheck> = std::iter::once(spec.http.check.clone())
            .chain(spec.http.extra_checks.clone())
            .collect();
        all.sort_by_key(|check| (check.port, check.http_path.clone()));
        all
    };
    assert_eq!(checks(&again), checks(&spec), "{exported}");
}

#[test]
fn a_blueprint_with_a_static_site_and_a_node_service_reads_each_with_its_meaning() {
    let text = "services:\n  - type: web\n    name: api\n    runtime: rust\n  - type: web\n    name: front\n    runtime: static\n    rootDir: web\n    buildCommand: npm ci && npm run build\n    staticPublishPath: ./dist\n    routes:\n      - type: redirect\n        source: /old\n        destination: /new\n      - type: rewrite\n        source: /*\n        destination: /index.html\n    headers:\n      - path: /*\n        name: X-Frame-Options\n        value: sameorigin\n  - type: worker\n    name: queue\n    runtime: node\n    buildCommand: npm ci\n    startCommand: node worker.js\n";
    let blueprint =
        parse_render("render.yaml", text, Some("api")).unwrap_or_else(|err| panic!("{err}"));
    let app = |name: &str| {
        &blueprint
            .apps
            .iter()
            .find(|(app, _)| app == name)
            .unwrap()
            .1
    };
    let front = app("front");
    let site = front.site.as_ref().expect("a site");
    assert_eq!(site.dir, "web/dist");
    assert_eq!(site.rules.len(), 2);
    assert_eq!(site.rules[0].redirect, Some(301));
    assert_eq!(
        site.rules[1].destination_for("/app/x").as_deref(),
        Some("/index.html")
    );
    assert_eq!(site.headers[0].name, "X-Frame-Options");
    assert!(front.build.command_only);
    assert_eq!(
        front.build.command.as_deref(),
        Some("cd web && npm ci && npm run build")
    );
    assert!(
        front.process_commands("api").is_empty(),
        "a site runs no process"
    );
    let queue = app("queue");
    assert!(queue.build.command_only);
    assert_eq!(queue.process_commands("api")["worker"], "node worker.js");
    assert!(!app("api").build.command_only);
    let warnings = blueprint.warnings.join("\n");
    assert!(!warnings.contains("staticPublishPath"), "{warnings}");

    let bad = "services:\n  - type: web\n    name: front\n    runtime: static\n    staticPublishPath: ../etc\n    routes:\n      - type: proxy\n        source: /a\n        destination: /b\n  - type: web\n    name: py\n    runtime: python\n";
    let err = parse_render("render.yaml", bad, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("staticPublishPath `../etc`"), "{err}");
    assert!(err.contains("has no startCommand"), "{err}");
}

#[test]
fn a_docker_worker_or_cron_without_a_start_command_runs_the_images_cmd() {
    let text = "services:\n  - type: worker\n    name: queue\n    runtime: docker\n  - type: cron\n    name: nightly\n    runtime: image\n    image:\n      url: ghcr.io/acme/nightly:1\n    schedule: \"0 3 * * *\"\n";
    let blueprint = parse_render("render.yaml", text, None).unwrap_or_else(|err| panic!("{err}"));
    let queue = &blueprint
        .apps
        .iter()
        .find(|(name, _)| name == "queue")
        .unwrap()
        .1;
    assert_eq!(queue.processes["worker"], "");
    let nightly = &blueprint
        .apps
        .iter()
        .find(|(name, _)| name == "nightly")
        .unwrap()
        .1;
    assert_eq!(nightly.jobs[0].command, "");
}

#[test]
fn console_command_is_what_berth_console_runs() {
    let parsed = fly("console_command = \"/code/manage.py shell\"\n");
    assert_eq!(
        parsed.spec.console_command.as_deref(),
        Some("/code/manage.py shell")
    );
    assert!(
        parsed
            .warnings
            .iter()
            .all(|warning| !warning.contains("console_command")),
        "{:?}",
        parsed.warnings
    );
    let err = parse_spec("fly.toml", "console_command = \"  \"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("fly.toml:1:19"), "{err}");
    assert!(err.contains("console_command is empty"), "{err}");
}

#[test]
fn logs_retention_is_read_and_bad_values_point_at_themselves() {
    let spec = parse_spec(
        "berth.toml",
        "[logs]\nretain = \"14d\"\nmax_size = \"1gb\"\n",
    )
    .unwrap()
    .spec;
    assert_eq!(
        spec.logs.retain,
        Some(std::time::Duration::from_secs(14 * 86_400))
    );
    assert_eq!(spec.logs.max_bytes, Some(1 << 30));
    let defaults = parse_spec("berth.toml", "").unwrap().spec.logs;
    assert_eq!(defaults.retain_or_default(), crate::DEFAULT_LOG_RETAIN);
    assert_eq!(
        defaults.max_bytes_or_default(),
        crate::DEFAULT_LOG_MAX_BYTES
    );
    for (text, expected) in [
        (
            "[logs]\nretain = \"soon\"\n",
            "berth.toml:2:10: [logs] retain: `soon`",
        ),
        ("[logs]\nretain = \"5s\"\n", "from a minute to ten years"),
        (
            "[logs]\nretain = \"100000d\"\n",
            "from a minute to ten years",
        ),
        (
            "[logs]\nmax_size = \"1kb\"\n",
            "berth.toml:2:12: [logs] max_size",
        ),
        ("[logs]\nkeep = 3\n", "keep"),
    ] {
        let err = parse_spec("berth.toml", text).unwrap_err().to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
}
