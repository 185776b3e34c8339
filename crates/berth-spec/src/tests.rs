use std::time::Duration;

use super::*;

#[test]
fn an_empty_spec_means_one_web_process_from_the_binary() {
    let parsed = parse_spec("berth.toml", "").unwrap();
    assert!(parsed.warnings.is_empty());
    let commands = parsed.spec.process_commands("hello");
    assert_eq!(commands.get("web").map(String::as_str), Some("hello"));
    assert!(parsed.spec.serves_http("web"));
    assert_eq!(parsed.spec.kill_timeout, Duration::from_secs(5));
}

#[test]
fn berth_toml_sections_fill_the_model() {
    let text = r#"
app = "hello"
kill_timeout = "10s"

[build]
bin = "hello"

[deploy]
strategy = "bluegreen"
wait_timeout = "2m"

[env]
RUST_LOG = "info"
WORKERS = 4

[processes]
web = "hello serve"
worker = "hello work"

[http_service]
internal_port = 8080
processes = ["web"]

  [[http_service.checks]]
  path = "/healthz"
  interval = 5000
  timeout = "1s"
"#;
    let parsed = parse_spec("berth.toml", text).unwrap();
    let spec = parsed.spec;
    assert_eq!(spec.app.as_deref(), Some("hello"));
    assert_eq!(spec.kill_timeout, Duration::from_secs(10));
    assert_eq!(spec.build.bin.as_deref(), Some("hello"));
    assert_eq!(spec.deploy.strategy, DeployStrategy::Bluegreen);
    assert_eq!(spec.deploy.wait_timeout, Duration::from_secs(120));
    assert_eq!(spec.env["WORKERS"], "4");
    assert_eq!(spec.processes.len(), 2);
    assert!(spec.serves_http("web"));
    assert!(!spec.serves_http("worker"));
    assert_eq!(spec.http.internal_port, Some(8080));
    assert_eq!(spec.http.check.http_path.as_deref(), Some("/healthz"));
    // A bare integer interval is milliseconds, as in fly.toml.
    assert_eq!(spec.http.check.interval, Duration::from_secs(5));
    assert_eq!(spec.http.check.timeout, Duration::from_secs(1));
}

#[test]
fn a_typical_fly_toml_is_a_valid_spec_with_the_same_meaning() {
    let text = r#"
app = "fly-hello"
primary_region = "ams"
kill_signal = "SIGINT"
kill_timeout = 8

[build]
  builder = "paketobuildpacks/builder:base"

[env]
  PORT = "8080"

[[services]]
  internal_port = 8080
  protocol = "tcp"
  processes = ["app"]

  [[services.ports]]
    handlers = ["http"]
    port = 80

  [[services.tcp_checks]]
    interval = "15s"
    timeout = "2s"
    grace_period = "1s"
"#;
    let parsed = parse_spec("fly.toml", text).unwrap();
    assert_eq!(parsed.spec.app.as_deref(), Some("fly-hello"));
    assert_eq!(parsed.spec.kill_timeout, Duration::from_secs(8));
    assert_eq!(parsed.spec.http.internal_port, Some(8080));
    assert_eq!(parsed.spec.http.check.http_path, None);
    assert_eq!(parsed.spec.http.check.interval, Duration::from_secs(15));
    let warnings = parsed.warnings.join("\n");
    assert!(warnings.contains("primary_region"), "{warnings}");
    assert_eq!(parsed.spec.kill_signal, Some(StopSignal::Sigint));
    assert!(!warnings.contains("kill_signal"), "{warnings}");
    assert!(warnings.contains("buildpack"), "{warnings}");
}

#[test]
fn unknown_keys_are_warnings_not_errors() {
    let parsed = parse_spec(
        "berth.toml",
        "colour = \"blue\"\n[http_service]\nturbo = true\n",
    )
    .unwrap();
    let warnings = parsed.warnings.join("\n");
    assert!(warnings.contains("`colour`"), "{warnings}");
    assert!(warnings.contains("`http_service.turbo`"), "{warnings}");
}

