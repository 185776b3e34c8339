//! End to end: berth keeps room on its data dir's disk for its store and
//! logs. Short of it, writes are refused with the figures; reads go on.

use berth_testkit::{TestServer, example};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_short_of_the_reserve_refuses_writes_and_says_why() {
    setup();
    // A reserve no disk here has (a petabyte): the disk is "full".
    let server = TestServer::start_with(&["--disk-reserve-mib", "1000000000"]).await;
    let dir = example("plain");
    std::fs::write(dir.path().join("berth.toml"), "app = \"tight\"\n").unwrap();
    let refused = server.fails_in(dir.path(), &["up"]).await;
    assert!(
        refused
            .stderr
            .contains("MiB free, less than the 1000000000 MiB berth keeps")
            && refused.stderr.contains("--disk-reserve-mib"),
        "{}",
        refused.stderr
    );
    // Nothing was written; reading still works.
    let listed = server.ok(&["apps", "list", "--json"]).await.json();
    assert_eq!(listed, serde_json::json!([]));
    let (status, _) = server.api_get("/v1/apps").await;
    assert_eq!(status, 200);
}
