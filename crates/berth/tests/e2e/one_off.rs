//! End to end: `berth run`, a one-off command in a task of the app's
//! release with the app's env and database, its output and exit code
//! passed back; `--detach` leaves it running with its output in the logs.

use std::time::Duration;

use berth_testkit::TestServer;

use crate::support::deploy_plain;

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_command_sees_the_apps_database_and_passes_its_exit_code_back() {
    setup();
    let server = TestServer::start().await;
    let _app = deploy_plain(&server, "one-off", "[resources]\npostgres = true\n").await;

    let counted = server
        .ok(&[
            "run",
            "--app",
            "one-off",
            "--",
            "sh",
            "-c",
            "echo $DATABASE_URL | wc -c",
        ])
        .await;
    let count: usize = counted
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a count: {:?} / {}", counted.stdout, counted.stderr));
    assert!(count > 20, "DATABASE_URL is {count} bytes");

    // The exit code comes back; stderr is the command's.
    let failed = server
        .berth(&[
            "run",
            "--app",
            "one-off",
            "--",
            "sh",
            "-c",
            "echo to-stderr >&2; exit 7",
        ])
        .run()
        .await;
    assert_eq!(failed.code, 7, "{}", failed.stderr);
    assert!(failed.stderr.contains("to-stderr"), "{}", failed.stderr);

    // Detached: the id at once, the output in the execution's logs.
    let detached = server
        .ok(&[
            "run",
            "--app",
            "one-off",
            "--detach",
            "--",
            "echo",
            "from the background",
        ])
        .await;
    let id = detached
        .stdout
        .split_whitespace()
        .nth(1)
        .expect("execution ID started")
        .to_string();
    let mut logs = String::new();
    for _ in 0..100 {
        logs = server
            .ok(&["jobs", "logs", &id, "--app", "one-off"])
            .await
            .stdout;
        if logs.contains("from the background") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logs.contains("from the background"), "{logs}");
    let history = server
        .ok(&["jobs", "history", "berth-run", "--app", "one-off"])
        .await;
    assert!(history.stdout.contains(&id), "{}", history.stdout);

    // A one-off that runs shows in `berth status` until it is cancelled.
    let long = server
        .ok(&["run", "--app", "one-off", "--detach", "--", "sleep", "60"])
        .await;
    let long_id = long.stdout.split_whitespace().nth(1).unwrap().to_string();
    let status = server.ok(&["status", "--app", "one-off"]).await.stdout;
    assert!(
        status.contains(&format!("one-off:  execution {long_id} (berth run)")),
        "{status}"
    );
    server
        .ok(&["jobs", "cancel", &long_id, "--app", "one-off"])
        .await;
    let status = server.ok(&["status", "--app", "one-off"]).await.stdout;
    assert!(!status.contains("one-off:"), "{status}");

    // Bad input: an unknown app, and nothing to run.
    let unknown = server.fails(&["run", "--app", "nope", "--", "true"]).await;
    assert!(unknown.stderr.contains("nope"), "{}", unknown.stderr);
    let bad_timeout = server
        .fails(&["run", "--app", "one-off", "--timeout", "soon", "--", "true"])
        .await;
    assert!(
        bad_timeout.stderr.contains("--timeout soon"),
        "{}",
        bad_timeout.stderr
    );
    let empty = server.fails(&["run", "--app", "one-off", "--", " "]).await;
    assert!(
        empty.stderr.contains("the command is empty"),
        "{}",
        empty.stderr
    );
}