#[test]
fn a_syntax_error_names_file_line_and_column() {
    let err = parse_spec("berth.toml", "app = \"hello\"\n[env]\nRUST_LOG = info\n").unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("berth.toml:3:12:"), "{message}");
}

#[test]
fn a_wrong_type_names_file_line_and_column() {
    let err = parse_spec("berth.toml", "app = \"hello\"\n\n[processes]\nweb = 5\n").unwrap_err();
    assert!(err.to_string().starts_with("berth.toml:4:7:"), "{err}");
}

#[test]
fn every_validation_problem_is_reported_at_once_with_its_place() {
    let text = "app = \"Bad Name\"\n[deploy]\nstrategy = \"yolo\"\n[http_service]\ninternal_port = 70000\n";
    let err = parse_spec("fly.toml", text).unwrap_err();
    let message = err.to_string();
    assert_eq!(err.problems.len(), 3, "{message}");
    assert!(message.contains("fly.toml:1:7: app name"), "{message}");
    assert!(
        message.contains("fly.toml:3:12: unknown deploy strategy `yolo`"),
        "{message}"
    );
    assert!(
        message.contains("fly.toml:5:17: internal_port"),
        "{message}"
    );
}

#[test]
fn http_processes_must_exist() {
    let text = "[processes]\nweb = \"a\"\n[http_service]\nprocesses = [\"api\"]\n";
    let err = parse_spec("berth.toml", text).unwrap_err();
    assert!(err.to_string().contains("`api`"), "{err}");
}

#[test]
fn fly_default_process_named_app_serves_http() {
    let parsed = parse_spec(
        "fly.toml",
        "[processes]\napp = \"server\"\nworker = \"w\"\n",
    )
    .unwrap();
    assert!(parsed.spec.serves_http("app"));
    assert!(!parsed.spec.serves_http("worker"));
}

#[test]
fn the_spec_round_trips_through_json_for_the_store() {
    let parsed = parse_spec(
        "berth.toml",
        "[processes]\nweb = \"a b\"\n[env]\nX = \"1\"\n",
    )
    .unwrap();
    let json = serde_json::to_string(&parsed.spec).unwrap();
    let back: AppSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, parsed.spec);
}

#[test]
fn cargo_manifests_give_package_and_bins() {
    let manifest = "[package]\nname = \"my_app\"\nversion = \"0.1.0\"\n\n[[bin]]\nname = \"server\"\npath = \"src/server.rs\"\n";
    let package = parse_cargo_manifest("Cargo.toml", manifest).unwrap();
    assert_eq!(package.name, "my_app");
    assert_eq!(package.declared_bins, vec!["server".to_string()]);
    assert_eq!(app_name_from_package(&package.name), "my-app");
    assert!(parse_cargo_manifest("Cargo.toml", "[workspace]\nmembers = []\n").is_err());
}

#[test]
fn jobs_parse_with_defaults_like_cloud_run() {
    let text = r#"
[deploy]
release_command = "hello migrate"
release_command_timeout = 30

[[jobs]]
name = "nightly"
command = "hello report"
schedule = "0 3 * * *"
time_zone = "Europe/Amsterdam"
tasks = 4
parallelism = 2
timeout = "1m"
overlap = "replace"
env = { MODE = "full" }

[[jobs]]
name = "once"
command = "hello once"
"#;
    let spec = parse_spec("berth.toml", text).unwrap().spec;
    assert_eq!(
        spec.deploy.release_command.as_deref(),
        Some("hello migrate")
    );
    assert_eq!(spec.deploy.release_command_timeout, Duration::from_secs(30));
    assert_eq!(spec.jobs.len(), 2);
    let nightly = &spec.jobs[0];
    assert_eq!(
        (nightly.tasks, nightly.parallelism, nightly.max_retries),
        (4, 2, 3)
    );
    assert_eq!(nightly.timeout, Duration::from_secs(60));
    assert_eq!(nightly.overlap, OverlapPolicy::Replace);
    assert_eq!(nightly.env["MODE"], "full");
    let once = &spec.jobs[1];
    assert_eq!(
        (once.tasks, once.parallelism, once.schedule.as_deref()),
        (1, 1, None)
    );
}

