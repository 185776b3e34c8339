//! End to end: an app that listens somewhere other than `$PORT` is told
//! where it listens and which setting fits, instead of a bare "connection
//! refused".

use berth_testkit::{TestServer, example};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_on_a_port_of_its_own_is_told_which_setting_fits() {
    setup();
    let server = TestServer::start().await;
    let dir = example("plain");
    // Hard-coded, as apps that read another variable than PORT are.
    let port = 20_000 + std::process::id() % 20_000;
    std::fs::write(
        dir.path().join("berth.toml"),
        format!(
            "app = \"fixed-port\"\n\n[processes]\nweb = \"env PORT={port} plain\"\n\n[deploy]\nwait_timeout = \"3s\"\n"
        ),
    )
    .unwrap();
    let failed = server.fails_in(dir.path(), &["up"]).await;
    assert!(
        failed
            .stderr
            .contains(&format!("it listens on {port}, not on PORT ("))
            && failed
                .stderr
                .contains(&format!("set internal_port = {port} under [http_service]")),
        "{}",
        failed.stderr
    );
    // The event log says the same.
    let events = server.ok(&["events", "--app", "fixed-port"]).await;
    assert!(
        events.stdout.contains(&format!("it listens on {port}")),
        "{}",
        events.stdout
    );

    // Following the advice makes it serve.
    std::fs::write(
        dir.path().join("berth.toml"),
        format!(
            "app = \"fixed-port\"\n\n[processes]\nweb = \"env PORT={port} plain\"\n\n[http_service]\ninternal_port = {port}\n"
        ),
    )
    .unwrap();
    server.ok_in(dir.path(), &["up"]).await;
    assert_eq!(server.get("fixed-port", "/").await.status, 200);
}
