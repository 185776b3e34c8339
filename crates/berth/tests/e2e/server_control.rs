//! End to end: the server as a service. `berth server status` describes a
//! running server and reports a stopped one as stopped; `berth server stop`
//! returns only once the server and its instances have exited; `berth
//! server logs` prints its log; `berth server install` writes a unit that
//! systemd accepts, and says so plainly where systemd does not run.

use berth_testkit::TestServer;

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

/// Whether `pid` is a process that has not exited (a zombie has).
fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_stop_and_logs_of_a_running_server() {
    setup();
    let server = TestServer::start().await;
    let _app = crate::support::deploy_plain(&server, "kept", "").await;

    let shown = server.ok(&["server", "status"]).await.stdout;
    assert!(
        shown.contains(&format!("berth server: running (pid {}", server.pid())),
        "{shown}"
    );
    for line in [
        format!("api:      {}", server.api_url),
        format!("router:   http://{}", server.router),
        "apps:     1 (1 instances running)".to_string(),
    ] {
        assert!(shown.contains(&line), "{line}: {shown}");
    }
    let status = server.ok(&["server", "status", "--json"]).await.json();
    assert_eq!(status["running"], true);
    assert_eq!(status["pid"], server.pid());
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));

    let logs = server.ok(&["server", "logs", "-n", "200"]).await.stdout;
    assert!(logs.contains("berth server ready"), "{logs}");

    let info_text = std::fs::read_to_string(server.data_dir().join("server.json")).unwrap();
    let app = server.status("kept").await;
    let instance = app["instances"][0]["pid"].as_u64().expect("instance pid");
    assert!(alive(instance));
    let stopped = server.ok(&["server", "stop"]).await;
    assert!(stopped.stderr.contains("==> stopped"), "{}", stopped.stderr);
    // It returned only once everything had exited.
    assert!(!alive(u64::from(server.pid())), "the server still runs");
    assert!(!alive(instance), "its instance still runs");
    assert!(
        server.server_log().contains("stopping"),
        "{}",
        server.server_log()
    );

    // A stopped server is reported as stopped, not as an error.
    let shown = server.ok(&["server", "status"]).await.stdout;
    assert!(shown.contains("berth server: stopped"), "{shown}");
    let status = server.ok(&["server", "status", "--json"]).await.json();
    assert_eq!(status["running"], false);
    let again = server.ok(&["server", "stop"]).await;
    assert!(again.stderr.contains("nothing to stop"), "{}", again.stderr);

    // A stale server.json whose pid now belongs to another process: that
    // process is neither reported as the server nor signalled.
    let mut other = tokio::process::Command::new("sleep")
        .arg("60")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let other_pid = other.id().unwrap();
    let info_path = server.data_dir().join("server.json");
    let mut info: serde_json::Value = serde_json::from_str(&info_text).unwrap();
    info["pid"] = other_pid.into();
    std::fs::write(&info_path, info.to_string()).unwrap();
    let shown = server.ok(&["server", "status"]).await.stdout;
    assert!(shown.contains("berth server: stopped"), "{shown}");
    let again = server.ok(&["server", "stop"]).await;
    assert!(again.stderr.contains("nothing to stop"), "{}", again.stderr);
    assert!(alive(u64::from(other_pid)), "another process was signalled");
    other.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_writes_a_unit_systemd_accepts_or_says_why_not() {
    setup();
    let server = TestServer::start().await;
    let unit = server
        .ok(&[
            "server",
            "install",
            "--print",
            "--public",
            "--domain",
            "example.com",
        ])
        .await
        .stdout;
    let data = server.data_dir().display().to_string();
    assert!(
        unit.contains(&format!(
            "server --data {data} --public --domain example.com\n"
        )),
        "{unit}"
    );
    assert!(unit.contains("Restart=always"), "{unit}");
    assert!(
        unit.contains(&format!("StandardOutput=append:{data}/server.log")),
        "{unit}"
    );
    // A tunnel token goes to a file of the data dir's, not into the unit
    // (readable by every user).
    let token = format!("{}.{}", "1f".repeat(32), "2e".repeat(32));
    let tunnelled = server
        .ok(&[
            "server",
            "install",
            "--print",
            "--tunnel",
            "relay.example.com:7835",
            "--tunnel-token",
            &token,
        ])
        .await
        .stdout;
    assert!(
        tunnelled.contains(&format!(
            "--tunnel relay.example.com:7835 --tunnel-token-file {data}/tunnel-token\n"
        )) && !tunnelled.contains(&token),
        "{tunnelled}"
    );
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.service");
        std::fs::write(&path, &unit).unwrap();
        crate::support::verify_unit(&path);
    }
    // Flags `berth server` does not take are refused before anything, as
    // is a command.
    for (flags, expected) in [
        (vec!["--publik"], "not flags `berth server` takes"),
        (vec!["status"], "not a command"),
    ] {
        let mut args = vec!["server", "install"];
        args.extend(flags);
        let refused = server.fails(&args).await;
        assert!(
            refused.stderr.contains(expected),
            "{args:?}: {}",
            refused.stderr
        );
    }
    // `--data` anywhere is the data dir, named once in the unit.
    let elsewhere = server
        .ok(&["server", "install", "--print", "--data", "/tmp/elsewhere"])
        .await
        .stdout;
    assert_eq!(elsewhere.matches("--data").count(), 1, "{elsewhere}");
    assert!(
        elsewhere.contains("server --data /tmp/elsewhere\n"),
        "{elsewhere}"
    );
    // Where systemd does not run, nothing is installed and it says so.
    if !std::path::Path::new("/run/systemd/system").exists() {
        let failed = server.fails(&["server", "install", "--public"]).await;
        assert!(
            failed
                .stderr
                .contains("systemd is not running on this machine"),
            "{}",
            failed.stderr
        );
        assert!(failed.stdout.contains("[Service]"), "{}", failed.stdout);
        assert!(!std::path::Path::new("/etc/systemd/system/berth.service").exists());
    }
}