#[test]
fn a_bad_cron_expression_is_an_error_at_its_place() {
    let text = "[[jobs]]\nname = \"x\"\ncommand = \"y\"\nschedule = \"70 * * * *\"\n";
    let err = parse_spec("berth.toml", text).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("berth.toml:4:12: schedule `70 * * * *`"),
        "{err}"
    );
    let text = "[[jobs]]\nname = \"x\"\ncommand = \"y\"\ntasks = 2\nparallelism = 3\n";
    let err = parse_spec("berth.toml", text).unwrap_err();
    assert!(
        err.to_string()
            .contains("berth.toml:5:15: `parallelism` must be from 1 to 2"),
        "{err}"
    );
}

#[test]
fn resources_and_mounts_fill_the_model() {
    let text = r#"
[resources]
postgres = true
redis = false

[[mounts]]
source = "data"
destination = "/data/"

[[mounts]]
source = "uploads_2"
destination = "/srv/uploads"
processes = ["worker"]
"#;
    let parsed = parse_spec("berth.toml", text).unwrap();
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let spec = parsed.spec;
    assert!(spec.resources.postgres);
    assert!(!spec.resources.redis);
    assert_eq!(spec.mounts.len(), 2);
    assert_eq!(spec.mounts[0].destination, "/data");
    assert!(spec.mounts[0].applies_to("web"));
    assert!(!spec.mounts[1].applies_to("web"));
    assert!(spec.mounts[1].applies_to("worker"));
}

#[test]
fn volume_sizes_are_read_in_each_spelling() {
    let text = "[mounts]\nsource = \"myapp_data\"\ndestination = \"/data\"\ninitial_size = \"10gb\"\nauto_extend_size_threshold = 80\n";
    let parsed = parse_spec("fly.toml", text).unwrap();
    assert_eq!(parsed.spec.mounts.len(), 1);
    assert_eq!(parsed.spec.mounts[0].source, "myapp_data");
    assert_eq!(parsed.spec.mounts[0].size_mib, Some(10 * 1024));
    assert!(
        parsed
            .warnings
            .iter()
            .any(|warning| warning.contains("auto-extension")),
        "{:?}",
        parsed.warnings
    );
    // A bare number is GB, as on Fly; berth's own `size` too.
    let bare = parse_spec(
        "berth.toml",
        "[[mounts]]\nsource = \"a\"\ndestination = \"/a\"\nsize = 2\n\n[[mounts]]\nsource = \"b\"\ndestination = \"/b\"\nsize = \"64mb\"\n",
    )
    .unwrap();
    let sizes: Vec<_> = bare
        .spec
        .mounts
        .iter()
        .map(|mount| mount.size_mib)
        .collect();
    assert_eq!(sizes, [Some(2048), Some(64)]);

    for (size, wanted) in [
        ("\"1mb\"", "must be between 16 MB"),
        ("\"lots\"", "a bare number is GB"),
        ("-3", "a bare number is GB"),
    ] {
        let text = format!("[[mounts]]\nsource = \"a\"\ndestination = \"/a\"\nsize = {size}\n");
        let err = parse_spec("berth.toml", &text).unwrap_err().to_string();
        assert!(
            err.contains(wanted) && err.contains("berth.toml:4:8"),
            "{size}: {err}"
        );
    }
}

