//! End to end: fly.toml keys with the meaning Fly gives them — the stop
//! signal the app asks for, and every health check (each on its own port)
//! gating a deploy.

use std::time::Duration;

use berth_testkit::{TestServer, example};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// Runs examples/plain under a shell that says which signal stopped it.
const REPORTS_ITS_STOP_SIGNAL: &str = "trap 'echo stopped by INT; kill $p; exit 0' INT; trap 'echo stopped by TERM; kill $p; exit 0' TERM; plain & p=$!; wait";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_signal_is_the_signal_that_stops_the_app() {
    setup();
    let server = TestServer::start().await;
    let dir = example("plain");
    std::fs::write(
        dir.path().join("fly.toml"),
        format!(
            "app = \"stop-signal\"\nkill_signal = \"SIGINT\"\nkill_timeout = 5\n\n[processes]\napp = \"{}\"\n",
            REPORTS_ITS_STOP_SIGNAL.replace('"', "\\\"")
        ),
    )
    .unwrap();
    server.ok_in(dir.path(), &["up"]).await;
    assert_eq!(server.get("stop-signal", "/").await.status, 200);
    server.ok(&["scale", "app=0", "--app", "stop-signal"]).await;
    let mut logs = String::new();
    for _ in 0..100 {
        logs = server
            .ok(&["logs", "--app", "stop-signal", "--grep", "stopped by"])
            .await
            .stdout;
        if logs.lines().any(|line| line.contains("] stopped by")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The app's own lines (the "starting" line quotes its command).
    let said = |line: &str| {
        logs.lines()
            .any(|seen| seen.ends_with(&format!("] {line}")))
    };
    assert!(said("stopped by INT"), "{logs}");
    assert!(!said("stopped by TERM"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn every_health_check_on_its_own_port_gates_a_deploy() {
    setup();
    let server = TestServer::start().await;
    let dir = example("plain");
    // A second listener on port 9090 inside the instance's own network
    // namespace, checked by a top-level [checks] entry beside the HTTP one.
    let spec = |second_listener: bool| {
        let command = if second_listener {
            "plain & PORT=9090 plain & wait"
        } else {
            "plain"
        };
        format!(
            "app = \"two-checks\"\n\n[processes]\napp = \"{command}\"\n\n[deploy]\nwait_timeout = \"4s\"\n\n[http_service]\ninternal_port = 8080\n\n[[http_service.checks]]\npath = \"/whoami\"\nmethod = \"HEAD\"\n\n[checks.second]\ntype = \"http\"\nport = 9090\npath = \"/whoami\"\n"
        )
    };
    std::fs::write(dir.path().join("fly.toml"), spec(true)).unwrap();
    server.ok_in(dir.path(), &["up"]).await;
    assert_eq!(server.get("two-checks", "/").await.status, 200);

    // Without the second listener the second check never passes: the
    // deploy fails, naming the port, and the first release keeps serving.
    std::fs::write(dir.path().join("fly.toml"), spec(false)).unwrap();
    let failed = server.fails_in(dir.path(), &["deploy"]).await;
    assert!(
        failed
            .stderr
            .contains("did not pass its health check in time")
            && failed.stderr.contains("9090"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("v1 keeps serving"),
        "{}",
        failed.stderr
    );
    assert_eq!(server.get("two-checks", "/").await.status, 200);
}
