//! End to end: managed PostgreSQL and Redis, volumes and secrets, with the
//! real servers (Debian's postgresql and redis-server, which `.ci/run`
//! installs) and examples/todo built by real cargo.

use std::time::{Duration, Instant};

use berth_testkit::{Answer, TestServer, edit, example};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// Deploys a fresh copy of examples/todo with `berth up`; returns its folder.
async fn deploy_todo(server: &TestServer) -> (tempfile::TempDir, String) {
    let app = example("todo");
    let out = server.ok_in(app.path(), &["up"]).await;
    (app, out.stderr)
}

/// Retries `request` until `accept` holds or `timeout` passes.
async fn eventually<F, Fut>(
    timeout: Duration,
    mut request: F,
    accept: impl Fn(&Answer) -> bool,
) -> Answer
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let answer = request().await;
        if accept(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting; last answer {} {:?}",
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stored log lines of `app` holding `text`, once there are some.
async fn stored_lines(server: &TestServer, app: &str, text: &str) -> Answer {
    eventually(
        Duration::from_secs(5),
        || async {
            let out = server.ok(&["logs", "--app", app, "--grep", text]).await;
            Answer {
                status: 200,
                body: out.stdout,
                head: String::new(),
            }
        },
        |answer| !answer.body.is_empty(),
    )
    .await
}

fn database_url(server_out: &str) -> String {
    server_out.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todo_data_survives_redeploy_rollback_and_server_restart() {
    setup();
    let mut server = TestServer::start().await;
    let (app, out) = deploy_todo(&server).await;
    assert!(out.contains("made PostgreSQL database app_todo"), "{out}");
    assert!(out.contains("made a Redis of its own"), "{out}");
    assert!(out.contains("made volume files"), "{out}");
    assert!(
        out.contains("migrated: table todos is ready"),
        "the release command ran the migration: {out}"
    );

    let added = server.request("todo", "POST", "/todos", "buy milk").await;
    assert_eq!((added.status, added.body.as_str()), (201, "1"));
    assert_eq!(server.get("todo", "/todos").await.body, "1\tbuy milk\n");
    assert_eq!(server.request("todo", "POST", "/count", "").await.body, "1");
    assert_eq!(server.request("todo", "POST", "/count", "").await.body, "2");
    let put = server
        .request("todo", "PUT", "/files/note.txt", "kept on a volume")
        .await;
    assert_eq!(put.status, 204, "{}", put.body);

    // The volume is a directory in the data dir; as root the app sees it at
    // its destination, through a mount the host does not see.
    let on_disk = server.data_dir().join("volumes/todo/files/note.txt");
    assert_eq!(
        std::fs::read_to_string(&on_disk).unwrap(),
        "kept on a volume"
    );
    let seen_at = server.get("todo", "/env/BERTH_VOLUME_FILES").await.body;
    if berth_runtime::can_isolate() {
        assert_eq!(seen_at, "/srv/todo-files");
        assert!(!std::path::Path::new("/srv/todo-files/note.txt").exists());
    } else {
        assert_eq!(
            seen_at,
            server
                .data_dir()
                .join("volumes/todo/files")
                .display()
                .to_string()
        );
    }
    let volumes = server
        .ok(&["volumes", "list", "--app", "todo", "--json"])
        .await
        .json();
    assert_eq!(volumes[0]["name"], "files");
    assert_eq!(volumes[0]["destination"], "/srv/todo-files");

    // A redeploy of changed code keeps rows, counter and files.
    edit(
        &app.path().join("src/main.rs"),
        "todo: GET /todos",
        "todo v2: GET /todos",
    );
    server.ok_in(app.path(), &["deploy"]).await;
    assert!(server.get("todo", "/").await.body.starts_with("todo v2"));
    assert_eq!(server.get("todo", "/todos").await.body, "1\tbuy milk\n");
    assert_eq!(server.request("todo", "POST", "/count", "").await.body, "3");
    assert_eq!(
        server.get("todo", "/files/note.txt").await.body,
        "kept on a volume"
    );

    // So does a rollback.
    server.ok(&["rollback", "--app", "todo"]).await;
    assert!(server.get("todo", "/").await.body.starts_with("todo:"));
    assert_eq!(server.get("todo", "/todos").await.body, "1\tbuy milk\n");
    assert_eq!(
        server.get("todo", "/files/note.txt").await.body,
        "kept on a volume"
    );

    // And a crash of the server itself: PostgreSQL and Redis come back with it.
    server.kill9().await;
    server.restart().await;
    let todos = eventually(
        Duration::from_secs(30),
        || server.get("todo", "/todos"),
        |answer| answer.status == 200,
    )
    .await;
    assert_eq!(todos.body, "1\tbuy milk\n");
    assert_eq!(server.request("todo", "POST", "/count", "").await.body, "4");
    assert_eq!(
        server.get("todo", "/files/note.txt").await.body,
        "kept on a volume"
    );

    // Connection details are for the owner's asking only: never in status or logs.
    let url = database_url(
        &server
            .ok(&["postgres", "url", "--app", "todo"])
            .await
            .stdout,
    );
    assert!(url.starts_with("postgres://app_todo:"), "{url}");
    let password = url
        .trim_start_matches("postgres://app_todo:")
        .split('@')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(password.len(), 32);
    let status = server
        .ok(&["status", "--app", "todo", "--json"])
        .await
        .stdout;
    assert!(!status.contains(&password));
    server
        .request("todo", "POST", "/log/DATABASE_URL", "")
        .await;
    let logs = stored_lines(&server, "todo", "debug: DATABASE_URL").await;
    assert!(!logs.body.contains(&password), "{}", logs.body);
    assert!(logs.body.contains("[masked]"), "{}", logs.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_are_private_backups_restore_and_postgres_is_kept_running() {
    setup();
    let server = TestServer::start().await;
    let (_app, _) = deploy_todo(&server).await;
    server.ok(&["apps", "create", "other"]).await;
    let attached = server.ok(&["postgres", "attach", "--app", "other"]).await;
    assert!(attached.stderr.contains("saved"), "{}", attached.stderr);
    let todo_url = server
        .ok(&["postgres", "url", "--app", "todo"])
        .await
        .stdout;
    let other_url = server
        .ok(&["postgres", "url", "--app", "other"])
        .await
        .stdout;
    let (todo_url, other_url) = (todo_url.trim(), other_url.trim());

    // One app cannot take every connection of the shared server: 45
    // sessions as `other` get at most its 40, and `todo` still connects.
    let sessions: Vec<_> = (0..45)
        .map(|_| {
            let url = other_url.to_string();
            tokio::spawn(async move {
                tokio::process::Command::new("psql")
                    .arg(url)
                    .args(["-tAc", "SELECT pg_sleep(3)"])
                    .output()
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let todo_meanwhile = server.get("todo", "/todos").await;
    assert_eq!(todo_meanwhile.status, 200, "{}", todo_meanwhile.body);
    let shown = server.ok(&["postgres", "url", "--app", "other"]).await;
    assert!(
        shown.stderr.contains("of its 40 connections in use"),
        "{}",
        shown.stderr
    );
    let mut refused = 0;
    for session in sessions {
        let session = session.await.unwrap().unwrap();
        if !session.status.success() {
            let stderr = String::from_utf8_lossy(&session.stderr);
            assert!(stderr.contains("too many connections for role"), "{stderr}");
            refused += 1;
        }
    }
    assert!(
        refused >= 5,
        "45 sessions past a limit of 40, {refused} refused"
    );

    // Each app's credentials open its own database, and nothing else.
    let psql = |url: String| async move {
        tokio::process::Command::new("psql")
            .arg(url)
            .args(["-tAc", "SELECT current_database()"])
            .output()
            .await
            .expect("psql")
    };
    let own = psql(other_url.to_string()).await;
    assert!(
        own.status.success(),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&own.stdout).trim(), "app_other");
    let into_todo = other_url.replace("/app_other", "/app_todo");
    let denied = psql(into_todo).await;
    assert!(
        !denied.status.success(),
        "other's role opened todo's database"
    );
    let todo_password = todo_url
        .trim_start_matches("postgres://app_todo:")
        .split('@')
        .next()
        .unwrap();
    let other_password = other_url
        .trim_start_matches("postgres://app_other:")
        .split('@')
        .next()
        .unwrap();
    let wrong_password = todo_url.replace(todo_password, other_password);
    assert!(!psql(wrong_password).await.status.success());

    // Backup, delete, restore.
    for title in ["one", "two"] {
        assert_eq!(
            server.request("todo", "POST", "/todos", title).await.status,
            201
        );
    }
    let backup = server
        .ok(&["postgres", "backup", "--app", "todo", "--json"])
        .await
        .json();
    let id = backup["id"].as_str().unwrap().to_string();
    assert!(backup["size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        server
            .request("todo", "DELETE", "/todos/1", "")
            .await
            .status,
        204
    );
    assert_eq!(server.get("todo", "/todos").await.body, "2\ttwo\n");
    let listed = server
        .ok(&["postgres", "backups", "--app", "todo"])
        .await
        .stdout;
    assert!(listed.contains(&id), "{listed}");
    server
        .ok(&["postgres", "restore", &id, "--yes", "--app", "todo"])
        .await;
    assert_eq!(server.get("todo", "/todos").await.body, "1\tone\n2\ttwo\n");

    // PostgreSQL is restarted by the server if it dies; the app reconnects.
    let pid_file = server.data_dir().join("postgres/cluster/postmaster.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let back = eventually(
        Duration::from_secs(60),
        || server.get("todo", "/todos"),
        |answer| answer.status == 200,
    )
    .await;
    assert_eq!(back.body, "1\tone\n2\ttwo\n");

    // Destroying asks first; with --yes the database goes too.
    server.fails(&["apps", "destroy", "todo"]).await;
    server.ok(&["apps", "destroy", "todo", "--yes"]).await;
    assert!(!psql(todo_url.to_string()).await.status.success());
    assert!(!server.data_dir().join("volumes/todo").exists());
    // Its backups are put away, not handed to the next app of its name.
    assert!(!server.data_dir().join("backups/todo").exists());
    let kept = std::fs::read_dir(server.data_dir().join("backups/.destroyed"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(kept.len() == 1 && kept[0].starts_with("todo-"), "{kept:?}");
    server.ok(&["apps", "create", "todo"]).await;
    let listed = server
        .ok(&["postgres", "backups", "--app", "todo"])
        .await
        .stdout;
    assert!(!listed.contains(&id), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_encrypted_injected_masked_and_never_shown() {
    setup();
    let server = TestServer::start().await;
    let (app, _) = deploy_todo(&server).await;
    let value = "sk_live_Zq81xVb3NmR7";
    let set = server
        .ok(&[
            "secrets",
            "set",
            &format!("API_KEY={value}"),
            "--app",
            "todo",
        ])
        .await;
    assert!(
        set.stderr.contains("v2 is live"),
        "a change makes a release: {}",
        set.stderr
    );
    assert_eq!(server.get("todo", "/env/API_KEY").await.body, value);

    // Shuttle's Secrets.toml imports as it is.
    let secrets_toml = app.path().join("Secrets.toml");
    std::fs::write(
        &secrets_toml,
        "STRIPE_KEY = \"rk_test_5551234\"\nRETRIES = 3\n",
    )
    .unwrap();
    server
        .ok(&[
            "secrets",
            "import",
            secrets_toml.to_str().unwrap(),
            "--app",
            "todo",
        ])
        .await;
    assert_eq!(
        server.get("todo", "/env/STRIPE_KEY").await.body,
        "rk_test_5551234"
    );
    assert_eq!(server.get("todo", "/env/RETRIES").await.body, "3");

    // A line that prints the secret is stored masked.
    server.request("todo", "POST", "/log/API_KEY", "").await;
    let logs = stored_lines(&server, "todo", "debug: API_KEY").await;
    assert!(
        logs.body.contains("debug: API_KEY=[masked]"),
        "{}",
        logs.body
    );

    // Listing shows names and digests, never values, in the CLI and the API.
    let listed = server
        .ok(&["secrets", "list", "--app", "todo"])
        .await
        .stdout;
    assert!(
        listed.contains("API_KEY") && listed.contains("STRIPE_KEY"),
        "{listed}"
    );
    assert!(
        !listed.contains(value) && !listed.contains("rk_test_5551234"),
        "{listed}"
    );
    let (code, api) = server.api_get("/v1/apps/todo/secrets").await;
    assert_eq!(code, 200);
    assert!(!api.to_string().contains(value), "{api}");
    let (_, releases) = server.api_get("/v1/apps/todo/releases").await;
    assert!(!releases.to_string().contains(value));

    // The raw store and log files hold neither value (the masked line
    // above was read back, so it is written).
    for file in ["berth.db", "berth.db-wal", "logs.db", "logs.db-wal"] {
        let bytes = std::fs::read(server.data_dir().join(file)).unwrap_or_default();
        for secret in [value, "rk_test_5551234"] {
            assert!(
                !bytes
                    .windows(secret.len())
                    .any(|window| window == secret.as_bytes()),
                "{file} holds a secret's value"
            );
        }
    }
    let key = server.data_dir().join("secrets.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Unset removes it from the next release.
    server
        .ok(&["secrets", "unset", "API_KEY", "--app", "todo"])
        .await;
    assert_eq!(server.get("todo", "/env/API_KEY").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_resource_input_gets_a_clear_error_and_changes_nothing() {
    setup();
    let server = TestServer::start().await;
    server.ok(&["apps", "create", "plainapp"]).await;

    let err = server
        .fails(&["postgres", "url", "--app", "plainapp"])
        .await;
    assert!(
        err.stderr.contains("has no PostgreSQL database"),
        "{}",
        err.stderr
    );
    let err = server.fails(&["secrets", "list", "--app", "ghost"]).await;
    assert!(err.stderr.contains("ghost"), "{}", err.stderr);
    let err = server
        .fails(&["secrets", "set", "1BAD=x", "--app", "plainapp"])
        .await;
    assert!(err.stderr.contains("1BAD"), "{}", err.stderr);

    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("prod.env");
    std::fs::write(&env_file, "GOOD=1\nnot a pair\nQ=\"unterminated secret\n").unwrap();
    let err = server
        .fails(&[
            "secrets",
            "import",
            env_file.to_str().unwrap(),
            "--app",
            "plainapp",
        ])
        .await;
    assert!(
        err.stderr.contains("prod.env:2:1: expected NAME=VALUE"),
        "{}",
        err.stderr
    );
    assert!(err.stderr.contains("prod.env:3:3"), "{}", err.stderr);
    assert!(
        !err.stderr.contains("unterminated secret"),
        "{}",
        err.stderr
    );
    let listed = server
        .ok(&["secrets", "list", "--app", "plainapp", "--json"])
        .await
        .json();
    assert_eq!(listed, serde_json::json!([]), "nothing was imported");

    let err = server
        .fails(&["postgres", "restore", "nope", "--yes", "--app", "plainapp"])
        .await;
    assert!(err.stderr.contains("no backup"), "{}", err.stderr);

    let err = server
        .fails(&["volumes", "destroy", "data", "--yes", "--app", "plainapp"])
        .await;
    assert!(err.stderr.contains("no volume `data`"), "{}", err.stderr);

    // A bad [[mounts]] fails the deploy at its place, before any build.
    let app = example("plain");
    std::fs::write(
        app.path().join("berth.toml"),
        "app = \"plainapp\"\n\n[[mounts]]\nsource = \"data\"\ndestination = \"data\"\n",
    )
    .unwrap();
    let err = server.fails_in(app.path(), &["deploy"]).await;
    assert!(err.stderr.contains("berth.toml:5:15"), "{}", err.stderr);
    assert!(err.stderr.contains("absolute"), "{}", err.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeploy_never_runs_two_instances_on_one_volume() {
    setup();
    let server = TestServer::start().await;
    let app = example("plain");
    // Each instance notes in a journal on its volume when it starts and
    // when SIGTERM ends it (where an app's last commit would go).
    std::fs::write(
        app.path().join("berth.toml"),
        r#"app = "journal"
[[mounts]]
source = "data"
destination = "/data"
[processes]
web = "plain & trap 'echo stop-$BERTH_RELEASE >> $BERTH_VOLUME_DATA/journal; kill $!; exit 0' TERM; echo start-$BERTH_RELEASE >> $BERTH_VOLUME_DATA/journal; wait"
"#,
    )
    .unwrap();
    server.ok_in(app.path(), &["up"]).await;
    assert_eq!(server.get("journal", "/").await.status, 200);

    let out = server
        .ok(&["env", "set", "--app", "journal", "GREETING=hello"])
        .await;
    assert!(
        out.stderr
            .contains("web: the old instances stop before the new ones start")
            && out.stderr.contains("volume `data`"),
        "the deploy says why it has a gap: {}",
        out.stderr
    );
    assert_eq!(server.get("journal", "/").await.status, 200);
    let journal = server.data_dir().join("volumes/journal/data/journal");
    let lines = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(
        lines.lines().collect::<Vec<_>>(),
        ["start-1", "stop-1", "start-2"],
        "v1 wrote its last line before v2 started"
    );
}