#[test]
fn bad_mounts_are_errors_at_their_place() {
    let text = "[[mounts]]\nsource = \"Data\"\ndestination = \"/data\"\n\n[[mounts]]\nsource = \"ok\"\ndestination = \"relative/dir\"\n\n[[mounts]]\nsource = \"sys\"\ndestination = \"/proc/x\"\n\n[[mounts]]\nsource = \"up\"\ndestination = \"/a/../etc\"\n";
    let err = parse_spec("berth.toml", text).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("berth.toml:2:10"), "{shown}");
    assert!(shown.contains("lowercase"), "{shown}");
    assert!(shown.contains("berth.toml:7:15"), "{shown}");
    assert!(shown.contains("absolute"), "{shown}");
    assert!(shown.contains("system directory"), "{shown}");
    assert!(shown.contains("`..`"), "{shown}");
}

#[test]
fn resources_must_be_booleans() {
    let err = parse_spec("berth.toml", "[resources]\npostgres = \"yes\"\n").unwrap_err();
    assert!(err.to_string().contains("berth.toml:2:"), "{err}");
}

#[test]
fn fly_autoscaling_keys_keep_their_meaning() {
    let text = r#"
[http_service]
internal_port = 8080
auto_stop_machines = "suspend"
auto_start_machines = true
min_machines_running = 0
max_machines_running = "4"
idle_timeout = "90s"
scale_in_delay = 5

  [http_service.concurrency]
  type = "requests"
  soft_limit = 10
  hard_limit = 15
"#;
    let parsed = parse_spec("fly.toml", text).unwrap();
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let scaling = parsed.spec.http.scaling;
    assert!(scaling.auto_stop && scaling.auto_start && scaling.is_active());
    assert_eq!((scaling.min, scaling.max), (0, Some(4)));
    assert_eq!(
        (scaling.soft_limit, scaling.hard_limit),
        (Some(10), Some(15))
    );
    assert_eq!(scaling.idle_timeout, Duration::from_secs(90));
    assert_eq!(scaling.scale_in_delay, Duration::from_secs(5));

    let off = parse_spec("fly.toml", "[http_service]\nauto_stop_machines = \"off\"\n").unwrap();
    assert!(!off.spec.http.scaling.auto_stop);
    assert!(!off.spec.http.scaling.is_active());
}

#[test]
fn cloud_run_words_are_aliases() {
    let text =
        "[http_service]\nmin_instances = 1\nmax_instances = 10\ncontainer_concurrency = 80\n";
    let scaling = parse_spec("berth.toml", text).unwrap().spec.http.scaling;
    assert_eq!((scaling.min, scaling.max), (1, Some(10)));
    assert_eq!(
        (scaling.soft_limit, scaling.hard_limit),
        (Some(64), Some(80))
    );
}

#[test]
fn bad_scaling_values_are_errors_at_their_place() {
    let text = "[http_service]\nauto_stop_machines = \"sometimes\"\nmin_machines_running = -1\nmax_machines_running = 0\n\n  [http_service.concurrency]\n  soft_limit = 30\n  hard_limit = 20\n";
    let err = parse_spec("fly.toml", text).unwrap_err().to_string();
    assert!(err.contains("fly.toml:2:22"), "{err}");
    assert!(err.contains("fly.toml:3:24"), "{err}");
    assert!(err.contains("fly.toml:4:24"), "{err}");
    assert!(
        err.contains("fly.toml:7:16: soft_limit (30) must not exceed hard_limit (20)"),
        "{err}"
    );
}

#[test]
fn vm_sizes_and_memory_forms() {
    let text = r#"
[[vm]]
size = "shared-cpu-2x"
processes = ["web"]

[[vm]]
memory = "1gb"
cpus = 2
processes = ["worker"]

[[vm]]
memory_mb = 384
"#;
    let spec = parse_spec("fly.toml", text).unwrap().spec;
    let web = spec.vm_for("web");
    assert_eq!(
        (web.memory_mb, web.cpus, web.size.as_deref()),
        (512, 2.0, Some("shared-cpu-2x"))
    );
    assert_eq!(spec.vm_for("worker").memory_mb, 1024);
    assert_eq!(spec.vm_for("cron").memory_mb, 384);
    let default = parse_spec("fly.toml", "").unwrap().spec.vm_for("web");
    assert_eq!((default.memory_mb, default.cpus), (256, 1.0));
    let plain = parse_spec("fly.toml", "[[vm]]\nmemory = 512\n")
        .unwrap()
        .spec;
    assert_eq!(plain.vm_for("web").memory_mb, 512);
}

