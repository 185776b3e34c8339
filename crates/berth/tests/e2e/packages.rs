//! End to end, as root: `[build] packages` installs Debian packages into
//! the build's own root — the build and the instances see them, the host
//! stays as it was.

use berth_testkit::{TestServer, example};

fn setup() {
    berth_testkit::use_binary(env!("CARGO_BIN_EXE_berth"));
}

fn on_host(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|output| output.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_build_that_needs_protoc_gets_it_in_its_own_root_not_on_the_host() {
    setup();
    assert!(berth_runtime::can_isolate(), "package roots need root");
    assert!(
        !on_host("protoc"),
        "this test needs a host without protoc (Debian's protobuf-compiler), to see berth bring it"
    );
    let server = TestServer::start().await;
    let dir = example("protoc");
    let out = server.ok_in(dir.path(), &["up"]).await;
    assert!(
        out.stderr.contains("installing") && out.stderr.contains("protobuf-compiler"),
        "{}",
        out.stderr
    );
    let served = server.get("protoc-app", "/").await;
    assert_eq!(served.status, 200, "{}", served.body);
    assert!(
        served.body.starts_with("built with libprotoc "),
        "{}",
        served.body
    );
    // Its instances see the same root.
    let now = server.get("protoc-app", "/protoc").await;
    assert_eq!(now.status, 200, "{}", now.body);
    assert!(now.body.starts_with("libprotoc "), "{}", now.body);
    assert!(!on_host("protoc"), "the host got protoc");

    // A second deploy reuses the root.
    let again = server.ok_in(dir.path(), &["up"]).await;
    assert!(!again.stderr.contains("installing"), "{}", again.stderr);

    // A package apt does not know fails the deploy with apt's reason, and
    // the release that serves goes on serving.
    std::fs::write(
        dir.path().join("berth.toml"),
        "app = \"protoc-app\"\n[build]\npackages = [\"protobuf-compiler\", \"no-such-package-berth\"]\n",
    )
    .unwrap();
    let failed = server.fails_in(dir.path(), &["up"]).await;
    assert!(
        failed.stderr.contains("no-such-package-berth")
            && failed.stderr.contains("Unable to locate package"),
        "{}",
        failed.stderr
    );
    assert_eq!(server.get("protoc-app", "/").await.status, 200);
}
