//! `berth config validate`: the real CLI on real spec files, no server.

use std::process::Command;

fn validate(path: &std::path::Path, json: bool) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command.args(["config", "validate"]).arg(path);
    if json {
        command.arg("--json");
    }
    let out = command.output().expect("run berth");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_folder_shows_what_berth_will_do_with_it() {
    let todo = berth_testkit::workspace_root().join("examples/todo");
    let (ok, stdout, stderr) = validate(&todo, false);
    assert!(ok, "{stderr}");
    for expected in [
        "files       berth.toml",
        "app         todo",
        "release     todo migrate",
        "postgres (DATABASE_URL), redis (REDIS_URL)",
        "volume      files at /srv/todo-files",
        "health check GET /healthz",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in:\n{stdout}"
        );
    }
    assert!(stderr.contains("==> valid"), "{stderr}");
}

#[test]
fn a_procfile_folder_gives_processes_and_a_release_command_in_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        "[package]\nname = \"shop\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("Procfile"),
        "web: shop serve\nworker: shop work\nrelease: shop migrate\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = validate(dir.path(), true);
    assert!(ok, "{stderr}");
    let out: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["package"], "shop");
    assert_eq!(out["files"][0], "Procfile");
    assert_eq!(out["spec"]["processes"]["worker"], "shop work");
    assert_eq!(out["spec"]["deploy"]["release_command"], "shop migrate");
}

#[test]
fn warnings_do_not_fail_and_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let fly = dir.path().join("fly.toml");
    std::fs::write(
        &fly,
        "app = \"shop\"\nprimary_region = \"ams\"\nsurprise = 1\n",
    )
    .unwrap();
    let (ok, _stdout, stderr) = validate(&fly, false);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("primary_region"), "{stderr}");
    assert!(stderr.contains("unknown key `surprise`"), "{stderr}");

    std::fs::write(
        &fly,
        "app = \"shop\"\n[http_service]\ninternal_port = \"eighty\"\n",
    )
    .unwrap();
    let (ok, _stdout, stderr) = validate(&fly, false);
    assert!(!ok);
    assert!(stderr.contains("fly.toml:3:17"), "{stderr}");

    let procfile = dir.path().join("Procfile");
    std::fs::write(&procfile, "web serve\n").unwrap();
    let (ok, _stdout, stderr) = validate(&procfile, false);
    assert!(!ok);
    assert!(
        stderr.contains("Procfile:1:1: expected `type: command`"),
        "{stderr}"
    );

    let (ok, _stdout, stderr) = validate(&dir.path().join("missing"), false);
    assert!(!ok);
    assert!(stderr.contains("neither a file nor a folder"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_procfile_deploys_as_it_is_with_its_release_command() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
    let server = berth_testkit::TestServer::start().await;
    let app = berth_testkit::example("plain");
    std::fs::write(
        app.path().join("Procfile"),
        "web: plain\nrelease: echo released by the Procfile\n",
    )
    .unwrap();
    let out = server.ok_in(app.path(), &["up"]).await;
    assert!(out.stderr.contains("using Procfile"), "{}", out.stderr);
    assert!(
        out.stderr.contains("release | released by the Procfile"),
        "{}",
        out.stderr
    );
    assert!(
        server
            .get("plain", "/")
            .await
            .body
            .starts_with("plain says hi")
    );

    // The model the server runs exports too, and reads back the same.
    let exported = server.ok(&["export", "fly", "--app", "plain"]).await.stdout;
    assert!(exported.contains("app = \"plain\""), "{exported}");
    assert!(
        exported.contains("release_command = \"echo released by the Procfile\""),
        "{exported}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fly.toml"), &exported).unwrap();
    let (ok, out, stderr) = validate(&dir.path().join("fly.toml"), true);
    assert!(ok, "{stderr}");
    let again: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["spec"]["processes"]["web"], "plain");
    let err = server.fails(&["export", "fly", "--app", "ghost"]).await;
    assert!(err.stderr.contains("ghost"), "{}", err.stderr);
}

#[test]
fn an_exported_fly_toml_imports_back_to_the_same_model() {
    let todo = berth_testkit::workspace_root().join("examples/todo");
    let (original, again) = export_and_read_back("fly", "fly.toml");
    assert_eq!(original["spec"], again["spec"]);
    assert_eq!(again["warnings"], serde_json::json!([]));

    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["export", "dockerfile"])
        .arg(&todo)
        .output()
        .unwrap();
    let dockerfile = String::from_utf8_lossy(&out.stdout);
    assert!(
        dockerfile.contains("cargo build --release --bin todo"),
        "{dockerfile}"
    );
}

/// `berth export FORMAT` of examples/todo, read back by `berth config validate`.
fn export_and_read_back(format: &str, file_name: &str) -> (serde_json::Value, serde_json::Value) {
    let todo = berth_testkit::workspace_root().join("examples/todo");
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["export", format])
        .arg(&todo)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(todo.join("Cargo.toml"), dir.path().join("Cargo.toml")).unwrap();
    let exported = dir.path().join(file_name);
    std::fs::write(&exported, &out.stdout).unwrap();
    let (ok, original, _) = validate(&todo, true);
    assert!(ok);
    let (ok, again, stderr) = validate(&exported, true);
    assert!(ok, "{stderr}\n{}", String::from_utf8_lossy(&out.stdout));
    (
        serde_json::from_str(&original).unwrap(),
        serde_json::from_str(&again).unwrap(),
    )
}

#[test]
fn exported_render_cloud_run_and_kubernetes_files_import_back_to_the_same_model() {
    let (original, again) = export_and_read_back("render", "render.yaml");
    assert_eq!(again["apps"][0]["app"], "todo");
    assert_eq!(original["spec"], again["apps"][0]["spec"]);
    for (format, file) in [("k8s", "k8s.yaml"), ("cloudrun", "service.yaml")] {
        let (original, again) = export_and_read_back(format, file);
        assert_eq!(original["spec"], again["spec"], "{format}");
    }
}

#[test]
fn a_reader_that_goes_away_ends_berth_quietly() {
    // `berth config validate … | head -0`: the pipe's reader is gone
    // before berth writes; berth must end as `grep` would, not panic.
    let todo = berth_testkit::workspace_root().join("examples/todo");
    let (read_end, write_end) = std::io::pipe().expect("a pipe");
    drop(read_end);
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["config", "validate"])
        .arg(&todo)
        .stdout(std::process::Stdio::from(write_end))
        .output()
        .expect("run berth");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status {:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}