#[test]
fn bad_vm_values_are_errors_at_their_place() {
    let err = parse_spec(
        "fly.toml",
        "[[vm]]\nsize = \"huge-cpu-9x\"\nmemory = \"lots\"\ncpus = 0\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("fly.toml:2:8: unknown size `huge-cpu-9x`"),
        "{err}"
    );
    assert!(err.contains("fly.toml:3:10: memory must be"), "{err}");
    assert!(err.contains("fly.toml:4:8: cpus must be"), "{err}");
}

#[test]
fn bluegreen_and_canary_refuse_a_volume_that_is_not_shared() {
    let text = "app = \"notes\"\n[deploy]\nstrategy = \"canary\"\n[[mounts]]\nsource = \"data\"\ndestination = \"/data\"\n";
    let err = parse_spec("fly.toml", text).unwrap_err().to_string();
    assert!(
        err.contains("fly.toml:3:12: strategy \"canary\" runs new instances beside old ones, and volume `data` is not shared"),
        "{err}"
    );
    let shared = format!("{text}shared = true\n");
    let spec = parse_spec("fly.toml", &shared).unwrap().spec;
    assert_eq!(spec.deploy.strategy, DeployStrategy::Canary);
    assert!(spec.mounts[0].shared);
    let rolling = text.replace("canary", "rolling");
    assert!(parse_spec("fly.toml", &rolling).is_ok());
}

#[test]
fn a_spec_cannot_ask_for_more_instances_than_a_group_may_have() {
    let text =
        "app = \"big\"\n[http_service]\nmin_machines_running = 70\nmax_machines_running = 100000\n";
    let err = parse_spec("fly.toml", text).unwrap_err().to_string();
    assert!(
        err.contains("fly.toml:3:24: min_machines_running = 70 is more than the 64 instances a process group may have"),
        "{err}"
    );
    assert!(
        err.contains("fly.toml:4:24: max_machines_running = 100000 is more than the 64"),
        "{err}"
    );
}

#[test]
fn egress_allow_takes_ipv4_ranges_and_says_where_one_is_wrong() {
    let text = "app = \"lan\"\n[egress]\nallow = [\"10.0.0.0/8\", \"192.168.1.20\"]\n";
    let spec = parse_spec("berth.toml", text).unwrap().spec;
    let allowed: Vec<String> = spec
        .egress
        .allow
        .iter()
        .map(|cidr| cidr.to_string())
        .collect();
    assert_eq!(allowed, ["10.0.0.0/8", "192.168.1.20/32"]);
    let bad = "app = \"lan\"\n[egress]\nallow = [\"10.0.0.0/8\", \"10.1.0.0/8\"]\n";
    let err = parse_spec("berth.toml", bad).unwrap_err().to_string();
    assert!(
        err.contains(
            "berth.toml:3:24: [egress] allow: `10.1.0.0/8` has bits set past its /8 prefix"
        ),
        "{err}"
    );
}

