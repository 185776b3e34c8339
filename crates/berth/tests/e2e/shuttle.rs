//! End to end: a Shuttle project (examples/shuttle), built against the real
//! shuttle crates from crates.io, deployed unchanged with `berth up`. Its
//! `#[shuttle_shared_db::Postgres]` pool is provisioned by berth's Shuttle
//! runtime API on berth's PostgreSQL, its `#[shuttle_runtime::Secrets]`
//! store comes from Secrets.toml. The server's API is served over TLS: the
//! runtime's own plain loopback listener still answers it.

use std::time::Duration;

use berth_testkit::{TestServer, example};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// The environment of the app process of a running instance of `app`, read
/// from /proc: the instance's process or, under a pid namespace's init, its
/// descendant that has the app's environment.
async fn instance_env(server: &TestServer, app: &str) -> Vec<(String, String)> {
    let status = server.status(app).await;
    let pid = status["instances"]
        .as_array()
        .and_then(|instances| instances.iter().find_map(|i| i["pid"].as_u64()))
        .expect("a running instance with a pid");
    let mut candidates = vec![pid];
    let environ = loop {
        let pid = candidates.remove(0);
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
        if environ
            .windows(15)
            .any(|window| window == b"BERTH_INSTANCE=")
        {
            break environ;
        }
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
        {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            candidates.extend(
                children
                    .split_whitespace()
                    .filter_map(|child| child.parse::<u64>().ok()),
            );
        }
        assert!(
            !candidates.is_empty(),
            "no process of the instance has its environment"
        );
    };
    environ
        .split(|byte| *byte == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (key, value) = entry.split_once('=')?;
            Some((key.to_string(), value.to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shuttle_project_runs_unchanged_with_its_database_and_secrets() {
    setup();
    let server = TestServer::start_with(&["--api-tls"]).await;
    assert!(server.api_url.starts_with("https://"), "{}", server.api_url);
    let project = example("shuttle");
    // Shuttle's templates ignore the secrets file; it is uploaded anyway.
    std::fs::write(
        project.path().join(".gitignore"),
        "/target\nSecrets*.toml\n",
    )
    .unwrap();

    let validate = server
        .ok(&["config", "validate", &project.path().display().to_string()])
        .await;
    assert!(
        validate
            .stdout
            .contains("#[shuttle_runtime::main] in `shuttle-notes`")
            && validate.stdout.contains("database::shared::postgres"),
        "{}",
        validate.stdout
    );

    let out = server.ok_in(project.path(), &["up"]).await.stderr;
    assert!(out.contains("a Shuttle project"), "{out}");
    assert!(
        out.contains("1 secret(s) from Secrets.toml stored sealed"),
        "{out}"
    );
    assert!(out.contains("made PostgreSQL database"), "{out}");

    // The secret reached the app through the SecretStore.
    let hello = server.get("shuttle-notes", "/").await;
    assert_eq!(
        (hello.status, hello.body.as_str()),
        (200, "Hello from a Shuttle project on berth!")
    );
    // The pool writes to and reads from berth's PostgreSQL.
    let added = server
        .request("shuttle-notes", "POST", "/notes", "first note")
        .await;
    assert_eq!((added.status, added.body.as_str()), (200, "1"));
    let listed = server.get("shuttle-notes", "/notes").await;
    assert_eq!(listed.body, "first note\n");
    let url = server
        .ok(&["postgres", "url", "--app", "shuttle-notes"])
        .await;
    assert!(url.stdout.contains("app_shuttle_notes"), "{}", url.stdout);

    // The plaintext secrets file was not kept: not in the slug, not in the build cache.
    let secrets = server
        .ok(&["secrets", "list", "--app", "shuttle-notes"])
        .await;
    assert!(secrets.stdout.contains("GREETING"), "{}", secrets.stdout);
    let mut leftover = Vec::new();
    find_named(server.data_dir(), "Secrets.toml", &mut leftover);
    find_named(
        &berth_testkit::shared_build_cache().join("shuttle-notes/src"),
        "Secrets.toml",
        &mut leftover,
    );
    assert!(
        leftover.is_empty(),
        "plaintext secrets kept at {leftover:?}"
    );

    // The runtime API answers only the app's own key.
    let env = instance_env(&server, "shuttle-notes").await;
    let get_env = |key: &str| {
        env.iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
            .unwrap_or_else(|| panic!("{key} is not set"))
    };
    assert_eq!(get_env("SHUTTLE_ENV"), "production");
    assert_eq!(get_env("SHUTTLE_PROJECT_NAME"), "shuttle-notes");
    assert_eq!(get_env("SHUTTLE_RUNTIME_PORT"), get_env("PORT"));
    let api = get_env("SHUTTLE_API");
    let key = get_env("SHUTTLE_API_KEY");
    // Plain HTTP on a loopback port of its own, which serves nothing else.
    assert!(api.starts_with("http://127.0.0.1:"), "{api}");
    let runtime_root = api.trim_end_matches("/shuttle").to_string();
    assert!(
        !server
            .api_url
            .contains(runtime_root.trim_start_matches("http://"))
    );
    let client = reqwest::Client::new();
    let answer = client
        .get(format!("{runtime_root}/v1/apps"))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 404, "only the runtime API");
    let secrets_url = format!("{api}/projects/shuttle-notes/resources/secrets");
    let answer = client.get(&secrets_url).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 401);
    let answer = client
        .get(&secrets_url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(
        body["output"]["GREETING"],
        "Hello from a Shuttle project on berth!"
    );
    server.ok(&["apps", "create", "other"]).await;
    let answer = client
        .get(format!("{api}/projects/other/resources/secrets"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status().as_u16(),
        401,
        "one app's key opens another's secrets"
    );
    // A resource berth does not provide is refused clearly, not left hanging.
    let answer = client
        .post(format!("{api}/projects/shuttle-notes/resources"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"type": "database::aws_rds::mysql", "config": {}}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("does not provide the Shuttle resource `database::aws_rds::mysql`"),
        "{body}"
    );

    // A redeploy keeps the data.
    server.ok_in(project.path(), &["deploy"]).await;
    let listed = server.get("shuttle-notes", "/notes").await;
    assert_eq!(listed.body, "first note\n");
}

fn find_named(dir: &std::path::Path, name: &str, found: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == name {
            found.push(path.clone());
        }
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            find_named(&path, name, found);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shuttle_service_that_serves_no_http_runs_as_a_worker() {
    setup();
    let server = TestServer::start().await;
    // Its own `Service` (the shape of a shuttle-serenity bot): it prints a
    // beat with the greeting from its secrets and never listens.
    let project = example("shuttle-worker");
    let out = server.ok_in(project.path(), &["up"]).await.stderr;
    assert!(out.contains("serves no HTTP"), "{out}");
    assert!(out.contains("runs as the `worker` process"), "{out}");

    let status = server
        .wait_for_status("shuttle-ticker", Duration::from_secs(30), |status| {
            status["processes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|group| group["name"] == "worker" && group["running"] == 1)
        })
        .await;
    let groups = status["processes"].as_array().cloned().unwrap_or_default();
    assert!(
        groups.iter().all(|group| group["name"] != "web"),
        "a web group for a service with no HTTP: {status}"
    );
    // It keeps running, with its secret, and nothing waits on a port.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let logs = server
            .ok(&["logs", "--app", "shuttle-ticker", "-n", "200"])
            .await
            .stdout;
        // The greeting is its secret's value: masked in the logs.
        if logs.contains("[masked] 3") {
            assert!(!logs.contains("tick from a Shuttle worker"), "{logs}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{logs}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let status = server.status("shuttle-ticker").await;
    let instance = &status["instances"][0];
    assert_eq!(
        (instance["process"].as_str(), instance["restarts"].as_u64()),
        (Some("worker"), Some(0)),
        "{status}"
    );
}