#[test]
fn env_names_and_values_a_process_cannot_take_are_errors_with_places() {
    let big = "x".repeat(40 * 1024);
    let text = format!(
        "app = \"envy\"\n[env]\n\"A=B\" = \"1\"\n\"\" = \"2\"\nGOOD = \"ok\"\nNUL = \"a\\u0000b\"\nHUGE = \"{big}\"\n"
    );
    let err = parse_spec("berth.toml", &text).unwrap_err().to_string();
    for expected in [
        "berth.toml:3:9: [env]: `A=B` is not a valid env var name",
        "berth.toml:4:6: [env]: `` is not a valid env var name",
        "berth.toml:6:7: [env]: `NUL` holds a NUL byte",
        "berth.toml:7:8: [env]: `HUGE` is 40960 bytes; a value may have at most 32768",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
    let port = parse_spec("berth.toml", "app = \"p\"\n[env]\nPORT = \"9000\"\n").unwrap();
    assert!(
        port.warnings
            .iter()
            .any(|warning| warning.contains("sets PORT")),
        "{:?}",
        port.warnings
    );
    let many: String = (0..1001).map(|n| format!("V{n} = \"x\"\n")).collect();
    let err = parse_spec("berth.toml", &format!("app = \"m\"\n[env]\n{many}"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[env] has 1001 variables; at most 1000 fit"),
        "{err}"
    );
}

#[test]
fn the_build_env_comes_from_build_env_and_flys_build_args() {
    let berth = parse_spec(
        "berth.toml",
        "[build]\nsecrets = [\"NPM_TOKEN\"]\ndatabase = true\n\n[build.env]\nSQLX_OFFLINE = true\nLEVEL = 3\n",
    )
    .unwrap()
    .spec
    .build;
    assert_eq!(berth.env["SQLX_OFFLINE"], "true");
    assert_eq!(berth.env["LEVEL"], "3");
    assert_eq!(berth.secrets, ["NPM_TOKEN"]);
    assert!(berth.database);

    let fly = parse_spec(
        "fly.toml",
        "app = \"x\"\n\n[build.args]\nRUST_VERSION = \"1.80\"\n",
    )
    .unwrap();
    assert_eq!(fly.spec.build.env["RUST_VERSION"], "1.80");
    assert!(
        !fly.warnings.iter().any(|warning| warning.contains("args")),
        "{:?}",
        fly.warnings
    );

    let hosts = parse_spec(
        "berth.toml",
        "[build]\nhosts = [\"Registry.Example.com\", \"*.corp.example\"]\n",
    )
    .unwrap();
    assert_eq!(
        hosts.spec.build.hosts,
        ["registry.example.com", "*.corp.example"]
    );
    let bad_host = parse_spec("berth.toml", "[build]\nhosts = [\"http://x\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        bad_host.contains("`http://x` is not a host name"),
        "{bad_host}"
    );

    let bad = parse_spec("berth.toml", "[build]\nsecrets = [\"A=B\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        bad.contains("berth.toml:2:12") && bad.contains("[build] secrets"),
        "{bad}"
    );
}

#[test]
fn internal_allow_names_apps_and_says_where_one_is_not_a_name() {
    let text = "app = \"api\"\n[internal]\nallow = [\"frontend\", \"jobs-1\", \"frontend\"]\n";
    let spec = parse_spec("berth.toml", text).unwrap().spec;
    assert_eq!(spec.internal.allow, ["frontend", "jobs-1"]);
    let bad = "app = \"api\"\n[internal]\nallow = [\"frontend\", \"Bad_Name\"]\n";
    let err = parse_spec("berth.toml", bad).unwrap_err().to_string();
    assert!(err.contains("berth.toml:3:22: [internal] allow:"), "{err}");
}

#[test]
fn build_packages_are_debian_names_and_a_bad_one_is_shown_where_it_is() {
    let text =
        "app = \"grpc\"\n[build]\npackages = [\"protobuf-compiler\", \"libstdc++-12-dev\"]\n";
    let spec = parse_spec("berth.toml", text).unwrap().spec;
    assert_eq!(
        spec.build.packages,
        ["protobuf-compiler", "libstdc++-12-dev"]
    );
    let bad = "app = \"grpc\"\n[build]\npackages = [\"cmake\", \"curl; rm -rf /\"]\n";
    let err = parse_spec("berth.toml", bad).unwrap_err().to_string();
    assert!(
        err.contains(
            "berth.toml:3:22: [build] packages: `curl; rm -rf /` is not a Debian package name"
        ),
        "{err}"
    );
}

#[test]
fn edge_rules_read_ranges_sizes_and_rates_and_say_where_one_is_wrong() {
    let text = "app = \"api\"\n[edge]\nallow = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n\
                deny = [\"10.0.0.7\"]\nmax_body = \"1mb\"\nmax_header = \"16kb\"\n\
                max_connections = 20\nrequest_timeout = \"30s\"\n\n[[edge.rate_limits]]\n\
                requests = 100\nper = \"1m\"\nburst = 10\npath = \"/api\"\n";
    let edge = parse_spec("berth.toml", text).unwrap().spec.edge;
    assert_eq!(edge.allow.len(), 2);
    assert_eq!(edge.deny[0].to_string(), "10.0.0.7/32");
    assert_eq!(edge.max_body_bytes, Some(1024 * 1024));
    assert_eq!(edge.max_header_bytes, Some(16 * 1024));
    assert_eq!(edge.max_connections, Some(20));
    assert_eq!(
        edge.request_timeout,
        Some(std::time::Duration::from_secs(30))
    );
    let limit = &edge.rate_limits[0];
    assert_eq!(
        (
            limit.requests,
            limit.per.as_secs(),
            limit.burst,
            limit.path.as_deref()
        ),
        (100, 60, 10, Some("/api"))
    );
    for (bad, expected) in [
        (
            "[edge]\ndeny = [\"10.0.0.300\"]\n",
            "berth.toml:3:9: [edge] deny: `10.0.0.300` is not an IP address",
        ),
        (
            "[edge]\nallow = [\"10.1.0.0/8\"]\n",
            "berth.toml:3:10: [edge] allow: `10.1.0.0/8` has bits set",
        ),
        (
            "[[edge.rate_limits]]\nrequests = 0\n",
            "berth.toml:3:12: [[edge.rate_limits]] requests must be 1 or more",
        ),
        (
            "[[edge.rate_limits]]\nrequests = 5\nper = \"soon\"\n",
            "berth.toml:4:7: [[edge.rate_limits]] per: `soon`",
        ),
        (
            "[edge]\nmax_body = \"lots\"\n",
            "berth.toml:3:12: [edge] max_body must be a size",
        ),
        (
            "[edge]\nmax_header = 100\n",
            "berth.toml:3:14: [edge] max_header must be a size of at least 1kb",
        ),
        (
            "[edge]\nmax_connections = 0\n",
            "berth.toml:3:19: [edge] max_connections must be 1 or more",
        ),
        (
            "[edge]\nrequest_timeout = \"0s\"\n",
            "berth.toml:3:19: [edge] request_timeout: `0s` is not a duration of 1ms or more",
        ),
    ] {
        let err = parse_spec("berth.toml", &format!("app = \"api\"\n{bad}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{bad}: {err}");
    }
}

#[test]
fn http_service_reads_domains_https_and_where_certificates_come_from() {
    let text = "app = \"shop\"\n[http_service]\nforce_https = true\nhsts = true\n\
                tls = \"internal\"\ndomains = [\"WWW.Example.org\", \"nas.lan\"]\n";
    let http = parse_spec("berth.toml", text).unwrap().spec.http;
    assert!(http.force_https && http.hsts && http.tls_internal);
    assert_eq!(http.domains, ["www.example.org", "nas.lan"]);
    let plain = parse_spec(
        "berth.toml",
        "app = \"shop\"\n[http_service]\ntls = \"auto\"\n",
    )
    .unwrap()
    .spec
    .http;
    assert!(!plain.tls_internal);
    let err = parse_spec(
        "berth.toml",
        "app = \"shop\"\n[http_service]\ntls = \"letsencrypt\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("berth.toml:3:7: [http_service] tls: `letsencrypt` is neither"),
        "{err}"
    );
}
